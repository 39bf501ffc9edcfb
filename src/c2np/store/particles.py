"""Reading and writing one material's canonical particles (Parquet, a row group per R)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ase import Atoms

from c2np.errors import StoreError
from c2np.store.layout import atomic_write

SCHEMA = pa.schema([("radius", pa.int16()), ("Z", pa.uint8()),
                    ("x", pa.float64()), ("y", pa.float64()), ("z", pa.float64())])
#: Fixed writer options: the same particles always give the same bytes. Page CRC-32s
#: let every read detect a flipped bit in the data it decodes, even with ``verify=False``.
_WRITE = dict(compression="zstd", compression_level=3, write_statistics=True,
              use_dictionary=["radius", "Z"], version="2.6", write_page_checksum=True)


def write_particles(path: Path, material: str, particles: dict[int, Atoms]) -> None:
    """Atomically write ``{radius: particle}`` (positions relative to x0), radii ascending."""
    meta = {"material": material, "radii": sorted(particles),
            "x0": {str(r): particles[r].info.get("x0") for r in sorted(particles)}}
    schema = SCHEMA.with_metadata({"c2np": json.dumps(meta, sort_keys=True)})

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema, **_WRITE) as writer:
            for r in sorted(particles):
                p = particles[r]
                pos = np.asarray(p.positions, float)
                cols = [pa.array(np.full(len(p), r, np.int16)), pa.array(p.numbers.astype(np.uint8)),
                        pa.array(pos[:, 0]), pa.array(pos[:, 1]), pa.array(pos[:, 2])]
                writer.write_table(pa.Table.from_arrays(cols, schema=schema))

    atomic_write(path, write)


class ParticleFile:
    """Random access to the canonical particles of one material."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._pf = pq.ParquetFile(self.path, page_checksum_verification=True)
            meta = json.loads(self._pf.schema_arrow.metadata[b"c2np"])
            self.material: str = meta["material"]
            self.radii: list[int] = [int(r) for r in meta["radii"]]
            self._x0 = dict(meta["x0"])
        except Exception as exc:  # any failure here means an unreadable or foreign file
            raise StoreError(f"{self.path}: unreadable particle file ({_reason(exc)}); "
                             "run `c2np verify` and rebuild") from None
        if self.material != self.path.stem:
            raise StoreError(f"{self.path}: holds material {self.material!r}; the file is corrupt")
        if len(self.radii) != self._pf.num_row_groups:
            raise StoreError(f"{self.path}: {self._pf.num_row_groups} row groups for "
                             f"{len(self.radii)} radii; the file is corrupt")

    def read(self, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """``(numbers, positions)`` of the particle at ``radius``."""
        try:
            group = self.radii.index(int(radius))
        except ValueError:
            raise StoreError(f"{self.path}: no particle at R={radius}; stored radii {self.radii}") from None
        try:
            t = self._pf.read_row_group(group)
            numbers = t.column("Z").to_numpy().astype(np.int64)
            pos = np.column_stack([t.column(c).to_numpy() for c in ("x", "y", "z")])
            stored_radius = t.column("radius").to_numpy()
        except Exception as exc:  # checksum, decompression or decoding failure
            raise StoreError(f"{self.path}: corrupt data at R={radius} ({_reason(exc)}); "
                             "run `c2np verify` and rebuild") from None
        if len(stored_radius) == 0 or np.any(stored_radius != int(radius)):
            raise StoreError(f"{self.path}: row group for R={radius} holds other radii; the file is corrupt")
        return numbers, pos

    def particle(self, radius: int) -> Atoms:
        """The canonical (unrotated) particle at ``radius`` as ``ase.Atoms``."""
        numbers, pos = self.read(radius)
        atoms = Atoms(numbers=numbers, positions=pos, pbc=False)
        atoms.info.update(material=self.material, radius=int(radius), x0=self._x0.get(str(radius)))
        return atoms


def _reason(exc: Exception) -> str:
    """The first line of a reader's error, which is all a user can act on."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
