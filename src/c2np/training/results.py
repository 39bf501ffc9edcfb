"""What a training run adds to its result JSON (``c2np evaluate --run-info``)."""

from __future__ import annotations

import json
from pathlib import Path

from c2np.errors import C2NPError


def run_extra(path: Path) -> dict:
    """The keys of run.json that a result carries: time per epoch at top level (the
    report's time column) and the rest under ``model_run``."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise C2NPError(f"{path}: cannot read run info ({exc})") from None
    if "time_per_epoch" not in info or "model" not in info:
        raise C2NPError(f"{path}: not a run.json written by `c2np train`")
    keep = ("model", "task", "seed", "epochs", "epoch_seconds", "device", "parameters",
            "train_records", "train_atoms", "max_time_s", "final_train_loss", "config")
    return {"time_per_epoch": info["time_per_epoch"], "model_run": {k: info.get(k) for k in keep}}
