"""c2np: the C2NP crystal-to-nanoparticle benchmark.

Data path: ``materials`` -> ``carve`` -> ``rotations`` -> ``config`` (splits) ->
``store`` (build, read). Start with :func:`open_dataset` or the ``c2np`` command.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("c2np")
except metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"


def open_dataset(path, verify: bool = True):
    """Open a built store; see :func:`c2np.store.dataset.open_dataset`."""
    from c2np.store.dataset import open_dataset as _open

    return _open(path, verify=verify)


__all__ = ["__version__", "open_dataset"]
