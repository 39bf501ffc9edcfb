"""Markdown table of short runs (benchmarks/short_runs.sh): per (model, task), the epochs,
time per epoch, the validation loss of the first and the best epoch, the model's own loss
on the ID split (the Loss column) and the first ID scores.

    python benchmarks/short_runs_table.py OUT [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from c2np.training.results import run_extra

SCORES = {1: ("rmsd", "rdf_error", "hull_volume_error"), 2: ("lattice_rmse", "spacegroup_accuracy", "joint_accuracy")}


def row(out: Path, run: Path) -> str:
    info = json.loads((run / "run.json").read_text())
    model, task, seed = info["model"], int(info["task"]), info["seed"]
    val = [float(r["val_loss"]) for r in csv.DictReader(open(run / "metrics.csv")) if r.get("val_loss")]
    cells = [model, str(task), str(info["epochs"]), f"{info['time_per_epoch']:.1f}",
             f"{val[0]:.3g} → {min(val):.3g}" if len(val) > 1 else (f"{val[0]:.3g} (one epoch)" if val else "none")]
    loss = run_extra(run / "run.json", "id").get("loss")  # `c2np predict`'s, on the whole split
    cells.append(f"{loss:.3g}" if loss is not None else "–")
    result = out / "results" / f"{model}-task{task}-id-seed{seed}.json"
    if result.exists():
        res = json.loads(result.read_text())
        scores = ", ".join(f"{k} {res['metrics'][k]:.3g}" for k in SCORES[task])
        cells += [scores, f"{res['n_samples']:,}" + (" (sample)" if res.get("sample") else "")]
    else:
        cells += ["not scored", "–"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the OUT of short_runs.sh (runs/, results/)")
    args = ap.parse_args()
    runs = sorted(p.parent for p in args.out.glob("runs/*/run.json"))
    print("| model | task | epochs | s/epoch | val. loss first → best | Loss (ID) | first ID scores | ID items |")
    print("|---|---|---|---|---|---|---|---|")
    for run in sorted(runs, key=lambda p: (json.loads((p / "run.json").read_text())["task"], p.name)):
        print(row(args.out, run))


if __name__ == "__main__":
    main()
