"""Commands that score predictions: evaluate, targets, report, baseline, run, sweep."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from c2np.cli.common import (
    DEFAULT_STORE,
    EvalSplitOpt,
    JobsOpt,
    MaterialsOpt,
    QuietOpt,
    StoreOpt,
    TaskOpt,
    _fail,
    _names,
    _print_summary,
    app,
    console,
)
from c2np.errors import C2NPError


@app.command()
def evaluate(
    task: TaskOpt,
    split: EvalSplitOpt,
    predictions: Annotated[Path, typer.Option(help=(
        "Task 1: .parquet (config_id, Z or symbol, x, y, z) or .extxyz with config_id=<int>; "
        "Task 2: .csv or .parquet (config_id, a, b, c, alpha, beta, gamma, spacegroup). "
        "Examples: examples/."))],
    store: StoreOpt = DEFAULT_STORE,
    out: Annotated[Optional[Path], typer.Option(help="Write the result JSON here.")] = None,
    model: Annotated[Optional[str], typer.Option(
        help="Model name recorded in the result (default: the prediction file's name).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed recorded in the result.")] = None,
    length_rtol: Annotated[float, typer.Option(help="Task 2 joint accuracy: relative length tolerance.")] = 0.02,
    angle_atol: Annotated[float, typer.Option(help="Task 2 joint accuracy: angle tolerance (degrees).")] = 1.0,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Processes for Task 1 scoring.")] = 0,
    sample: Annotated[Optional[int], typer.Option(help=(
        "Score a seeded random subset (as `c2np predict --sample`): Task 1, k materials per "
        "radius; Task 2, k configurations per (material, R). Recorded in the result."))] = None,
    run_info: Annotated[Optional[Path], typer.Option(
        help="run.json of a `c2np train` run: its time per epoch, epochs, convergence, device and "
             "config are copied into the result, and the model's own loss on SPLIT (the report's "
             "Loss column) if `c2np predict` wrote test_loss-SPLIT.json beside it.")] = None,
    scores: Annotated[Optional[Path], typer.Option(
        help="Also write one row per sample (config_id, material, radius and that sample's scores) "
             "to this .parquet or .csv file: the rows behind every mean of the result, to find "
             "the few samples that move a mean.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Task 1: keep every 16 scored samples in OUT.chunks/ (needs --out), and continue "
                         "from there when an earlier call with the same predictions was cut off; the result "
                         "equals that of one uninterrupted call.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Score a prediction file with the official metrics (docs/metrics.md); --out writes the result JSON.

    Use `c2np targets` to list what must be predicted: every listed config_id needs a
    prediction (with --sample, every id of the sample). Invalid files (missing or duplicate
    ids, NaN, negative lengths, unknown species) are rejected with the first offenders.
    Walk-through: docs/evaluate-your-model.md.
    """
    from c2np.evaluation.evaluator import Evaluator, write_scores
    from c2np.metrics.lattice import Tolerances

    try:
        extra = None
        if run_info is not None:
            from c2np.training.results import run_extra

            extra = run_extra(run_info, split)
            model = model or extra["model_run"]["model"]
            seed = extra["model_run"]["seed"] if seed is None else seed
        if out is not None and out.is_dir():
            raise C2NPError(f"{out}: is a directory; give a file name for the result JSON")
        if resume and out is None:
            raise C2NPError("--resume keeps the scored samples beside the result: give --out FILE.json")
        # checked before scoring: a long Task 1 scoring must not end in a refused file name
        if scores is not None and scores.suffix.lower() not in (".parquet", ".csv"):
            raise C2NPError(f"{scores}: --scores takes a .parquet or .csv file name")
        model = model or predictions.stem
        ev = Evaluator(task, split, store, Tolerances(length_rtol, angle_atol), sample_per_group=sample)
        result, rows = ev.evaluate_with_scores(predictions, model=model, seed=seed,
                                               jobs=jobs or os.cpu_count() or 1, progress=not quiet,
                                               extra=extra, resume=out if resume else None)
    except C2NPError as exc:
        _fail(exc)
    try:
        if scores is not None:
            write_scores(rows, scores)
        if out is not None:
            Evaluator.save(result, out)
    except C2NPError as exc:
        _fail(exc)
    t = Table(title=f"Task {task} {split.upper()}: {result['n_samples']:,} samples")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        t.add_row(k, f"{v:.6g}")
    console.print(t)
    if out is not None:
        console.print(f"result written to {out}")
    else:
        console.print("not saved: add --out FILE.json to keep the result (with per-radius metrics) "
                      "for `c2np report`")


@app.command()
def targets(
    task: TaskOpt,
    split: EvalSplitOpt,
    out: Annotated[Path, typer.Option(help="CSV file to write.")],
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Write the list of samples to predict (config_id, material, radius) as CSV."""
    from c2np.evaluation.evaluator import Evaluator

    try:
        if out.is_dir():
            raise C2NPError(f"{out}: is a directory; give a file name for the CSV")
        frame = Evaluator(task, split, store).targets()
        out.parent.mkdir(parents=True, exist_ok=True)
        frame[["config_id", "material", "radius"]].to_csv(out, index=False)
    except OSError as exc:
        _fail(C2NPError(f"{out}: cannot write ({exc.strerror})"))
    except C2NPError as exc:
        _fail(exc)
    console.print(f"{len(frame):,} Task {task} {split} samples written to {out}")


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="Result JSON files (any models, seeds, tasks, splits).")],
    out: Annotated[Path, typer.Option(help="Directory for report.md, report.tex, raw.csv (and normalised.csv "
                                           "when Table 5 is shown).")]
        = Path("report"),
) -> None:
    """Tabulate results: raw metrics (mean ± std over seeds) and the paper's Table 5 scores.

    Table 5 scores rank models against each other, so they are shown only when at least 4
    learned models (not analytic, template or mean) share a task and split. Results of
    different stores or scored with different tolerances (Task 2) or metric definitions
    (Task 1), and a model's seeds scored on different samples, are refused (exit 2, nothing
    written): a table would average or rank them as scores of one measure.
    """
    from c2np.evaluation.evaluator import load_result

    try:
        loaded = [load_result(p) for p in results]
        _print_report(loaded, out)
    except C2NPError as exc:
        _fail(exc)


@app.command()
def baseline(
    model: Annotated[str, typer.Option(help="analytic (geometry, the ceiling), template (memorisation) or mean.")],
    task: TaskOpt,
    split: EvalSplitOpt,
    store: StoreOpt = DEFAULT_STORE,
    sample: Annotated[Optional[int], typer.Option(help=(
        "Score a seeded random subset, recorded in the result: Task 1, k materials per radius; "
        "Task 2, k configurations per (material, R)."))] = None,
    out: Annotated[Optional[Path], typer.Option(help="Result JSON (default results/{model}-task{T}-{split}.json).")]
        = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Processes.")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Run a reference solver through the evaluation harness and write its result JSON."""
    from c2np.evaluation.evaluator import Evaluator
    from c2np.solvers.runner import run_baseline

    out = out or Path("results") / f"{model}-task{task}-{split}.json"
    try:
        result = run_baseline(model, task, split, store, sample, jobs or os.cpu_count() or 1, not quiet)
        Evaluator.save(result, out)
    except C2NPError as exc:
        _fail(exc)
    console.print(f"{model} task {task} {split}: " + ", ".join(
        f"{k}={v:.4g}" for k, v in result["metrics"].items()) + f"  -> {out}")


def _print_report(results: list[dict], out: Path) -> None:
    """Write the report files to ``out``; show rich tables on a terminal, Markdown otherwise."""
    from c2np.reporting.tables import rich_tables, write_report

    text = write_report(results, out)
    if console.is_terminal:
        for item in rich_tables(results, console.width):
            console.print(item, highlight=False)
            console.print()
    else:
        console.print(text, soft_wrap=True, markup=False, highlight=False)
    files = ", ".join(p.name for p in sorted(out.iterdir()) if p.is_file())
    console.print(f"report written to {out}/ ({files})")


DEFAULT_SUBSET = 6
DEFAULT_PER_GROUP = 2


@app.command()
def run(
    store: Annotated[Path, typer.Argument(help="Store directory (built if absent).")] = DEFAULT_STORE,
    out: Annotated[Path, typer.Option(help="Directory for result JSONs and the report (not the "
                                           "tracked results/).")] = Path("c2np-run"),
    subset: Annotated[int, typer.Option(help="Materials scored by default (a seeded choice; every "
                                             "ID and OOD radius of each).")] = DEFAULT_SUBSET,
    per_group: Annotated[Optional[int], typer.Option(help=(
        f"Task 2: configurations per (material, R), the same for every model "
        f"(default {DEFAULT_PER_GROUP}; all with --full)."))] = None,
    full: Annotated[bool, typer.Option("--full", help=(
        "Every material and every configuration (hours: the estimate is printed first)."))] = False,
    seed: Annotated[int, typer.Option(help="Seed of the material subset.")] = 0,
    jobs: JobsOpt = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final table: no plan, "
                                                             "progress bars or stage lines.")] = False,
) -> None:
    """The first command to run: build the store if needed, score every reference row
    (analytic, template, mean) on both tasks and both test splits, print the results table.

    By default it scores a subset: 6 materials (seeded) at every ID and OOD radius; Task 1
    on each of their particles, Task 2 on 2 configurations per (material, R). It needs
    192 CPU-seconds with the store build: 112 s of wall time on the 2-core dev machine
    (measurements: README, "Two commands"). --full scores everything; its estimate is
    printed before it starts.
    """
    import time

    from c2np.config import BuildConfig
    from c2np.evaluation.evaluator import Evaluator
    from c2np.materials.catalogue import load_materials
    from c2np.progress import stage
    from c2np.solvers.runner import REFERENCE_ROWS, RunPlan, run_baseline, subset_materials
    from c2np.store.build import build_store
    from c2np.store.dataset import open_dataset

    jobs = jobs or os.cpu_count() or 1
    say = (lambda *a: None) if quiet else (lambda text: console.print(text, highlight=False, soft_wrap=True))
    try:
        if not (store / "manifest.json").exists():
            say(f"building the store in {store}/ (once)")
            summary = build_store(store, BuildConfig(), load_materials(), jobs=jobs, progress=not quiet)
            if not quiet:
                _print_summary(summary)
        ds = open_dataset(store)
        if full:
            plan = RunPlan(None, per_group)
        else:
            plan = RunPlan(subset_materials(ds, subset, seed), per_group or DEFAULT_PER_GROUP)
        counts = {(t, s): plan.samples(ds, t, s) for t in (1, 2) for s in ("id", "ood")}
        cpu = plan.cpu_seconds(ds)
        say(("full run: every material" if full else f"subset: {len(plan.materials)} materials "
             f"({', '.join(plan.materials)}), seed {seed}")
            + f"; Task 1: {counts[1, 'id']:,} ID + {counts[1, 'ood']:,} OOD particles; Task 2: "
            + f"{counts[2, 'id']:,} ID + {counts[2, 'ood']:,} OOD configurations per model.")
        say(f"estimate: {_duration(cpu)} of CPU time, about {_duration(cpu / jobs)} on {jobs} "
            f"process(es) (per-sample costs measured on the 2-core dev machine)"
            + ("" if full else "; `c2np run --full` scores everything"))
        results = []
        for split in ("id", "ood"):
            for model, task in REFERENCE_ROWS:
                name = f"{model} · task {task} · {split.upper()}"
                start = time.perf_counter()
                with stage(name):
                    res = run_baseline(model, task, split, ds, plan.per_group if task == 2 else None,
                                       jobs, not quiet, plan.materials)
                path = out / f"{model}-task{task}-{split}.json"
                Evaluator.save(res, path)
                results.append(res)
                say(f"{name}: {res['n_samples']:,} samples in {time.perf_counter() - start:.1f} s -> {path}")
    except C2NPError as exc:
        _fail(exc)
    _print_report(results, out / "report")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@app.command()
def sweep(
    store: StoreOpt = DEFAULT_STORE,
    out: Annotated[Path, typer.Option(help="Directory for noise_sweep.csv and noise_sweep.png.")] = Path("results"),
    per_group: Annotated[int, typer.Option(help="Configurations per (material, R).")] = 2,
    materials: MaterialsOpt = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Processes.")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Joint accuracy of the analytic Task 2 solver vs position noise and vacancies, per radius."""
    from c2np.solvers.robustness import plot_sweep
    from c2np.solvers.robustness import sweep as run_sweep
    from c2np.store.dataset import open_dataset

    try:
        ds = open_dataset(store)
        if materials is not None:
            ds = ds.filter(materials=_names(materials))
        table = run_sweep(ds, per_group=per_group, jobs=jobs or os.cpu_count() or 1,
                          progress=not quiet)
    except C2NPError as exc:
        _fail(exc)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "noise_sweep.csv", index=False)
    plot_sweep(table, out / "noise_sweep.png")
    console.print(table.pivot_table(index="radius", columns=["sigma", "vacancy"], values="joint").round(3).to_string())
    console.print(f"written {out}/noise_sweep.csv and {out}/noise_sweep.png")


