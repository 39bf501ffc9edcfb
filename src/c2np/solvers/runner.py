"""Run a reference solver end to end: predictions -> Evaluator -> result JSON dict."""

from __future__ import annotations

import time
from pathlib import Path

from c2np.evaluation.evaluator import Evaluator
from c2np.solvers.baselines import task1_predictions, task2_predictions
from c2np.store.dataset import Dataset, open_dataset


def run_baseline(model: str, task: int, split: str, store: str | Path | Dataset,
                 sample: int | None = None, jobs: int = 1, progress: bool = False) -> dict:
    """Score ``model`` on ``task``/``split``; the result records solver time per sample."""
    ds = store if isinstance(store, Dataset) else open_dataset(store)
    ev = Evaluator(task, split, ds, sample_per_group=sample)
    start = time.perf_counter()
    if task == 1:
        preds, info = task1_predictions(ds, ev.targets(), model), {}
    else:
        preds, info = task2_predictions(ds, ev.targets(), model, jobs=jobs, progress=progress)
    solve = time.perf_counter() - start
    extra = {"solver_seconds": round(solve, 3),
             "solver_seconds_per_sample": solve / max(len(ev.targets()), 1), **info}
    return ev.evaluate(preds, model=model, seed=0, jobs=jobs, progress=progress, extra=extra)
