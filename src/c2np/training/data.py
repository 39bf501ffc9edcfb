"""From a store to model batches.

Task 1: one sample per (material, R) of a split: the unit cell and R as the condition,
the canonical particle as the target.

Task 2: one record per (material, R); its configurations differ only by rotation. A
training epoch visits every (material, R) of the split once, each time under one of its
grid rotations drawn with the epoch's seeded generator, so an epoch is 1,215 particles
for the bundled train split, not 72,900 (60 rotations of each). Prediction covers every
configuration: either literally (``all_rotations``) or once per (material, R) and
copied to its rotations, which is exact for the rotation-invariant models here
(tests/test_models.py checks the invariance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from c2np.models.batches import Task1Batch, Task2Batch
from c2np.rotations import rotation_matrices
from c2np.store.dataset import Dataset
from c2np.tasks.targets import LATTICE_COLUMNS, lattice_targets, task1_samples


@dataclass
class ParticleRecord:
    """One (material, R) with everything both tasks need, held in memory."""

    material: str
    radius: int
    numbers: np.ndarray
    positions: np.ndarray
    config_ids: np.ndarray  # every configuration of this (material, R) in the split
    quaternions: np.ndarray  # (k, 4) xyzw, aligned with config_ids
    cell_numbers: np.ndarray
    cell_scaled: np.ndarray  # (m, 3) fractional positions of the basis atoms
    cell_matrix: np.ndarray  # (3, 3) lattice vectors as rows, the frame of the canonical particle
    origin: np.ndarray  # (3,) carving centre x0 in fractional coordinates, mod 1
    lattice: np.ndarray  # conventional lattice target (6,)
    spacegroup: int


def load_records(ds: Dataset, split: str, materials: list[str] | None = None,
                 radii: list[int] | None = None, limit: int | None = None) -> list[ParticleRecord]:
    """The (material, R) records of ``split``, optionally restricted (tiny runs, tests)."""
    view = ds.filter(materials=materials, radii=radii, splits=[split])
    if len(view) == 0:
        raise ValueError(f"no configurations in split {split!r} for the given materials/radii")
    targets = lattice_targets(ds).set_index("material")
    cells = {}
    out = []
    for (m, r), grp in view.index.groupby(["material", "radius"], sort=True):
        if m not in cells:
            cells[m] = ds.unit_cell(m)
        cell = cells[m]
        atoms = ds.canonical(m, int(r))
        x0 = np.asarray(atoms.info.get("x0") or np.zeros(3), float)
        origin = np.linalg.solve(cell.cell.array.T, x0) % 1.0
        out.append(ParticleRecord(
            m, int(r), atoms.numbers.copy(), atoms.positions.copy(),
            grp["config_id"].to_numpy(), grp[["qx", "qy", "qz", "qw"]].to_numpy(),
            cell.numbers.copy(), cell.get_scaled_positions(wrap=True), cell.cell.array.copy(),
            np.where(np.isclose(origin, 1.0), 0.0, origin),
            targets.loc[m, LATTICE_COLUMNS].to_numpy(float), int(targets.loc[m, "spacegroup"])))
        if limit is not None and len(out) >= limit:
            break
    return out


class RecordDataset(TorchDataset):
    """Items are (record, rotation index); Task 2 training draws the rotation per epoch."""

    def __init__(self, records: list[ParticleRecord], rotate: bool = False, seed: int = 0):
        self.records, self.rotate, self.seed, self.epoch = records, rotate, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[ParticleRecord, int]:
        rec = self.records[i]
        if not self.rotate:
            return rec, -1
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return rec, int(rng.integers(len(rec.quaternions)))


def _rotated(rec: ParticleRecord, k: int) -> np.ndarray:
    return rec.positions if k < 0 else rec.positions @ rotation_matrices(rec.quaternions[k]).T


def _particles(items) -> dict:
    sizes = [len(rec.numbers) for rec, _ in items]
    return {"z": torch.as_tensor(np.concatenate([rec.numbers for rec, _ in items]), dtype=torch.long),
            "pos": torch.as_tensor(np.concatenate([_rotated(rec, k) for rec, k in items]),
                                   dtype=torch.float32),
            "batch": torch.repeat_interleave(torch.arange(len(items)), torch.tensor(sizes)),
            "ptr": torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.long)}


def collate_task1(items) -> Task1Batch:
    """Batch Task 1 items (condition + target particle)."""
    recs = [rec for rec, _ in items]
    width = max(len(np.unique(r.cell_numbers)) for r in recs)
    species = np.zeros((len(recs), width), np.int64)
    cell_frac = np.zeros((len(recs), width))
    target_frac = np.zeros((len(recs), width))
    for g, r in enumerate(recs):
        sp, cnt = np.unique(r.cell_numbers, return_counts=True)
        species[g, :len(sp)] = sp
        cell_frac[g, :len(sp)] = cnt / cnt.sum()
        target_frac[g, :len(sp)] = [(r.numbers == s).mean() for s in sp]
    cell_sizes = [len(r.cell_numbers) for r in recs]
    return Task1Batch(**_particles(items),
                      cell_z=torch.as_tensor(np.concatenate([r.cell_numbers for r in recs]), dtype=torch.long),
                      cell_pos=torch.tensor(np.concatenate([r.cell_scaled for r in recs]), dtype=torch.float32),
                      cell_batch=torch.repeat_interleave(torch.arange(len(recs)), torch.tensor(cell_sizes)),
                      lattice=torch.tensor(np.stack([r.cell_matrix for r in recs]), dtype=torch.float32),
                      origin=torch.tensor(np.stack([r.origin for r in recs]), dtype=torch.float32),
                      radius=torch.tensor([float(r.radius) for r in recs]),
                      species=torch.as_tensor(species), cell_frac=torch.tensor(cell_frac, dtype=torch.float32),
                      target_frac=torch.tensor(target_frac, dtype=torch.float32),
                      log_n=torch.tensor([np.log(len(r.numbers)) for r in recs], dtype=torch.float32))


def collate_task2(items) -> Task2Batch:
    """Batch Task 2 items (rotated particle + lattice and space-group targets)."""
    recs = [rec for rec, _ in items]
    return Task2Batch(**_particles(items),
                      lattice=torch.tensor(np.stack([r.lattice for r in recs]), dtype=torch.float32),
                      spacegroup=torch.tensor([r.spacegroup for r in recs], dtype=torch.long))


COLLATE = {1: collate_task1, 2: collate_task2}


def task1_ids(ds: Dataset, split: str, records: list[ParticleRecord]) -> list[int]:
    """Task 1 sample ids (config_id of rotation 0) of the records, in record order."""
    ids = task1_samples(ds, split).set_index(["material", "radius"])["config_id"]
    return [int(ids.loc[(r.material, r.radius)]) for r in records]
