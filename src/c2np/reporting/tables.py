"""Turn result JSONs (several models and seeds) into tables: Markdown, LaTeX, CSV.

Two tables per task and split, always together: raw metrics (mean +- std over seeds)
and the Table 5 scores (see :mod:`c2np.reporting.normalise`). Best is bold, second
underlined, in the direction each metric is better.

Results are grouped by split scheme first (``radius``, the paper's; ``materials-...``,
held-out materials, docs/splits.md): the same split name means different test sets in
two schemes, so one table never holds results of two schemes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from c2np.errors import C2NPError
from c2np.metrics import METRICS, RANKED
from c2np.reporting.normalise import robust_scores


def runs_frame(results: list[dict]) -> pd.DataFrame:
    """One row per result: split scheme, task, split, model, seed and every metric.

    Results written before split schemes existed are of the ``radius`` scheme.
    """
    rows = []
    for r in results:
        row = {"scheme": r.get("split_scheme", "radius"), "task": r["task"], "split": r["split"],
               "model": r.get("model") or "unnamed", "seed": r.get("seed")}
        row.update(r["metrics"])
        if "time_per_epoch" in r:
            row["time_per_epoch"] = r["time_per_epoch"]
        rows.append(row)
    return pd.DataFrame(rows)


def _metrics_for(task: int, frame: pd.DataFrame) -> list[str]:
    names = [m for m in RANKED[task] if m in frame.columns]
    if "time_per_epoch" in frame.columns and frame["time_per_epoch"].notna().any():
        names.append("time_per_epoch")
    return names


def summary_tables(runs: pd.DataFrame) -> dict[tuple[int, str], tuple[pd.DataFrame, pd.DataFrame]]:
    """For each (task, split): (raw mean/std per model, normalised mean/std per model).

    ``runs`` must hold one split scheme: tables of two schemes would compare different
    test sets under one split name, so that raises :class:`~c2np.errors.C2NPError`.
    """
    schemes = sorted(runs["scheme"].unique()) if "scheme" in runs else []
    if len(schemes) > 1:
        raise C2NPError(f"results of split schemes {', '.join(schemes)} cannot share a table; "
                        "report each scheme on its own (write_report groups them)")
    out = {}
    for (task, split), group in runs.groupby(["task", "split"], sort=True):
        metrics = _metrics_for(int(task), group)
        group = group.copy()
        normed = group[["model"]].copy()
        for m in metrics:
            if m == "time_per_epoch":
                normed[m] = group[m]  # time stays raw, as in the paper
            else:
                normed[m] = robust_scores(group[m].to_numpy(float), METRICS[m].lower_is_better)
        raw = group.groupby("model")[metrics].agg(["mean", "std"])
        norm = normed.groupby("model")[metrics].agg(["mean", "std"])
        out[(int(task), split)] = (raw, norm)
    return out


def _ranks(means: pd.Series, higher_better: bool) -> dict[str, int]:
    """Dense ranks: equal means share a rank, so ties are all bold (or all underlined)."""
    values = means.dropna()
    distinct = sorted(values.unique(), reverse=higher_better)
    return {model: distinct.index(v) for model, v in values.items()}


def render(table: pd.DataFrame, fmt: str, normalised: bool) -> str:
    """Markdown or LaTeX text of a mean/std table with best bold and second underlined."""
    metrics = list(dict.fromkeys(table.columns.get_level_values(0)))
    models = list(table.index)
    cells = {m: {} for m in models}
    for metric in metrics:
        means, stds = table[(metric, "mean")], table[(metric, "std")]
        higher = normalised and metric != "time_per_epoch" or (not normalised and not METRICS[metric].lower_is_better)
        ranks = _ranks(means, higher)
        for model in models:
            mu, sd = means[model], stds[model]
            text = f"{mu:.3g}" if np.isnan(sd) else f"{mu:.3g} ± {sd:.2g}"
            if fmt == "latex":
                text = text.replace("±", r"$\pm$")
            rank = ranks.get(model)
            if rank == 0:
                text = f"**{text}**" if fmt == "md" else rf"\textbf{{{text}}}"
            elif rank == 1:
                text = f"<u>{text}</u>" if fmt == "md" else rf"\underline{{{text}}}"
            cells[model][metric] = text
    arrows = {m: ("↑" if (normalised and m != "time_per_epoch") or not METRICS[m].lower_is_better else "↓")
              for m in metrics}
    if fmt == "md":
        head = "| model | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |"
        sep = "|---" * (len(metrics) + 1) + "|"
        body = ["| " + " | ".join([model] + [cells[model][m] for m in metrics]) + " |" for model in models]
        return "\n".join([head, sep, *body])
    arrows_tex = {m: ("$\\uparrow$" if arrows[m] == "↑" else "$\\downarrow$") for m in metrics}
    head = " & ".join(["model"] + [m.replace("_", r"\_") + " " + arrows_tex[m] for m in metrics]) + r" \\"
    body = [" & ".join([model.replace("_", r"\_")] + [cells[model][m] for m in metrics]) + r" \\" for model in models]
    return "\n".join([r"\begin{tabular}{l" + "r" * len(metrics) + "}", r"\toprule", head, r"\midrule",
                      *body, r"\bottomrule", r"\end{tabular}"])


def write_report(results: list[dict], out_dir: Path) -> str:
    """Write report.md, report.tex, raw.csv and normalised.csv; return the Markdown."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = runs_frame(results)
    md, tex, raw_csv, norm_csv = [], [], [], []
    for scheme, scheme_runs in runs.groupby("scheme", sort=True):
        md += [f"# Split scheme: {scheme}", ""]
        tex += [f"% Split scheme: {scheme}"]
        if scheme != "radius":
            md += [cell_table(scheme_runs), ""]
        _scheme_report(scheme, scheme_runs, md, tex, raw_csv, norm_csv)
    text = "\n".join(md)
    (out_dir / "report.md").write_text(text + "\n")
    (out_dir / "report.tex").write_text("\n".join(tex) + "\n")
    pd.concat(raw_csv).to_csv(out_dir / "raw.csv", index=False)
    pd.concat(norm_csv).to_csv(out_dir / "normalised.csv", index=False)
    return text


#: The metric of each task shown in the seen/unseen x radius overview of a materials scheme.
HEADLINE = {1: "rmsd", 2: "joint_accuracy"}


def cell_table(runs: pd.DataFrame) -> str:
    """Markdown overview of one materials scheme: per task and model, the headline metric
    (Task 1 RMSD, Task 2 joint accuracy; mean over seeds) in each (seen/unseen material,
    ID/OOD/training radius) cell."""
    summary_tables(runs)  # refuses a frame of several schemes
    cells = [s for s in ("id", "ood", "unseen_id", "unseen_ood", "unseen_train") if s in set(runs["split"])]
    labels = {s: split_label("materials", s).replace(" materials, ", " / ").replace(" radii", "") for s in cells}
    lines = ["Overview (mean over seeds; sections below give every metric):", "",
             "| task | metric | model | " + " | ".join(labels[s] for s in cells) + " |",
             "|---" * (len(cells) + 3) + "|"]
    for (task, model), group in runs.groupby(["task", "model"], sort=True):
        metric = HEADLINE[int(task)]
        means = group.groupby("split")[metric].mean()
        values = [f"{means[s]:.3g}" if s in means.index else "" for s in cells]
        lines.append(f"| {int(task)} | {metric} | {model} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def split_label(scheme: str, split: str) -> str:
    """Title of a split: ``ID``, or ``unseen materials, ID radii`` in the materials scheme."""
    if scheme == "radius":
        return split.upper()
    seen, _, radii = split.rpartition("_")
    return f"{'unseen' if seen else 'seen'} materials, {radii.upper() if radii != 'train' else 'training'} radii"


def _scheme_report(scheme: str, runs: pd.DataFrame, md: list, tex: list, raw_csv: list,
                   norm_csv: list) -> None:
    for (task, split), (raw, norm) in summary_tables(runs).items():
        title = f"Task {task}, {split_label(scheme, split)}"
        n_models = len(raw.index)
        md += [f"## {title}", "", "Raw metrics (mean ± std over seeds):", "", render(raw, "md", False), ""]
        tex += [f"% {title}: raw metrics", render(raw, "latex", False), ""]
        if n_models > 1:
            md += ["Table 5 scores (median/MAD z-score, logistic; higher is better; time raw). "
                   "They rank these models against each other only: read them with the raw table.", "",
                   render(norm, "md", True), ""]
            tex += [f"% {title}: Table 5 scores", render(norm, "latex", True), ""]
        for frame, sink in ((raw, raw_csv), (norm, norm_csv)):
            flat = frame.copy()
            flat.columns = [f"{a}_{b}" for a, b in flat.columns]
            flat.insert(0, "split", split)
            flat.insert(0, "task", task)
            flat.insert(0, "scheme", scheme)
            sink.append(flat.reset_index())
