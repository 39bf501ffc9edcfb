"""Files of a dataset store, and how they are written safely.

::

    STORE/
      manifest.json          config, versions, counts, SHA-256 of every file (written last)
      config.toml            the build configuration, readable by --config
      index.parquet          one row per configuration
      rotations.parquet      one row per (split, radius, rotation id)
      materials.csv          the catalogue rows of the materials built
      cifs/{Material}.cif    their unit cells
      particles/{Material}.parquet   canonical particles, one row group per radius
      .c2np.lock             held by a running build (empty otherwise; never hashed)

Particles are stored once per (material, R), centred at x0, and rotated on access: the
rotations are exact and cheap, and this keeps the store ~100x smaller than one file per
configuration. Parquet is used throughout (columnar, typed, compressed, readable by
pandas, polars, DuckDB and Arrow in any language).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from c2np.store.lock import LOCK

MANIFEST = "manifest.json"
CONFIG = "config.toml"
INDEX = "index.parquet"
ROTATIONS = "rotations.parquet"
MATERIALS = "materials.csv"
CIFS = "cifs"
PARTICLES = "particles"
IN_PROGRESS = ".build-in-progress.json"
#: Names a build may create; ``--force`` removes only these.
OWNED = (MANIFEST, CONFIG, INDEX, ROTATIONS, MATERIALS, CIFS, PARTICLES, IN_PROGRESS, LOCK)
#: Files that are not part of the store's content (never hashed).
_BOOKKEEPING = (MANIFEST, IN_PROGRESS, LOCK)


def particle_file(store: Path, material: str) -> Path:
    """Path of a material's particle table."""
    return store / PARTICLES / f"{material}.parquet"


def is_temporary(name: str) -> bool:
    """True for the name of an :func:`atomic_write` temporary (left behind only by a kill)."""
    return name.startswith(".") and name.endswith(".tmp")


def temporary_target(name: str) -> str | None:
    """The name of the file whose :func:`atomic_write` left the temporary ``name``
    (``.NAME.XXXXXXXX.tmp``; mkstemp's random part has no dot), else None."""
    return name[1:-len(".tmp")].rsplit(".", 1)[0] if is_temporary(name) else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` to ``path``: readers never see half a file.

    The file gets the mode ``open()`` would give (0666 less the umask), not mkstemp's 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write a text file."""
    atomic_write(path, lambda p: p.write_text(text))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def store_files(store: Path) -> list[str]:
    """Relative paths of every file under ``store`` (sorted), bookkeeping files excluded.

    Leftover temporaries are listed: a finished store holds none, so ``verify`` reports them.
    """
    out = []
    for root, _, files in os.walk(store):
        for f in files:
            rel = Path(root, f).relative_to(store).as_posix()
            if rel not in _BOOKKEEPING:
                out.append(rel)
    return sorted(out)


def remove_temporaries(store: Path) -> int:
    """Delete the temporaries a killed writer left in ``store`` (hold the store lock)."""
    found = [Path(root, f) for root, _, files in os.walk(store) for f in files if is_temporary(f)]
    for f in found:
        f.unlink(missing_ok=True)
    return len(found)
