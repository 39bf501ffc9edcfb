"""``c2np predict``: a trained run's predictions in the harness's file formats, so learned
models are scored by exactly the code that scores the reference solvers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ase import Atoms

from c2np.evaluation.predictions import write_task1, write_task2
from c2np.progress import progress_bar
from c2np.store.dataset import Dataset, open_dataset
from c2np.tasks.targets import LATTICE_COLUMNS
from c2np.training.data import COLLATE, load_records, record_loader, task1_ids


def test_loss_path(run: Path, split: str) -> Path:
    """Where ``c2np predict`` leaves the test-split objective of a run (one file per split)."""
    return Path(run) / f"test_loss-{split}.json"


def write_test_loss(module, records, split: str, checkpoint: Path, batch_size: int, seed: int) -> dict:
    """The model's own objective on every (material, R) of ``records`` (canonical orientation,
    seeded noise), written next to the checkpoint for ``c2np evaluate --run-info``."""
    from c2np.training.module import mean_objective

    task = module.model.task
    loader = record_loader(task, [(r, -1) for r in records], [len(r.numbers) for r in records],
                           batch_size, False, seed)
    was_training = module.model.training
    module.model.eval()
    terms = mean_objective(module.model, (b.to(module.device) for b in loader), seed)
    module.model.train(was_training)
    out = {"split": split, "loss": terms.pop("loss"), "graphs": int(terms.pop("graphs")), "terms": terms,
           "checkpoint": checkpoint.name, "seed": seed}
    test_loss_path(checkpoint.parent, split).write_text(json.dumps(out, indent=1) + "\n")
    return out


def load_module(checkpoint: Path, device: str | None = None):
    """The Lightning module of a run, on ``device`` (default: CUDA when present)."""
    from c2np.training.module import BaselineModule

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    module = BaselineModule.load_from_checkpoint(str(checkpoint), map_location=device)
    return module.eval().to(device)


def _batches(records, size: int):
    for i in range(0, len(records), size):
        yield records[i:i + size]


def predict(checkpoint: Path, store: str | Path | Dataset, split: str, out: Path, seed: int = 0,
            all_rotations: bool = False, batch_size: int | None = None, limit: int | None = None,
            sample: int | None = None, progress: bool = True) -> Path:
    """Write the predictions of ``checkpoint`` for ``split`` to ``out``.

    Task 1: ``out`` is a long-format Parquet (config_id, Z, x, y, z), one generated
    particle per (material, R). Task 2: CSV or Parquet with one row per configuration.
    The model's own loss on the split's (material, R) records goes to
    ``test_loss-{split}.json`` beside the checkpoint (the report's Loss column).
    ``limit`` keeps the first (material, R) records only (partial files are rejected by
    the evaluator, so this is for smoke tests). ``sample`` (Task 1) keeps the evaluator's
    seeded subset of k materials per radius.
    """
    module = load_module(checkpoint)
    model, device = module.model, module.device
    task = model.task
    size = int(batch_size or module.hparams.train.get("batch_size", 8))
    ds = store if isinstance(store, Dataset) else open_dataset(store)
    records = load_records(ds, split, limit=limit)
    write_test_loss(module, records, split, Path(checkpoint), size, seed)  # whole split, also with --sample
    if sample is not None and task == 1:
        from c2np.evaluation.evaluator import Evaluator

        keep = set(Evaluator(1, split, ds, sample_per_group=sample).targets()[["material", "radius"]]
                   .itertuples(index=False, name=None))
        records = [r for r in records if (r.material, r.radius) in keep]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar(len(records), f"predict task {task} {split}", enabled=progress) as advance:
        if task == 1:
            ids = task1_ids(ds, split, records)
            particles = {}
            for b, chunk in enumerate(_batches(list(zip(records, ids)), size)):
                batch = COLLATE[1]([(r, -1) for r, _ in chunk]).to(device)
                for (rec, cid), (z, pos) in zip(chunk, model.generate(batch, seed=seed * 100003 + b)):
                    particles[cid] = Atoms(numbers=z, positions=pos)
                advance(len(chunk))
            write_task1(out, particles)
        else:
            rows = []
            for b, chunk in enumerate(_batches(records, size)):
                items = ([(r, k) for r in chunk for k in range(len(r.config_ids))] if all_rotations
                         else [(r, -1) for r in chunk])
                for p, part in enumerate(_batches(items, size)):
                    lat, sg = model.predict(COLLATE[2](part).to(device), seed=(seed * 100003 + b) * 1009 + p)
                    lat, sg = lat.cpu().numpy().astype(np.float64), sg.cpu().numpy()
                    for (rec, k), l6, s in zip(part, lat, sg):
                        # rotation-invariant model: the canonical prediction holds for every rotation
                        ids = rec.config_ids if k < 0 else rec.config_ids[k:k + 1]
                        rows += [(int(c), *l6, int(s)) for c in ids]
                advance(len(chunk))
            write_task2(out, pd.DataFrame(rows, columns=["config_id", *LATTICE_COLUMNS, "spacegroup"]))
    return out
