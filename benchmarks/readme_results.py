"""Regenerate the learned-baseline results in the README, the report and the figure from
the result JSONs, so that no number there is typed by hand:

    python benchmarks/readme_results.py [--learned results/learned] [--reference results]
                                        [--materials results/learned/materials]
                                        [--materials-reference results/materials]

1. ``c2np report`` of every result JSON in LEARNED (top level) plus the reference rows of
   REFERENCE that LEARNED does not hold itself (``--no-reference``: none; for learned
   results of an earlier store, whose reference rows are not comparable) -> LEARNED/report/ (report.md with the
   Table 5 scores and the Loss column, report.tex, raw.csv, normalised.csv);
2. the README block between ``<!-- learned-results:begin -->`` and
   ``<!-- learned-results:end -->``: per task one raw table, a row per model, ID and OOD
   side by side, mean ± std over seeds, with the seeds and what was scored;
3. the README block between ``<!-- learned-materials:begin -->`` and
   ``<!-- learned-materials:end -->``: the material-held-out scheme (MATERIALS, with the
   reference rows of MATERIALS_REFERENCE), per task a row per model and a column per
   (seen/unseen material, ID/OOD radius) cell;
4. the README block between ``<!-- learned-runs:begin -->`` and ``<!-- learned-runs:end -->``:
   every training run of LEARNED/runs, LEARNED/pending/runs and MATERIALS/runs (run.json),
   converged or not, with its validation curve's first and best value, its time per epoch
   and its training throughput (particles/s, atoms/s);
5. LEARNED/report/families.png: Task 1 RMSD, Task 2 lattice RMSE and joint accuracy per
   model, ID and OOD, and Task 2 lattice RMSE on seen vs unseen materials; error bars =
   std over seeds.

The report (LEARNED/report/) holds both schemes, each in its own section.
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

from c2np.config import objective_version, recorded_objective  # noqa: E402
from c2np.reporting.tables import label, mean_std_text, runs_frame, split_label, write_report  # noqa: E402

BEGIN, END = "<!-- learned-results:begin -->", "<!-- learned-results:end -->"
HELD_BEGIN, HELD_END = "<!-- learned-materials:begin -->", "<!-- learned-materials:end -->"
RUNS_BEGIN, RUNS_END = "<!-- learned-runs:begin -->", "<!-- learned-runs:end -->"
HELD_SPLITS = ("id", "ood", "unseen_id", "unseen_ood")
HELD_COLUMNS = {1: ["rmsd", "loss"], 2: ["lattice_rmse", "spacegroup_accuracy", "joint_accuracy"]}
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


def model_order(models) -> list[str]:
    """Reference rows first (analytic, template, mean), then the learned models by name."""
    return sorted(models, key=lambda m: (m not in REFERENCE_ORDER,
                                         REFERENCE_ORDER.index(m) if m in REFERENCE_ORDER else 0, m))


def cell(values: pd.Series) -> str:
    values = values.dropna()
    return mean_std_text(values.mean(), values.std()) if len(values) else "–"


def seeds_text(by_split: dict[str, pd.Series]) -> str:
    """The seeds behind a row: their number when every split has the same ones, else the
    seeds of each split (a row whose ID and OOD cells come from different runs says so)."""
    sets = {s: sorted(int(x) for x in v.unique()) for s, v in by_split.items()}
    if len({tuple(v) for v in sets.values()}) == 1:
        return str(len(next(iter(sets.values()))))
    return " / ".join(f"{s.upper()} {','.join(map(str, v)) or '–'}" for s, v in sets.items())


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
        models = model_order(frame["model"].unique())
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for model in models:
            rows = frame[frame["model"] == model]
            by = {s: rows[rows["split"] == s] for s in ("id", "ood")}
            cells = [cell(by[s][c]) for c in cols for s in ("id", "ood")]
            seeds = seeds_text({s: by[s]["seed"] for s in ("id", "ood")}) if model not in REFERENCE_ORDER else "–"
            scored = " / ".join(by[s]["samples"].iloc[0] if len(by[s]) else "–" for s in ("id", "ood"))
            lines.append("| " + " | ".join([model, *cells, str(seeds), scored]) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def held_block(runs: pd.DataFrame) -> str:
    """Markdown of the material-held-out scheme: a row per model, a column per metric and
    (seen/unseen material, ID/OOD radius) cell, mean ± std over seeds."""
    runs = runs[runs["scheme"] != "radius"]
    out = []
    for task, cols in HELD_COLUMNS.items():
        frame = runs[(runs["task"] == task) & runs["split"].isin(HELD_SPLITS)]
        cols = [c for c in cols if c in frame.columns and frame[c].notna().any()]
        if frame.empty or not cols:
            continue
        splits = [s for s in HELD_SPLITS if s in set(frame["split"])]
        head = ["Task %d" % task] + [f"{label(c)} {split_label('materials', s)}" for c in cols for s in splits]
        lines = ["| " + " | ".join(head + ["seeds"]) + " |", "|" + "---|" * (len(head) + 1)]
        for model in model_order(frame["model"].unique()):
            rows = frame[frame["model"] == model]
            cells = [cell(rows[rows["split"] == s][c]) for c in cols for s in splits]
            seeds = rows["seed"].nunique() if model not in REFERENCE_ORDER else "–"
            lines.append("| " + " | ".join([model, *cells, str(seeds)]) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def runs_block(folders: list[tuple[str, Path]]) -> str:
    """Markdown of every training run (run.json + metrics.csv) under the folders' runs/. Its
    throughput is the training set (particles, atoms) over the mean training time of an epoch
    (run.json's time_per_epoch: the first epoch of the run left out, as it carries start-up),
    on the GPU as the run shared it, or on its GPUs together for a run trained with DDP."""
    lines = ["| scheme | model | task | seed | state | best val. loss (epoch) | val. loss at epoch 0 "
             "| s/epoch | particles/s | atoms/s | device |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scheme, folder in folders:
        for path in sorted((folder / "runs").glob("*/run.json")):
            info = json.loads(path.read_text())
            curve = pd.read_csv(path.parent / "metrics.csv")
            state = (f"converged at epoch {info['converged_epoch']}" if info.get("converged")
                     else f"{info.get('stop_reason') or 'running'} after {info['epochs']} epochs")
            state += "".join(f" ({st['stage']} stage converged at epoch {st['converged_epoch']})"
                             for st in info.get("stages") or [])
            version = recorded_objective(info)
            current = objective_version(int(info["task"]), info["model"])
            if version != current:
                state += f", under objective v{version}, superseded by v{current}"
            state += "".join(f"; objective v{ch['to']} from epoch {ch['epoch']}"
                             for ch in info.get("objective_changes") or [])
            rates = [f"{info[k] / info['time_per_epoch']:,.0f}" if info.get(k) else "–"
                     for k in ("train_records", "train_atoms")]
            device = info.get("device", "?")
            if int(info.get("devices") or 1) > 1:  # one run over several GPUs: its s/epoch is theirs together
                device = f"{info['devices']} x {device} (DDP)"
            lines.append(f"| {scheme} | {info['model']} | {info['task']} | {info['seed']} | {state} | "
                         f"{info['best_val_loss']:.4g} ({info['best_epoch']}) | {curve['val_loss'].iloc[0]:.4g} | "
                         f"{info['time_per_epoch']:.1f} | {' | '.join(rates)} | {device} |")
    return "\n".join(lines)


def bars(ax, frame: pd.DataFrame, metric: str, splits: tuple[str, ...], names: list[str]) -> None:
    """Grouped bars of ``metric`` per model (mean, error bar = std over seeds), one per split;
    a learned model's tick says how many seeds each split's bar holds ("(3/1)": ID/OOD, in the
    order of the legend), so that a bar of one seed, without an error bar, is not read as a
    tight one."""
    models = model_order(frame["model"].unique())
    width = 0.8 / len(splits)
    for k, (split, name) in enumerate(zip(splits, names)):
        stats = frame[frame["split"] == split].groupby("model")[metric].agg(["mean", "std"]).reindex(models)
        ax.bar([i + width * (k - (len(splits) - 1) / 2) for i in range(len(models))], stats["mean"], width,
               yerr=stats["std"].fillna(0), capsize=2, label=name)
    counts = frame.groupby(["model", "split"]).size()
    ticks = [m if m in REFERENCE_ORDER else f"{m} ({'/'.join(str(counts.get((m, s), 0)) for s in splits)})"
             for m in models]
    ax.set_xticks(range(len(models)), ticks, rotation=35, ha="right", fontsize=8)


def figure(runs: pd.DataFrame, path: Path) -> None:
    radius, held = runs[runs["scheme"] == "radius"], runs[runs["scheme"] != "radius"]
    # Radius splits on the top row, the held-out scheme's seen/unseen materials below, so that
    # each family's drop on unseen materials reads off one column.
    panels = [(radius, 1, "rmsd", ("id", "ood")), (radius, 2, "lattice_rmse", ("id", "ood")),
              (radius, 2, "joint_accuracy", ("id", "ood")), (held, 1, "rmsd", HELD_SPLITS),
              (held, 2, "lattice_rmse", HELD_SPLITS), (held, 2, "joint_accuracy", HELD_SPLITS)]
    fig, axes = plt.subplots(2, 3, figsize=(4.2 * 3, 3.8 * 2))
    for ax, (frame, task, metric, splits) in zip(axes.flat, panels):
        frame = frame[(frame["task"] == task) & frame[metric].notna()] if metric in frame else frame.iloc[:0]
        scheme = "materials" if splits == HELD_SPLITS else "radius"
        bars(ax, frame, metric, splits, [split_label(scheme, s) for s in splits])
        where = "held-out materials scheme" if scheme == "materials" else "radius splits"
        ax.set_title(f"Task {task}: {label(metric)}\n({where})", fontsize=9)
        if metric == "joint_accuracy":
            ax.set_ylim(0, 1.05)  # an accuracy: the whole scale, so that 0 looks like 0
    for row in axes:  # one legend a row, beside it: inside a panel it sat on the bars
        row[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
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
    ap.add_argument("--materials", type=Path, default=Path("results/learned/materials"),
                    help="learned results of the material-held-out scheme")
    ap.add_argument("--materials-reference", type=Path, default=Path("results/materials"),
                    help="reference results of that scheme (same store)")
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    args = ap.parse_args()
    results = load(args.learned, args.reference)
    if args.materials.is_dir():
        results += load(args.materials, args.materials_reference)
    report = args.learned / "report"
    write_report(results, report)
    runs = runs_frame(results)
    figure(runs, report / "families.png")
    text = args.readme.read_text()
    # pending/: converged runs retrained after their first weights were lost, whose splits are
    # not generated yet (the committed results of the same seed still come from the first run)
    trained = runs_block([("radius", args.learned), ("radius, awaiting generation", args.learned / "pending"),
                          ("held-out", args.materials)])
    for begin, end, body in ((BEGIN, END, block(runs)), (HELD_BEGIN, HELD_END, held_block(runs)),
                             (RUNS_BEGIN, RUNS_END, trained)):
        if begin not in text or end not in text:
            raise SystemExit(f"{args.readme}: no {begin} ... {end} block to fill")
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S)
    args.readme.write_text(text)
    print(f"{len(results)} results: {report}/report.md, {report}/families.png, {args.readme} block")


if __name__ == "__main__":
    main()
