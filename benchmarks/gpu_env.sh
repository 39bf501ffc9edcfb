# Source this on a GPU machine that has PyTorch, PyTorch Geometric and Lightning but no
# internet (the lent benchmark machines): it installs the pure-Python dependencies from the
# wheels carried in .whl/ (ase, spglib, typer, rich, pydantic, threadpoolctl and theirs, for
# the machine's Python) into /tmp/site once, and puts a `c2np` command on PATH that runs this
# checkout. .whl/ is made on a machine with PyPI access, for the GPU machine's Python 3.12:
#   pip download -d .whl --no-deps --only-binary :all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 ase==3.29.0 \
#       spglib==2.8.0 typer==0.29.2 click==8.5.1 shellingham==1.5.4 rich==15.0.0 \
#       markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0 pydantic==2.14.4 \
#       pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 threadpoolctl==3.6.0
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
