"""Turn result JSONs (several models and seeds) into tables: Markdown, LaTeX, CSV, rich.

Per task, one raw table: a row per (model, split) with the number of scored samples and
every metric of the registry (:mod:`c2np.metrics`) that the results hold, mean ± std over
seeds. Per task and split, the Table 5 scores (see :mod:`c2np.reporting.normalise`), but
only when at least :data:`TABLE5_MIN_LEARNED` learned models are compared: the median/MAD
z-score of two or three runs says nothing (with two, every score is 0.73 or 0.27). Best
is bold, second underlined, within a split, for the ranked metrics (``RANKED``) only.

Results are grouped by split scheme first (``radius``, the paper's; ``materials-...``,
held-out materials, docs/splits.md): the same split name means different test sets in
two schemes, so one table never holds results of two schemes. Within a scheme, results of
different stores, tolerances or metric definitions, and a model's seeds scored on different
samples, are refused (:func:`check_comparable`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from c2np.config import objective_version, recorded_objective
from c2np.errors import C2NPError
from c2np.metrics import METRICS, RANKED
from c2np.reporting.normalise import robust_scores
from c2np.solvers.baselines import MODELS as REFERENCE_MODELS

#: Terminal style of the best (rank 0) and second (rank 1) value of a column.
RANK_STYLES = {0: "bold", 1: "underline"}

#: Table 5 scores need this many learned (non-reference) models in a (task, split).
TABLE5_MIN_LEARNED = 4

#: Column names of the tables; a metric missing here shows its registry name.
LABELS = {
    "rmsd": "RMSD (A)", "hausdorff": "Hausdorff (A)", "hull_volume_error": "hull vol. err.",
    "volume_ratio_error": "vol. ratio err.", "volume_ratio": "vol. ratio", "rdf_error": "RDF err.",
    "lev_error": "LEV err.", "atom_count_error": "atom-count err.", "lattice_rmse": "lattice RMSE",
    "length_rmse": "length RMSE (A)", "angle_rmse": "angle RMSE (deg)", "length_mape": "length MAPE",
    "lattice_accuracy": "lattice acc.", "spacegroup_accuracy": "space-group acc.",
    "joint_accuracy": "joint acc.", "time_per_epoch": "time/epoch (s)", "loss": "Loss",
}


def label(metric: str) -> str:
    """The column name of ``metric``."""
    return LABELS.get(metric, metric.replace("_", " "))


def samples_text(result: dict) -> str:
    """'486', '4,860 (10/group)', '72 (6 materials, 2/group)': what a result scored."""
    n = f"{int(result.get('n_samples', 0)):,}"
    sample = result.get("sample") or {}
    parts = []
    if "materials" in sample:
        parts.append(f"{len(sample['materials'])} materials")
    if "per_radius" in sample:
        parts.append(f"{sample['per_radius']}/radius")
    if "per_material_radius" in sample:
        parts.append(f"{sample['per_material_radius']}/group")
    return f"{n} ({', '.join(parts)})" if parts else n


def mean_std_text(mean: float, std: float) -> str:
    """'1.72 ± 0.084' (3 and 2 significant digits); the mean alone when std is NaN (one seed)."""
    return f"{mean:.3g}" if np.isnan(std) else f"{mean:.3g} ± {std:.2g}"


#: Columns a learned model's run adds beside the metrics: its own loss on the test
#: split (Table 5's Loss, normalised like a metric) and the time per epoch (kept raw).
RUN_COLUMNS = ("loss", "time_per_epoch")


def runs_frame(results: list[dict]) -> pd.DataFrame:
    """One row per result: split scheme, task, split, model, seed, samples and every metric.

    Results written before split schemes existed are of the ``radius`` scheme.
    """
    rows = []
    for r in results:
        row = {"scheme": scheme_of(r), "task": r["task"], "split": r["split"],
               "model": model_name(r), "seed": r.get("seed"), "samples": samples_text(r)}
        row.update(r["metrics"])
        row.update({c: r[c] for c in RUN_COLUMNS if c in r})
        rows.append(row)
    return pd.DataFrame(rows)


def model_name(result: dict) -> str:
    """The result's model, marked ``[objective vN]`` when a learned run trained it under an
    older objective than the current one (``c2np.config.objective_version``): such results
    are rows of their own, never averaged with the current objective's seeds."""
    name = result.get("model") or "unnamed"
    run = result.get("model_run")
    if run is not None:
        version = recorded_objective(run)
        if version != objective_version(int(result["task"]), name):
            name += f" [objective v{version}]"
    return name


def scheme_of(result: dict) -> str:
    """The split scheme of a result JSON (``radius`` for results older than schemes)."""
    return result.get("split_scheme", "radius")


def _metrics_for(task: int, frame: pd.DataFrame, ranked_only: bool) -> list[str]:
    """The model's own test loss first (Table 5's Loss column), then in registry order the
    ranked metrics (Table 5) or every metric of the task present, then the time per epoch."""
    pool = RANKED[task] if ranked_only else [m for m, info in METRICS.items() if info.task == task]
    present = [c for c in RUN_COLUMNS if c in frame.columns and frame[c].notna().any()]
    names = [m for m in pool if m in frame.columns and frame[m].notna().any()]
    return [c for c in present if c == "loss"] + names + [c for c in present if c == "time_per_epoch"]


def _lower_is_better(metric: str) -> bool:
    return metric in RUN_COLUMNS or METRICS[metric].lower_is_better


def summary_tables(runs: pd.DataFrame) -> dict[tuple[int, str], tuple[pd.DataFrame, pd.DataFrame]]:
    """For each (task, split): (raw mean/std per model, Table 5 scores mean/std per model).

    ``runs`` must hold one split scheme: tables of two schemes would compare different
    test sets under one split name, so that raises :class:`~c2np.errors.C2NPError`.
    """
    schemes = sorted(runs["scheme"].unique()) if "scheme" in runs else []
    if len(schemes) > 1:
        raise C2NPError(f"results of split schemes {', '.join(schemes)} cannot share a table; "
                        "report each scheme on its own (write_report groups them)")
    out = {}
    for (task, split), group in runs.groupby(["task", "split"], sort=True):
        group = group.copy()
        normed = group[["model"]].copy()
        ranked = _metrics_for(int(task), group, ranked_only=True)
        for m in ranked:
            if m == "time_per_epoch":
                normed[m] = group[m]  # time stays raw, as in the paper
            else:
                normed[m] = robust_scores(group[m].to_numpy(float), _lower_is_better(m))
        raw = group.groupby("model", sort=False)[_metrics_for(int(task), group, False)].agg(["mean", "std"])
        norm = normed.groupby("model", sort=False)[ranked].agg(["mean", "std"])
        out[(int(task), split)] = (raw, norm)
    return out


def table5_reason(models: list[str]) -> str | None:
    """Why the Table 5 scores of these models are not shown, or None if they are."""
    learned = [m for m in models if m not in REFERENCE_MODELS]
    if len(learned) >= TABLE5_MIN_LEARNED:
        return None
    return (f"Table 5 scores not shown: they rank models against each other and need at least "
            f"{TABLE5_MIN_LEARNED} learned models, here {len(learned)}"
            + (f" ({', '.join(learned)})" if learned else "") + "; read the raw metrics.")


def _ranks(means: pd.Series, higher_better: bool) -> dict[str, int]:
    """Dense ranks: equal means share a rank, so ties are all bold (or all underlined)."""
    values = means.dropna()
    distinct = sorted(values.unique(), reverse=higher_better)
    return {model: distinct.index(v) for model, v in values.items()}


def _direction(metric: str, task: int, normalised: bool) -> str | None:
    """'↑' or '↓' for ranked metrics (and time), None for those shown but not ranked."""
    if metric == "time_per_epoch":
        return "↓"
    if metric == "loss":
        return "↑" if normalised else "↓"
    if metric not in RANKED.get(task, RANKED[1] + RANKED[2]):
        return None
    return "↑" if normalised or not METRICS[metric].lower_is_better else "↓"


def _grid(blocks: list[tuple[str | None, pd.DataFrame]], normalised: bool, task: int | None = None
          ) -> tuple[list[str], list[tuple[list[str], list[tuple[str, int | None]]]]]:
    """Metrics and rows (leading cells, [(value text, rank)]) of one or more mean/std tables.

    Each block is (split, table); ranks are computed within a block.
    """
    metrics = list(dict.fromkeys(m for _, t in blocks for m in t.columns.get_level_values(0)))
    task = task or next((METRICS[m].task for m in metrics if m in METRICS), None)
    rows = []
    for split, table in blocks:
        ranks = {}
        for m in metrics:
            arrow = _direction(m, task, normalised)
            if m in table.columns.get_level_values(0) and arrow is not None:
                ranks[m] = _ranks(table[(m, "mean")], arrow == "↑")
        for model in table.index:
            cells = []
            for m in metrics:
                if m not in table.columns.get_level_values(0) or np.isnan(table.loc[model, (m, "mean")]):
                    cells.append(("", None))
                    continue
                mu, sd = table.loc[model, (m, "mean")], table.loc[model, (m, "std")]
                cells.append((mean_std_text(mu, sd), ranks.get(m, {}).get(model)))
            lead = [model] if split is None else [model, split.upper()]
            rows.append((lead, cells))
    return metrics, rows


def _header(metrics: list[str], task: int | None, normalised: bool) -> list[str]:
    out = []
    for m in metrics:
        arrow = _direction(m, task, normalised)
        out.append(label(m) + (f" {arrow}" if arrow else ""))
    return out


def _markdown(head: list[str], rows: list[tuple[list[str], list[tuple[str, int | None]]]]) -> str:
    def cell(text: str, rank: int | None) -> str:
        return f"**{text}**" if rank == 0 else f"<u>{text}</u>" if rank == 1 else text

    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += ["| " + " | ".join(lead + [cell(t, r) for t, r in cells]) + " |" for lead, cells in rows]
    return "\n".join(lines)


def _latex(head: list[str], rows: list[tuple[list[str], list[tuple[str, int | None]]]], n_lead: int) -> str:
    def esc(text: str) -> str:
        return (text.replace("_", r"\_").replace("±", r"$\pm$").replace("↑", r"$\uparrow$")
                .replace("↓", r"$\downarrow$"))

    def cell(text: str, rank: int | None) -> str:
        text = esc(text)
        return rf"\textbf{{{text}}}" if rank == 0 else rf"\underline{{{text}}}" if rank == 1 else text

    body = [" & ".join([esc(x) for x in lead] + [cell(t, r) for t, r in cells]) + r" \\" for lead, cells in rows]
    return "\n".join([r"\begin{tabular}{" + "l" * n_lead + "r" * (len(head) - n_lead) + "}", r"\toprule",
                      " & ".join(esc(h) for h in head) + r" \\", r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}"])


def render(table: pd.DataFrame, fmt: str, normalised: bool) -> str:
    """Markdown or LaTeX text of one mean/std table with best bold and second underlined."""
    metrics, rows = _grid([(None, table)], normalised)
    task = next((METRICS[m].task for m in metrics if m in METRICS), None)
    head = ["model", *_header(metrics, task, normalised)]
    return _markdown(head, rows) if fmt == "md" else _latex(head, rows, 1)




def by_scheme(results: list[dict]) -> dict[str, list[dict]]:
    """Results grouped by split scheme, schemes in name order; :class:`~c2np.errors.C2NPError`
    for what one scheme's tables cannot hold (:func:`check_comparable`)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(scheme_of(r), []).append(r)
    for group in groups.values():
        check_comparable(group)
    return dict(sorted(groups.items()))


def check_comparable(results: list[dict]) -> None:
    """Refuse (:class:`~c2np.errors.C2NPError`, naming them) results that a table would
    average or rank as scores of the same test sets but are not: results of different stores
    (another build configuration has other particles and splits; a result without a
    fingerprint counts as a store of its own), Task 2 results scored with different
    joint-accuracy tolerances or Task 1 results under different metric definitions (each
    recorded in the result), or a model's seeds on one task and split scored on different
    samples (a sample's mean is not the whole split's)."""
    stores = _models_by(results, lambda r: f"store {(r.get('store_fingerprint') or 'unknown')[:12]}")
    if len(stores) > 1:
        raise C2NPError(f"results of different stores cannot share a table (other particles and splits): "
                        f"{_listed(stores)}; report each store's results on their own")
    for task, key, what in ((2, "tolerances", "tolerances"), (1, "definitions", "metric definitions")):
        seen = _models_by(results, lambda r: _settings_text(r.get(key)) if int(r["task"]) == task else None)
        if len(seen) > 1:
            raise C2NPError(f"Task {task} results scored with different {what} cannot share a table "
                            f"({_listed(seen)}); score them alike")
    samples: dict[tuple, dict[str, list]] = {}
    for r in results:
        key = (model_name(r), r["task"], r["split"])
        samples.setdefault(key, {}).setdefault(samples_text(r), []).append(r.get("seed"))
    for (model, task, split), by_sample in samples.items():
        if len(by_sample) > 1:
            listed = "; ".join(f"{text}: seed {', '.join(map(str, seeds))}" for text, seeds in by_sample.items())
            raise C2NPError(f"{model}, Task {task} {split}: seeds scored on different samples ({listed}); "
                            "score every seed alike, or give the sampled result another name (c2np evaluate --model)")


def _models_by(results: list[dict], text) -> dict[str, set[str]]:
    """The models of ``results`` under each value of ``text(result)`` (None: left out)."""
    groups: dict[str, set[str]] = {}
    for r in results:
        value = text(r)
        if value is not None:
            groups.setdefault(value, set()).add(model_name(r))
    return groups


def _listed(groups: dict[str, set[str]]) -> str:
    """'value: model, model; value: model' for an error message."""
    return "; ".join(f"{value}: {', '.join(sorted(models))}" for value, models in sorted(groups.items()))


def _settings_text(settings: dict | None) -> str:
    """A result's recorded tolerances or metric definitions as one comparable text."""
    return ", ".join(f"{k} {v}" for k, v in sorted(settings.items())) if settings else "none recorded"


def report_tables(results: list[dict]) -> list[tuple[str, list[str], list, str | None]]:
    """Every table of a report: (title, header, rows, note), raw tables first, one set per
    split scheme (titles name the scheme unless every result is of the paper's ``radius``).

    Rows are (leading cells, [(value text, rank)]); the note says why Table 5 is absent.
    """
    groups = by_scheme(results)
    out = []
    for scheme, group in groups.items():
        prefix = "" if list(groups) == ["radius"] else f"[{scheme}] "
        out += [(prefix + title, head, rows, note) for title, head, rows, note in _scheme_tables(scheme, group)]
    return out


def _scheme_tables(scheme: str, results: list[dict]) -> list[tuple[str, list[str], list, str | None]]:
    runs = runs_frame(results)
    tables = summary_tables(runs)
    samples_of = runs.groupby(["task", "model", "split"])["samples"].first().to_dict()
    out = []
    for task in sorted({t for t, _ in tables}):
        blocks = [(split, tables[(task, split)][0]) for t, split in tables if t == task]
        metrics, rows = _grid(blocks, normalised=False, task=task)
        rows = [([lead[0], split_label(scheme, lead[1].lower()), samples_of[(task, lead[0], lead[1].lower())]], cells)
                for lead, cells in rows]
        out.append((f"Task {task}: raw metrics (mean ± std over seeds)",
                    ["model", "split", "samples", *_header(metrics, task, False)], rows, None))
    withheld: dict[str, list[str]] = {}  # reason -> the (task, split)s it applies to
    for (task, split), (_, norm) in tables.items():
        reason = table5_reason(list(norm.index))
        if reason is None:
            metrics, rows = _grid([(None, norm)], normalised=True, task=task)
            # this table has no samples column: a model scored on a sample says so by name
            rows = [([f"{lead[0]} [sample]" if "(" in samples_of[(task, lead[0], split)] else lead[0]], cells)
                    for lead, cells in rows]
            out.append((f"Task {task}, {split_label(scheme, split)}: Table 5 scores (higher is better; time raw)",
                        ["model", *_header(metrics, task, True)], rows, None))
        else:
            withheld.setdefault(reason, []).append(f"Task {task} {split_label(scheme, split)}")
    out += [(", ".join(where), [], [], reason) for reason, where in withheld.items()]
    return out


def rich_tables(results: list[dict], width: int = 120) -> list:
    """The report for a terminal ``width`` columns wide: rich tables and notes.

    Best is bold, second underlined. Metric columns that do not fit beside the leading
    ones (model, split, samples) go to a continuation table, so no number is cut.
    """
    from rich import box

    out = []
    for title, head, rows, note in report_tables(results):
        if note is not None:
            out.append(f"{title}: {note}")
            continue
        n_lead = len(rows[0][0]) if rows else 1
        caption = None
        if "samples" in head:  # the count in the column, how it was sampled below the table
            k = head.index("samples")
            kinds = list(dict.fromkeys(lead[k].partition(" ")[2].strip("()") for lead, _ in rows))
            caption = "samples: " + "; ".join(kinds) if any(kinds) else None
            rows = [([*lead[:k], lead[k].partition(" ")[0], *lead[k + 1:]], cells) for lead, cells in rows]

        def need(k: int) -> int:  # widest value or longest header word, + padding and rule
            cells = [r[0][k] if k < n_lead else r[1][k - n_lead][0] for r in rows]
            return max([len(c) for c in cells] + [len(w) for w in head[k].split()]) + 3

        lead_width = sum(need(k) for k in range(n_lead))
        chunks, current, used = [], [], lead_width
        for k in range(n_lead, len(head)):
            if current and used + need(k) > width - 2:  # the table's left and right edge
                chunks.append(current)
                current, used = [], lead_width
            current.append(k)
            used += need(k)
        chunks.append(current)
        for part, cols in enumerate(chunks):
            suffix = f" ({part + 1}/{len(chunks)})" if len(chunks) > 1 else ""
            t = Table(title=title + suffix, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                      pad_edge=False, caption=caption, caption_justify="left")
            for k in [*range(n_lead), *cols]:
                t.add_column(head[k], justify="left" if k < n_lead else "right", no_wrap=k < n_lead,
                             min_width=need(k) - 3, max_width=need(k) - 3)
            for lead, cells in rows:
                values = [cells[k - n_lead] for k in cols]
                t.add_row(*map(Text, lead), *(Text(x, style=RANK_STYLES.get(r, "")) for x, r in values))
            out.append(t)
    return out


def write_report(results: list[dict], out_dir: Path) -> str:
    """Write report.md, report.tex, raw.csv and (when shown) normalised.csv; return the Markdown."""
    groups = by_scheme(results)  # refuses incomparable results before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, tex = [], []
    for scheme, group in groups.items():
        if list(groups) != ["radius"]:  # the paper's scheme alone needs no heading
            md += [f"# Split scheme: {scheme}", ""]
            tex += [f"% Split scheme: {scheme}"]
        if scheme != "radius":
            md += [cell_table(runs_frame(group)), ""]
        for title, head, rows, note in _scheme_tables(scheme, group):
            if note is not None:
                md += [f"{title}: {note}", ""]
                continue
            n_lead = len(rows[0][0]) if rows else 1
            md += [f"## {title}", "", _markdown(head, rows), ""]
            tex += [f"% {title}", _latex(head, rows, n_lead), ""]
    raw_csv, norm_csv = [], []
    for scheme, group in groups.items():
        runs = runs_frame(group)
        samples = runs.groupby(["task", "split", "model"])["samples"].first().to_dict()
        for (task, split), (raw, norm) in summary_tables(runs).items():
            shown = table5_reason(list(norm.index)) is None
            for frame, sink in ((raw, raw_csv), (norm, norm_csv if shown else None)):
                if sink is None:
                    continue
                flat = frame.copy()
                flat.columns = [f"{a}_{b}" for a, b in flat.columns]
                flat.insert(0, "samples", [samples[(task, split, m)] for m in flat.index])
                flat.insert(0, "split", split)
                flat.insert(0, "task", task)
                flat.insert(0, "scheme", scheme)
                sink.append(flat.reset_index())
    text = "\n".join(md)
    (out_dir / "report.md").write_text(text + "\n")
    (out_dir / "report.tex").write_text("\n".join(tex) + "\n")
    pd.concat(raw_csv).to_csv(out_dir / "raw.csv", index=False)
    stale = out_dir / "normalised.csv"
    if norm_csv:
        pd.concat(norm_csv).to_csv(stale, index=False)
    elif stale.exists():
        stale.unlink()  # an earlier report's scores must not sit beside tables that omit them
    return text


#: The metric of each task shown in the seen/unseen x radius overview of a materials scheme.
HEADLINE = {1: "rmsd", 2: "joint_accuracy"}


def cell_table(runs: pd.DataFrame) -> str:
    """Markdown overview of one materials scheme: per task and model, the headline metric
    (Task 1 RMSD, Task 2 joint accuracy; mean over seeds) in each (seen/unseen material,
    ID/OOD/training radius) cell."""
    summary_tables(runs)  # refuses a frame of several schemes
    cells = [s for s in ("id", "ood", "unseen_id", "unseen_ood", "unseen_train") if s in set(runs["split"])]
    labels = {s: split_label("materials", s) for s in cells}
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
    """How a split is shown: ``ID`` in the radius scheme; ``seen ID``, ``unseen OOD`` or
    ``unseen train-R`` (held-out materials at training radii) in the materials scheme."""
    if scheme == "radius":
        return split.upper()
    seen, _, radii = split.rpartition("_")
    return f"{'unseen' if seen else 'seen'} {'train-R' if radii == 'train' else radii.upper()}"
