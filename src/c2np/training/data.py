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

import functools
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from c2np.models.batches import Task1Batch, Task2Batch
from c2np.models.components import UnitCellEncoder
from c2np.models.host_work import HostPlan, prepare
from c2np.models.padding import PaddedCollate, PadSpec
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
    """Training items: (record, rotation index); Task 2 draws the rotation per epoch.

    Index ``epoch * len(self) + i`` is record i in that epoch (``BucketBatchSampler``
    yields such indices), so the draw depends on (seed, epoch, i) only and DataLoader
    workers need no state from the main process. ``rotations[i]``, when given, lists the
    rotation indices record i may be drawn under (the others are held out for validation).
    """

    def __init__(self, records: list[ParticleRecord], rotate: bool = False, seed: int = 0,
                 rotations: list[np.ndarray] | None = None):
        self.records, self.rotate, self.seed, self.rotations = records, rotate, seed, rotations

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[ParticleRecord, int, int]:
        """(record, rotation index or -1, ``index``); the index keys the host noise draws."""
        epoch, i = divmod(int(index), len(self.records))
        rec = self.records[i]
        if not self.rotate:
            return rec, -1, int(index)
        allowed = (np.arange(len(rec.quaternions)) if self.rotations is None else self.rotations[i])
        rng = np.random.default_rng([self.seed, epoch, i])
        return rec, int(allowed[rng.integers(len(allowed))]), int(index)


@dataclass
class ValidationSplit:
    """Training records (with the rotations they may use) and fixed validation items."""

    train: list[ParticleRecord]
    rotations: list[np.ndarray] | None
    val: list[tuple[ParticleRecord, int]]

    def describe(self) -> dict:
        """What run.json records about the split."""
        held = 0 if self.rotations is None else int(sum(
            len(r.quaternions) - len(a) for r, a in zip(self.train, self.rotations)))
        return {"train_records": len(self.train), "val_items": len(self.val),
                "val_radii": sorted({r.radius for r, k in self.val if k < 0}),
                "val_rotations_held_out": held}


def split_validation(records: list[ParticleRecord], val_radii: list[int], val_fraction: float,
                     seed: int) -> ValidationSplit:
    """Hold out validation data that never touches the ID/OOD radii (it comes from the train split).

    ``val_radii``: whole training radii held out (their particles, unrotated; Task 1's
    interpolation check). ``val_fraction``: a seeded fraction of every remaining
    (material, R)'s rotations held out (Task 2); validation scores the first held-out
    rotation of each, so one epoch of validation costs as much as one pass over the
    training records. Deterministic in ``seed``.
    """
    held = set(int(r) for r in val_radii)
    present = {r.radius for r in records}
    if held - present:
        raise ValueError(f"validation radii {sorted(held - present)} are not training radii "
                         f"(training radii here: {sorted(present)}); set train.val_radii")
    train = [r for r in records if r.radius not in held]
    val: list[tuple[ParticleRecord, int]] = [(r, -1) for r in records if r.radius in held]
    if not train:
        raise ValueError("train.val_radii holds out every training radius")
    rotations = None
    if val_fraction > 0:
        rotations = []
        for i, rec in enumerate(train):
            n = len(rec.quaternions)
            k = min(n - 1, max(1, int(round(val_fraction * n))))
            perm = np.random.default_rng([seed, 7919, i]).permutation(n)
            rotations.append(np.sort(perm[k:]))
            val.append((rec, int(perm[0])))
    if not val:
        raise ValueError("no validation data: set train.val_radii or train.val_fraction")
    return ValidationSplit(train, rotations, val)


class BucketBatchSampler:
    """Batches of ``batch_size`` samples with similar atom counts.

    Each epoch (seeded by (seed, epoch)) shuffles the samples, sorts them by atom count
    inside pools of ``pool`` batches, cuts the pools into batches and shuffles the batch
    order: a batch still holds ``batch_size`` samples drawn at random from a pool, but no
    longer pads an 18k-atom particle's step with 45-atom ones. Under DDP each global batch
    is dealt out to the ``world`` ranks (every rank gets ``batch_size / world`` samples of
    it, interleaved by size), so the effective batch is the same on any number of GPUs.
    Indices are ``epoch * n + i`` (see ``RecordDataset``) when ``epoch_in_index``.
    """

    def __init__(self, sizes: list[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world: int = 1, pool: int = 32, epoch_in_index: bool = True):
        if batch_size < world:
            raise ValueError(f"batch size {batch_size} is smaller than the {world} devices")
        self.sizes, self.batch_size, self.shuffle, self.seed = np.asarray(sizes), batch_size, shuffle, seed
        self.rank, self.world, self.pool, self.epoch_in_index = rank, world, pool, epoch_in_index
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> BucketBatchSampler:
        """Itself: Lightning calls ``set_epoch`` on a loader's ``batch_sampler.sampler``, never
        on the batch sampler, so without this every epoch of a run would be epoch 0."""
        return self

    def global_batches(self) -> list[np.ndarray]:
        """Every batch of the epoch, each sorted by atom count (the same on every rank)."""
        n = len(self.sizes)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        span = self.batch_size * self.pool
        batches = []
        for p in range(0, n, span):
            chunk = order[p:p + span]
            chunk = chunk[np.argsort(self.sizes[chunk], kind="stable")]
            batches += [chunk[b:b + self.batch_size] for b in range(0, len(chunk), self.batch_size)]
        batches = [b for b in batches if len(b) >= self.world]  # every rank needs a share
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        return batches

    def __iter__(self):
        offset = self.epoch * len(self.sizes) if self.epoch_in_index else 0
        for b in self.global_batches():
            yield (b[self.rank::self.world] + offset).tolist()

    def __len__(self) -> int:
        return len(self.global_batches())


def _rotated(rec: ParticleRecord, k: int) -> np.ndarray:
    return rec.positions if k < 0 else rec.positions @ rotation_matrices(rec.quaternions[k]).T


def _particles(items) -> dict:
    sizes = [len(rec.numbers) for rec, *_ in items]
    return {"z": torch.as_tensor(np.concatenate([rec.numbers for rec, *_ in items]), dtype=torch.long),
            "pos": torch.as_tensor(np.concatenate([_rotated(rec, k) for rec, k, *_ in items]),
                                   dtype=torch.float32),
            "batch": torch.repeat_interleave(torch.arange(len(items)), torch.tensor(sizes)),
            "ptr": torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.long)}


def noise_keys(items, seed: int) -> list[list[int]]:
    """Seeds of the host noise draws (``c2np.models.host_work``), one per item: the
    dataset index for training items (it carries the epoch, see ``RecordDataset``), and
    the (material, R, rotation) of fixed items such as validation's, whose draws are then
    the same every epoch."""
    return [[seed, 1, item[2]] if len(item) > 2 else
            [seed, 0, zlib.crc32(item[0].material.encode()), item[0].radius, item[1] + 1]
            for item in items]


def collate_task1(items, plan: HostPlan | None = None, seed: int = 0) -> Task1Batch:
    """Batch Task 1 items (condition + target particle); with ``plan``, also the host work
    of ``c2np.models.host_work`` (noise draws seeded by ``seed`` and the items)."""
    recs = [rec for rec, *_ in items]
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
    cell_batch = torch.repeat_interleave(torch.arange(len(recs)), torch.tensor(cell_sizes))
    lattice = torch.tensor(np.stack([r.cell_matrix for r in recs]), dtype=torch.float32)
    # the cells' atom pairs and inverse lattices always come with the batch (microseconds
    # here): made on a GPU inside the step, they cost it six host waits
    batch = Task1Batch(**_particles(items),
                      cell_z=torch.as_tensor(np.concatenate([r.cell_numbers for r in recs]), dtype=torch.long),
                      cell_pos=torch.tensor(np.concatenate([r.cell_scaled for r in recs]), dtype=torch.float32),
                      cell_batch=cell_batch, lattice=lattice,
                      origin=torch.tensor(np.stack([r.origin for r in recs]), dtype=torch.float32),
                      radius=torch.tensor([float(r.radius) for r in recs]),
                      species=torch.as_tensor(species), cell_frac=torch.tensor(cell_frac, dtype=torch.float32),
                      target_frac=torch.tensor(target_frac, dtype=torch.float32),
                      log_n=torch.tensor([np.log(len(r.numbers)) for r in recs], dtype=torch.float32),
                      cell_pairs=UnitCellEncoder.pairs(cell_batch), lattice_inv=torch.linalg.inv(lattice))
    return batch if plan is None else prepare(batch, plan, noise_keys(items, seed))


def collate_task2(items, plan: HostPlan | None = None, seed: int = 0) -> Task2Batch:
    """Batch Task 2 items (rotated particle + lattice and space-group targets); ``plan``:
    see :func:`collate_task1`."""
    recs = [rec for rec, *_ in items]
    batch = Task2Batch(**_particles(items),
                       lattice=torch.tensor(np.stack([r.lattice for r in recs]), dtype=torch.float32),
                       spacegroup=torch.tensor([r.spacegroup for r in recs], dtype=torch.long))
    return batch if plan is None else prepare(batch, plan, noise_keys(items, seed))


COLLATE = {1: collate_task1, 2: collate_task2}


def make_collate(task: int, plan: HostPlan | None = None, seed: int = 0):
    """The collate function of ``task``, preparing ``plan``'s host work when given (a
    picklable partial, so that DataLoader workers can run it)."""
    if plan is None or plan.empty:
        return COLLATE[task]
    return functools.partial(COLLATE[task], plan=plan, seed=seed)


def task1_ids(ds: Dataset, split: str, records: list[ParticleRecord]) -> list[int]:
    """Task 1 sample ids (config_id of rotation 0) of the records, in record order."""
    ids = task1_samples(ds, split).set_index(["material", "radius"])["config_id"]
    return [int(ids.loc[(r.material, r.radius)]) for r in records]


def record_loader(task: int, dataset, sizes: list[int], batch_size: int, shuffle: bool, seed: int,
                  rank: int = 0, world: int = 1, workers: int = 0, epoch_in_index: bool = False,
                  plan: HostPlan | None = None, pad: PadSpec | None = None) -> DataLoader:
    """A size-bucketed DataLoader over ``dataset`` (records or (record, rotation) items);
    ``plan``: host work prepared in the collate function (``c2np.models.host_work``);
    ``pad``: Task 1 batches padded to static shapes (``c2np.models.padding``)."""
    sampler = BucketBatchSampler(sizes, batch_size, shuffle, seed, rank, world, epoch_in_index=epoch_in_index)
    collate = make_collate(task, plan, seed)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=PaddedCollate(collate, pad) if pad else collate,
                      num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


class RecordsData(pl.LightningDataModule):
    """Training and validation loaders of a ``ValidationSplit``, built once the Trainer
    knows this process's rank (DDP deals every global batch out to the ranks)."""

    def __init__(self, task: int, split: ValidationSplit, batch_size: int, seed: int, workers: int = 0,
                 plan: HostPlan | None = None, pad: PadSpec | None = None, pad_validation: bool = True,
                 prefetch: Callable[[DataLoader], Iterable] | None = None):
        super().__init__()
        self.task, self.split, self.batch_size, self.seed, self.workers = task, split, batch_size, seed, workers
        self.plan, self.pad = plan, pad
        # train.capture: the training batches come prepared by the captured step's thread
        self.prefetch = prefetch
        # train.capture pads training batches only: validation runs the model's own loss
        self.val_pad = pad if pad_validation else None

    def _where(self) -> tuple[int, int]:
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader | Iterable:
        dataset = RecordDataset(self.split.train, rotate=self.task == 2, seed=self.seed,
                                rotations=self.split.rotations)
        loader = record_loader(self.task, dataset, [len(r.numbers) for r in self.split.train], self.batch_size,
                               True, self.seed, *self._where(), self.workers, epoch_in_index=True,
                               plan=self.plan, pad=self.pad)
        return self.prefetch(loader) if self.prefetch else loader

    def val_dataloader(self) -> DataLoader:
        return record_loader(self.task, self.split.val, [len(r.numbers) for r, _ in self.split.val],
                             self.batch_size, False, self.seed, *self._where(), self.workers, plan=self.plan,
                             pad=self.val_pad)
