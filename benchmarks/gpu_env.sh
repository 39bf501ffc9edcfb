# Source this on a GPU machine that has PyTorch, PyTorch Geometric and Lightning but no
# internet (the lent benchmark machines): it installs the pure-Python dependencies from the
# wheels carried in .whl/ (ase, spglib, typer, rich, pydantic and theirs, for the machine's
# Python) into /tmp/site once, and puts a `c2np` command on PATH that runs this checkout.
#
#   source benchmarks/gpu_env.sh && c2np --help
_c2np_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f /tmp/site/.c2np-wheels ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$_c2np_root"/.whl/*.whl && touch /tmp/site/.c2np-wheels
fi
mkdir -p /tmp/site/bin
printf '#!/bin/sh\nexec python3 -m c2np "$@"\n' \
    > /tmp/site/bin/c2np
chmod +x /tmp/site/bin/c2np
export PYTHONPATH=$_c2np_root/src:/tmp/site PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
