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

MANIFEST = "manifest.json"
CONFIG = "config.toml"
INDEX = "index.parquet"
ROTATIONS = "rotations.parquet"
MATERIALS = "materials.csv"
CIFS = "cifs"
PARTICLES = "particles"
IN_PROGRESS = ".build-in-progress.json"
#: Names a build may create; ``--force`` removes only these.
OWNED = (MANIFEST, CONFIG, INDEX, ROTATIONS, MATERIALS, CIFS, PARTICLES, IN_PROGRESS)


def particle_file(store: Path, material: str) -> Path:
    """Path of a material's particle table."""
    return store / PARTICLES / f"{material}.parquet"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` to ``path``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
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
    """Relative paths of every file a finished store holds (sorted), manifest excluded."""
    out = []
    for root, _, files in os.walk(store):
        for f in files:
            rel = Path(root, f).relative_to(store).as_posix()
            if rel not in (MANIFEST, IN_PROGRESS) and not f.endswith(".tmp"):
                out.append(rel)
    return sorted(out)
