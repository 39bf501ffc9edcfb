"""What a training run adds to its result JSON (``c2np evaluate --run-info``)."""

from __future__ import annotations

import json
from pathlib import Path

from c2np.config import recorded_objective
from c2np.errors import C2NPError


def run_extra(path: Path, split: str | None = None) -> dict:
    """The keys of run.json that a result carries: time per epoch at top level (the
    report's time column), the model's own loss on ``split`` at top level (the Loss
    column, from ``test_loss-{split}.json`` that `c2np predict` wrote beside the run)
    when present, and the rest under ``model_run``, with how the predictions of ``split``
    were made (``prediction-{split}.json`` of `c2np predict`: seed, batch size, precision
    of the attention, compilation, ...) as ``model_run.prediction`` when present."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise C2NPError(f"{path}: cannot read run info ({exc})") from None
    if "time_per_epoch" not in info or "model" not in info:
        raise C2NPError(f"{path}: not a run.json written by `c2np train`")
    keep = ("model", "task", "seed", "epochs", "epoch_seconds", "device", "devices", "precision", "parameters",
            "train_records", "train_atoms", "validation", "max_time_s", "final_train_loss", "final_val_loss",
            "best_val_loss", "best_epoch", "converged", "converged_epoch", "stop_reason", "convergence_rule",
            "objective_changes", "config")
    out = {"time_per_epoch": info["time_per_epoch"], "model_run": {k: info.get(k) for k in keep}}
    out["model_run"]["objective_version"] = recorded_objective(info)
    if split is not None:
        test = _beside(path, f"test_loss-{split}.json")
        if test is not None:
            out["loss"] = test["loss"]
            out["model_run"]["test_loss"] = test
        settings = _beside(path, f"prediction-{split}.json")
        if settings is not None:
            out["model_run"]["prediction"] = settings
    return out


def _beside(run_json: Path, name: str) -> dict | None:
    """The JSON file ``name`` that `c2np predict` left beside ``run_json``, else None."""
    path = Path(run_json).parent / name
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise C2NPError(f"{path}: cannot read ({exc})") from None
