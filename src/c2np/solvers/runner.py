"""Run a reference solver end to end: predictions -> Evaluator -> result JSON dict.

Also the plan of ``c2np run``: which (model, task, split) stages it runs, on which subset,
and how long they should take.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2np.evaluation.evaluator import Evaluator
from c2np.solvers.baselines import task1_predictions, task2_predictions
from c2np.store.dataset import Dataset, open_dataset

#: Every (model, task) pair of the reference rows, in the order of the results table.
REFERENCE_ROWS = (("analytic", 1), ("template", 1), ("analytic", 2), ("template", 2), ("mean", 2))

# CPU seconds per sample on the 2-core dev machine (shared, so these are upper bounds),
# measured by scoring 4 materials at every ID and OOD radius: Task 1 scoring of one
# particle (alignment, assignment and descriptors), one analytic Task 2 recovery, and the
# g(r) of the 1,215 training particles that template Task 2 compares against (once).
CPU_S_TASK1_SAMPLE = 0.45
CPU_S_TASK2_ANALYTIC = 0.5
CPU_S_TEMPLATE_DESCRIPTORS = 37.0


def run_baseline(model: str, task: int, split: str, store: str | Path | Dataset,
                 sample: int | None = None, jobs: int = 1, progress: bool = False,
                 materials: list[str] | None = None) -> dict:
    """Score ``model`` on ``task``/``split``; the result records solver time per sample.

    ``sample`` and ``materials`` select a documented subset (see :class:`Evaluator`);
    both are recorded in the result's ``sample`` field.
    """
    ds = store if isinstance(store, Dataset) else open_dataset(store)
    ev = Evaluator(task, split, ds, sample_per_group=sample, materials=materials)
    start = time.perf_counter()
    if task == 1:
        preds, info = task1_predictions(ds, ev.targets(), model), {}
    else:
        preds, info = task2_predictions(ds, ev.targets(), model, jobs=jobs, progress=progress)
    solve = time.perf_counter() - start
    extra = {"solver_seconds": round(solve, 3),
             "solver_seconds_per_sample": solve / max(len(ev.targets()), 1), **info}
    return ev.evaluate(preds, model=model, seed=0, jobs=jobs, progress=progress, extra=extra)


def subset_materials(ds: Dataset, n: int, seed: int = 0) -> list[str]:
    """``n`` materials drawn with ``numpy.random.default_rng(seed)``, sorted by name."""
    names = ds.material_names()
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(names, size=min(n, len(names)), replace=False).tolist())


@dataclass(frozen=True)
class RunPlan:
    """The subset of ``c2np run``: ``materials`` (None: all) and Task 2 configurations per
    (material, R) (None: all), the same for every model so the rows compare like with like."""

    materials: list[str] | None
    per_group: int | None

    def samples(self, ds: Dataset, task: int, split: str) -> int:
        """Number of samples one model scores on ``task``/``split``."""
        return len(Evaluator(task, split, ds, sample_per_group=self.per_group if task == 2 else None,
                             materials=self.materials).targets())

    def cpu_seconds(self, ds: Dataset) -> float:
        """Estimated CPU seconds of every stage (build excluded), from the constants above."""
        total = CPU_S_TEMPLATE_DESCRIPTORS
        for split in ("id", "ood"):
            total += 2 * CPU_S_TASK1_SAMPLE * self.samples(ds, 1, split)
            total += CPU_S_TASK2_ANALYTIC * self.samples(ds, 2, split)
        return total
