"""The ``c2np`` command line.

Commands live in one module per concern (data, evaluation, analysis, training); each
registers itself on the shared Typer ``app`` of :mod:`c2np.cli.common` when imported.
"""

from __future__ import annotations

import sys

# Import order is the order of `c2np --help`: the data path first.
from c2np.cli import data, evaluation, analysis, training  # noqa: F401, I001  (registers commands)
from c2np.cli.common import app, parse_radii

__all__ = ["app", "main", "parse_radii"]


def main() -> None:
    """Entry point of the ``c2np`` script."""
    app()


if __name__ == "__main__":
    sys.exit(main())
