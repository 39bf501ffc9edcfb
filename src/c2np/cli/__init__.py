"""The ``c2np`` command line.

Commands live in one module per concern (data, evaluation, analysis, training); each
registers itself on the shared Typer ``app`` of :mod:`c2np.cli.common` when imported.
"""

from __future__ import annotations

import sys

# Import order is the order of `c2np --help`: the data path first.
from c2np.cli import data, evaluation, analysis, training  # noqa: F401, I001  (registers commands)
from c2np.cli.common import app, fail_line, parse_radii

__all__ = ["app", "main", "parse_radii"]


def main() -> None:
    """Entry point of the ``c2np`` script.

    Usage errors (a bad option value, a missing argument) are printed as one line with
    exit code 2, like every other input error, instead of click's multi-line box.
    """
    # typer 0.29 vendors click; its exceptions are only importable from there.
    from typer import Abort
    from typer._click.exceptions import ClickException

    try:
        code = app(standalone_mode=False, prog_name="c2np")  # also under `python -m c2np`
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        fail_line(exc.format_message() + where)
        sys.exit(exc.exit_code)
    except Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    sys.exit(main())
