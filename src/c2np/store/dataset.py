"""Reading a store: ``c2np.open_dataset(path)``.

>>> ds = c2np.open_dataset("c2np-store")
>>> ds.index.head()                 # one row per configuration (pandas)
>>> atoms = ds[0]                   # ase.Atoms, rotated, info: material, radius, split, ...
>>> ood = ds.split("ood")           # a view over one split
>>> cell = ds.unit_cell("LiBeH3")   # the periodic unit cell
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from ase import Atoms

from c2np.config import SPLITS, UNSEEN_SPLITS, BuildConfig, config_from_dict
from c2np.errors import StoreError, UnknownMaterialError
from c2np.materials.cif import read_cif
from c2np.rotations import rotation_matrices
from c2np.store import layout
from c2np.store.manifest import check_store, listed_fingerprint, read_manifest
from c2np.store.particles import ParticleFile

#: Canonical particles kept in memory per dataset (a few MB at most each).
_CACHE = 64


class _Particles:
    """Shared, bounded cache of canonical particles, one open file per material."""

    def __init__(self, store: Path):
        self.store = store
        self._files: dict[str, ParticleFile] = {}
        self._cache: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def get(self, material: str, radius: int) -> tuple[np.ndarray, np.ndarray]:
        key = (material, int(radius))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if material not in self._files:
            path = layout.particle_file(self.store, material)
            if not path.exists():
                raise StoreError(f"{path}: missing particle file; run `c2np verify {self.store}`")
            self._files[material] = ParticleFile(path)
        value = self._files[material].read(radius)
        self._cache[key] = value
        if len(self._cache) > _CACHE:
            self._cache.popitem(last=False)
        return value

    def __getstate__(self) -> dict:  # DataLoader workers reopen files themselves
        return {"store": self.store, "_files": {}, "_cache": OrderedDict()}


class Dataset:
    """Configurations of a store (or of one split of it), rotated on access."""

    def __init__(self, store: Path, index: pd.DataFrame, manifest: dict, particles: _Particles,
                 fingerprint: str, verified: bool):
        self.store = Path(store)
        self.index = index
        self.manifest = manifest
        self._particles = particles
        #: Content fingerprint of the store's files: hashed from their bytes when
        #: ``verified``, else taken from the manifest's list.
        self.fingerprint = fingerprint
        #: Whether every file was re-hashed against the manifest when the store was opened.
        self.verified = verified

    @property
    def config(self) -> BuildConfig:
        """The build configuration the store was made with."""
        return config_from_dict(_toml_shaped(self.manifest["config"]))

    @property
    def split_scheme(self) -> str:
        """``radius`` (the paper's splits) or ``materials-fold{f}of{k}-seed{s}`` (docs/splits.md)."""
        return self.manifest.get("split_scheme", {}).get("name", "radius")

    @property
    def heldout_materials(self) -> list[str]:
        """Materials whose every configuration is test data (empty for the ``radius`` scheme)."""
        return list(self.manifest.get("split_scheme", {}).get("heldout", []))

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names of this store's scheme: train, id, ood (+ unseen_train, unseen_id, unseen_ood)."""
        return SPLITS + (UNSEEN_SPLITS if self.split_scheme != "radius" else ())

    def check_split(self, name: str) -> None:
        """Raise ``ValueError`` (naming the scheme's splits) unless this store has split ``name``."""
        if name not in self.splits:
            hint = (" (the unseen_* splits exist in stores built with --split-scheme materials)"
                    if name in UNSEEN_SPLITS else "")
            raise ValueError(f"unknown split {name!r} for split scheme {self.split_scheme}; "
                             f"choose from {', '.join(self.splits)}{hint}")

    @property
    def materials(self) -> pd.DataFrame:
        """The catalogue rows (lattice, space group, provenance) of the store's materials."""
        return pd.read_csv(self.store / layout.MATERIALS, keep_default_na=False)

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> Atoms:
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"configuration {i} out of range for {len(self)} configurations")
        return self._atoms(self.index.iloc[int(i)])

    def by_id(self, config_id: int) -> Atoms:
        """The configuration with the given ``config_id`` (stable across views)."""
        rows = self.index.index[self.index["config_id"].to_numpy() == int(config_id)]
        if len(rows) == 0:
            raise KeyError(f"no configuration with config_id {config_id} in this view")
        return self._atoms(self.index.loc[rows[0]])

    def _atoms(self, row: pd.Series) -> Atoms:
        numbers, pos = self._particles.get(row["material"], int(row["radius"]))
        q = np.array([row["qx"], row["qy"], row["qz"], row["qw"]])
        atoms = Atoms(numbers=numbers, positions=pos @ rotation_matrices(q).T, pbc=False)
        atoms.info.update(config_id=int(row["config_id"]), material=row["material"],
                          radius=int(row["radius"]), split=row["split"],
                          rotation_id=int(row["rotation_id"]), quaternion_xyzw=q.tolist(),
                          duplicate=bool(row["duplicate"]))
        return atoms

    def canonical(self, material: str, radius: int) -> Atoms:
        """The unrotated particle of ``material`` at ``radius`` (centred at x0)."""
        self.check_material(material)
        numbers, pos = self._particles.get(material, radius)
        atoms = Atoms(numbers=numbers, positions=pos.copy(), pbc=False)
        atoms.info.update(material=material, radius=int(radius))
        return atoms

    def split(self, name: str) -> Dataset:
        """A view over one split: ``train``, ``id`` or ``ood`` (+ ``unseen_*`` in the materials scheme)."""
        self.check_split(name)
        return self.filter(splits=[name])

    def filter(self, materials: list[str] | None = None, radii: list[int] | None = None,
               splits: list[str] | None = None) -> Dataset:
        """A view restricted to some materials, radii and/or splits."""
        mask = np.ones(len(self.index), bool)
        if materials is not None:
            for m in materials:
                self.check_material(m)
            mask &= self.index["material"].isin(materials).to_numpy()
        if radii is not None:
            mask &= self.index["radius"].isin(radii).to_numpy()
        if splits is not None:
            for s in splits:
                self.check_split(s)
            mask &= self.index["split"].isin(splits).to_numpy()
        return Dataset(self.store, self.index[mask].reset_index(drop=True), self.manifest,
                       self._particles, self.fingerprint, self.verified)

    def unit_cell(self, material: str) -> Atoms:
        """The periodic unit cell of ``material``."""
        self.check_material(material)
        return read_cif(self.store / layout.CIFS / f"{material}.cif")

    def material_names(self) -> list[str]:
        """Names of the materials in the store (all of them, not only this view's)."""
        return [m["name"] for m in self.manifest["materials"]]

    def check_material(self, material: str) -> None:
        """Raise :class:`UnknownMaterialError` (naming some known ones) unless ``material`` is in the store."""
        names = self.material_names()
        if material not in names:
            raise UnknownMaterialError(f"unknown material {material!r}; the store holds "
                                       f"{len(names)} materials, e.g. {', '.join(names[:5])}")

    def __repr__(self) -> str:
        counts = self.index["split"].value_counts().to_dict()
        return (f"Dataset({self.store}, {len(self)} configurations, "
                f"{self.index['material'].nunique()} materials, {counts})")


def _toml_shaped(d: dict) -> dict:
    return {"carve": {k: d[k] for k in ("radii", "supercell", "centre", "buffer", "boundary_tolerance")},
            "splits": {"id": d["id_radii"], "ood": d["ood_radii"],
                       **{k: d[f] for k, f in (("scheme", "split_scheme"), ("folds", "material_folds"),
                                               ("fold", "material_fold"), ("seed", "material_seed")) if f in d}},
            "rotations": d["grids"],
            "duplicates": {"tolerance": d["dedup_tolerance"], "drop": d["drop_duplicates"]}}


def open_dataset(path: str | Path, verify: bool = True) -> Dataset:
    """Open a finished store, first re-hashing every file against the manifest.

    The check (SHA-256 of the whole store, the same one ``c2np verify`` runs) costs tens
    of milliseconds for the benchmark's 14 MB and raises :class:`StoreError` listing what
    is missing, altered or unexpected. ``verify=False`` skips it: use it only when the
    store was verified since it was last written (e.g. in DataLoader workers, or when
    re-opening it in a loop); reads then still check Parquet page checksums, and
    :attr:`Dataset.verified` is False, which result files record.
    """
    store = Path(path)
    if not store.is_dir():
        raise StoreError(f"{store}: no such store directory (build one with `c2np build {store}`)")
    if verify:
        check = check_store(store)
        if check.problems:
            more = f" (and {len(check.problems) - 5} more)" if len(check.problems) > 5 else ""
            raise StoreError(f"{store}: integrity check failed: " + "; ".join(check.problems[:5])
                             + more + f"; rebuild with `c2np build {store} --force`")
        manifest, fingerprint = check.manifest, check.fingerprint
    else:
        manifest = read_manifest(store)
        fingerprint = listed_fingerprint(manifest["files"])
    try:
        index = pq.read_table(store / layout.INDEX, page_checksum_verification=True).to_pandas()
    except Exception as exc:
        raise StoreError(f"{store / layout.INDEX}: unreadable index ({_first_line(exc)}); "
                         f"run `c2np verify {store}`") from None
    return Dataset(store, index, manifest, _Particles(store), fingerprint, verify)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
