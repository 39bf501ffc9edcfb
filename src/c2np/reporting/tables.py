"""Turn result JSONs (several models and seeds) into tables: Markdown, LaTeX, CSV.

Two tables per task and split, always together: raw metrics (mean +- std over seeds)
and the Table 5 scores (see :mod:`c2np.reporting.normalise`). Best is bold, second
underlined, in the direction each metric is better.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from c2np.metrics import METRICS, RANKED
from c2np.reporting.normalise import robust_scores


#: Columns a learned model's run adds beside the metrics: its own loss on the test
#: split (Table 5's Loss, normalised like a metric) and the time per epoch (kept raw).
RUN_COLUMNS = ("loss", "time_per_epoch")


def model_label(result: dict) -> str:
    """The model's name, marked ``[sample k]`` when it was scored on a seeded sample."""
    name = result.get("model") or "unnamed"
    sample = result.get("sample")
    if sample:
        k = next((v for key, v in sample.items() if key != "seed"), "?")
        name = f"{name} [sample {k}]"
    return name


def runs_frame(results: list[dict]) -> pd.DataFrame:
    """One row per result: task, split, model (marked if sampled), seed and every metric."""
    rows = []
    for r in results:
        row = {"task": r["task"], "split": r["split"], "model": model_label(r), "seed": r.get("seed")}
        row.update(r["metrics"])
        row.update({c: r[c] for c in RUN_COLUMNS if c in r})
        rows.append(row)
    return pd.DataFrame(rows)


def _metrics_for(task: int, frame: pd.DataFrame) -> list[str]:
    present = [c for c in RUN_COLUMNS if c in frame.columns and frame[c].notna().any()]
    return [c for c in present if c == "loss"] + [m for m in RANKED[task] if m in frame.columns] + \
        [c for c in present if c == "time_per_epoch"]


def _lower_is_better(metric: str) -> bool:
    return metric in RUN_COLUMNS or METRICS[metric].lower_is_better


def summary_tables(runs: pd.DataFrame) -> dict[tuple[int, str], tuple[pd.DataFrame, pd.DataFrame]]:
    """For each (task, split): (raw mean/std per model, normalised mean/std per model)."""
    out = {}
    for (task, split), group in runs.groupby(["task", "split"], sort=True):
        metrics = _metrics_for(int(task), group)
        group = group.copy()
        normed = group[["model"]].copy()
        for m in metrics:
            if m == "time_per_epoch":
                normed[m] = group[m]  # time stays raw, as in the paper
            else:
                normed[m] = robust_scores(group[m].to_numpy(float), _lower_is_better(m))
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
        higher = normalised and metric != "time_per_epoch" or (not normalised and not _lower_is_better(metric))
        ranks = _ranks(means, higher)
        for model in models:
            mu, sd = means[model], stds[model]
            if np.isnan(mu):  # a column this model has no value for (e.g. loss of a solver)
                cells[model][metric] = "–"
                continue
            text = f"{mu:.3g}" if np.isnan(sd) else f"{mu:.3g} ± {sd:.2g}"
            if fmt == "latex":
                text = text.replace("±", r"$\pm$")
            rank = ranks.get(model)
            if rank == 0:
                text = f"**{text}**" if fmt == "md" else rf"\textbf{{{text}}}"
            elif rank == 1:
                text = f"<u>{text}</u>" if fmt == "md" else rf"\underline{{{text}}}"
            cells[model][metric] = text
    arrows = {m: ("↑" if (normalised and m != "time_per_epoch") or not _lower_is_better(m) else "↓")
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
    for (task, split), (raw, norm) in summary_tables(runs).items():
        title = f"Task {task}, {split.upper()}"
        n_models = len(raw.index)
        md += [f"## {title}", "", "Raw metrics (mean ± std over seeds):", "", render(raw, "md", False), ""]
        if any("[sample" in m for m in raw.index):
            md += ["[sample k]: scored on a seeded sample (Task 1: k materials per radius; Task 2: k "
                   "configurations per (material, R)), not the whole split.", ""]
        if "loss" in raw.columns.get_level_values(0):
            md += ["loss: the model's own training objective on this split (`c2np predict`); "
                   "objectives differ between model families.", ""]
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
            sink.append(flat.reset_index())
    text = "\n".join(md)
    (out_dir / "report.md").write_text(text + "\n")
    (out_dir / "report.tex").write_text("\n".join(tex) + "\n")
    pd.concat(raw_csv).to_csv(out_dir / "raw.csv", index=False)
    pd.concat(norm_csv).to_csv(out_dir / "normalised.csv", index=False)
    return text
