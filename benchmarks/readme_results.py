"""Regenerate the learned-baseline results in the README, the report and the figure from
the result JSONs, so that no number there is typed by hand:

    python benchmarks/readme_results.py [--learned results/learned] [--reference results]

1. ``c2np report`` of every result JSON in LEARNED (top level) plus the reference rows of
   REFERENCE that LEARNED does not hold itself (``--no-reference``: none; for learned
   results of an earlier store, whose reference rows are not comparable) -> LEARNED/report/ (report.md with the
   Table 5 scores and the Loss column, report.tex, raw.csv, normalised.csv);
2. the README block between ``<!-- learned-results:begin -->`` and
   ``<!-- learned-results:end -->``: per task one raw table, a row per model, ID and OOD
   side by side, mean ± std over seeds, with the seeds and what was scored;
3. LEARNED/report/families.png: Task 1 RMSD and Task 2 joint accuracy per model, ID and
   OOD, error bars = std over seeds.

Only the radius scheme goes into the README block; the report holds every scheme.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from c2np.reporting.tables import label, mean_std_text, runs_frame, write_report  # noqa: E402

BEGIN, END = "<!-- learned-results:begin -->", "<!-- learned-results:end -->"
COLUMNS = {1: ["rmsd", "hausdorff", "hull_volume_error", "rdf_error", "loss"],
           2: ["lattice_rmse", "spacegroup_accuracy", "joint_accuracy"]}
REFERENCE_ORDER = ["analytic", "template", "mean"]


def load(learned: Path, reference: Path | None) -> list[dict]:
    """Learned results, then the reference rows (analytic, template, mean) that the
    learned folder does not hold itself (a sample-matched template there wins)."""
    results = [json.loads(p.read_text()) for p in sorted(learned.glob("*.json"))]
    if reference is None:
        return results
    have = {(r.get("model"), r["task"], r["split"]) for r in results}
    for p in sorted(reference.glob("*.json")):
        r = json.loads(p.read_text())
        if r.get("model") in REFERENCE_ORDER and (r.get("model"), r["task"], r["split"]) not in have:
            results.append(r)
    return results


def cell(values: pd.Series) -> str:
    values = values.dropna()
    return mean_std_text(values.mean(), values.std()) if len(values) else "–"


def block(runs: pd.DataFrame) -> str:
    """Markdown of the raw tables (radius scheme): a row per model, ID | OOD columns."""
    runs = runs[runs["scheme"] == "radius"]
    out = []
    for task, cols in COLUMNS.items():
        frame = runs[runs["task"] == task]
        if frame.empty:
            continue
        cols = [c for c in cols if c in frame.columns and frame[c].notna().any()]
        head = ["Task %d" % task] + [f"{label(c)} {s.upper()}" for c in cols for s in ("id", "ood")]
        head += ["seeds", "scored ID / OOD"]
        models = sorted(frame["model"].unique(), key=lambda m: (m not in REFERENCE_ORDER,
                                                                REFERENCE_ORDER.index(m) if m in REFERENCE_ORDER else 0, m))
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for model in models:
            rows = frame[frame["model"] == model]
            by = {s: rows[rows["split"] == s] for s in ("id", "ood")}
            cells = [cell(by[s][c]) for c in cols for s in ("id", "ood")]
            seeds = rows["seed"].nunique() if model not in REFERENCE_ORDER else "–"
            scored = " / ".join(by[s]["samples"].iloc[0] if len(by[s]) else "–" for s in ("id", "ood"))
            lines.append("| " + " | ".join([model, *cells, str(seeds), scored]) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def figure(runs: pd.DataFrame, path: Path) -> None:
    runs = runs[runs["scheme"] == "radius"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (task, metric) in zip(axes, [(1, "rmsd"), (2, "joint_accuracy")]):
        frame = runs[(runs["task"] == task) & runs[metric].notna()] if metric in runs else runs.iloc[:0]
        models = sorted(frame["model"].unique())
        for k, split in enumerate(("id", "ood")):
            stats = frame[frame["split"] == split].groupby("model")[metric].agg(["mean", "std"]).reindex(models)
            ax.bar([i + 0.38 * (k - 0.5) for i in range(len(models))], stats["mean"], 0.38,
                   yerr=stats["std"].fillna(0), capsize=3, label=split.upper())
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
        ax.set_title(f"Task {task}: {label(metric)}")
        if task == 2:
            ax.set_ylim(0, 1.05)  # an accuracy: the whole scale, so that 0 looks like 0
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learned", type=Path, default=Path("results/learned"))
    ap.add_argument("--reference", type=Path, default=Path("results"),
                    help="reference results (analytic, template, mean) to add; --no-reference for none")
    ap.add_argument("--no-reference", dest="reference", action="store_const", const=None,
                    help="only LEARNED's own files (e.g. learned runs made on an earlier store)")
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    args = ap.parse_args()
    results = load(args.learned, args.reference)
    report = args.learned / "report"
    write_report(results, report)
    runs = runs_frame(results)
    figure(runs, report / "families.png")
    text = args.readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{args.readme}: no {BEGIN} ... {END} block to fill")
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END),
                 lambda _: f"{BEGIN}\n{block(runs)}\n{END}", text, flags=re.S)
    args.readme.write_text(new)
    print(f"{len(results)} results: {report}/report.md, {report}/families.png, {args.readme} block")


if __name__ == "__main__":
    main()
