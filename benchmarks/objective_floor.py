"""How much of a Task 1 run's validation loss was the composition cross-entropy's floor
(objective version 1), and where the stopping rule would have stopped without it.

    python benchmarks/objective_floor.py [--store c2np-store] RUN_DIR ...

Version 1 of the Task 1 objective scored the species fractions with a cross-entropy, whose
minimum is the target fractions' entropy H (about 0.95 nats for ABH3). Version 2 scores
them with KL(target || predicted) = cross-entropy - H: the same gradients, H less loss.
For every RUN_DIR (a run of version 1: metrics.csv with val_loss and val_composition) this
replays the stopping rule of run.json (rel_tol, patience) on val_loss and on val_loss - H
and prints one row per run: H's share of the best validation loss, the stop and best
epochs under each, and how much the loss without H still fell after version 1's best
epoch. H is the validation set's mean target entropy, computed from STORE (the run's own
val_radii); without --store it is bounded by the smallest val_composition of the curve
(>= H, so the replay then stops a little later than version 2 would).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def replay(values: list[float], patience: int, rel_tol: float) -> tuple[int | None, int]:
    """(stop epoch or None, best epoch) of the rule in c2np.training.module.RunMonitor."""
    best, best_epoch, since = None, 0, 0
    for epoch, v in enumerate(values):
        if best is None or best - v > rel_tol * abs(best):
            best, best_epoch, since = v, epoch, 0
        else:
            since += 1
        if since >= patience:
            return epoch, best_epoch
    return None, best_epoch


def val_entropy(store: Path, info: dict) -> float:
    """Mean entropy (nats) of the target species fractions over the run's validation items."""
    from c2np import open_dataset
    from c2np.training.data import load_records, split_validation

    t = info["config"]["train"]
    records = load_records(open_dataset(store), "train")
    split = split_validation(records, t["val_radii"], float(t["val_fraction"]), int(info["seed"]))
    ent = []
    for rec, _ in split.val:
        _, counts = np.unique(rec.numbers, return_counts=True)
        p = counts / counts.sum()
        ent.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(ent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="Task 1 run folders (run.json, metrics.csv)")
    ap.add_argument("--store", type=Path, help="the store the runs trained on (exact H)")
    a = ap.parse_args()
    rows, cache = [], {}
    for run in a.runs:
        info = json.loads((run / "run.json").read_text())
        curve = pd.read_csv(run / "metrics.csv")
        if int(info["task"]) != 1 or "val_composition" not in curve:
            raise SystemExit(f"{run}: not a Task 1 run with a val_composition column")
        t = info["config"]["train"]
        if a.store is not None:
            key = (tuple(t["val_radii"]), float(t["val_fraction"]), int(info["seed"]))
            h = cache.setdefault(key, val_entropy(a.store, info))
        else:
            h = float(curve["val_composition"].min())
        val = curve["val_loss"].tolist()
        stop1, best1 = replay(val, int(t["patience"]), float(t["rel_tol"]))
        stop2, best2 = replay([v - h for v in val], int(t["patience"]), float(t["rel_tol"]))
        net = [v - h for v in val]
        rows.append({"run": f"{run.parent.parent.name}/{run.name}", "epochs": len(val), "H": round(h, 4),
                     "H share": f"{h / val[best1]:.0%}",
                     "v1 stop (best)": f"{stop1} ({best1})", "v2 stop (best)": f"{stop2} ({best2})",
                     "fall after v1 best": f"{(net[best1] - min(net[best1:])) / net[best1]:.1%}"})
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
