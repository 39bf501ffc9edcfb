"""c2np: the C2NP crystal-to-nanoparticle benchmark.

Data path: ``materials`` -> ``carve`` -> ``rotations`` -> ``config`` (splits) ->
``store`` (build, read). Start with :func:`open_dataset` or the ``c2np`` command.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path


def _source_version() -> str:
    """The version in pyproject.toml, marked ``+src``, for a checkout run without being
    installed (the GPU machines put src/ on PYTHONPATH): result JSONs then still say which
    release the code was."""
    import tomllib

    try:
        with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
            return f"{tomllib.load(f)['project']['version']}+src"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"


try:
    __version__ = metadata.version("c2np")
except metadata.PackageNotFoundError:
    __version__ = _source_version()


def open_dataset(path, verify: bool = True):
    """Open a built store; see :func:`c2np.store.dataset.open_dataset`."""
    from c2np.store.dataset import open_dataset as _open

    return _open(path, verify=verify)


__all__ = ["__version__", "open_dataset"]
