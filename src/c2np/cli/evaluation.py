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
        "Task 1: .parquet (config_id, Z|symbol, x, y, z) or .extxyz with config_id=<int>; "
        "Task 2: .csv/.parquet (config_id, a, b, c, alpha, beta, gamma, spacegroup)."))],
    store: StoreOpt = DEFAULT_STORE,
    out: Annotated[Optional[Path], typer.Option(help="Write the result JSON here.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name recorded in the result.")] = None,
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
    quiet: QuietOpt = False,
) -> None:
    """Score a prediction file with the official metrics (docs/metrics.md) and print/write the result.

    Use `c2np targets` to list what must be predicted. Invalid files (missing or duplicate
    ids, NaN, negative lengths, unknown species) are rejected with the first offenders.
    """
    import json

    from c2np.evaluation.evaluator import Evaluator
    from c2np.metrics.lattice import Tolerances

    try:
        extra = None
        if run_info is not None:
            from c2np.training.results import run_extra

            extra = run_extra(run_info, split)
            model = model or extra["model_run"]["model"]
            seed = extra["model_run"]["seed"] if seed is None else seed
        ev = Evaluator(task, split, store, Tolerances(length_rtol, angle_atol), sample_per_group=sample)
        result = ev.evaluate(predictions, model=model, seed=seed, jobs=jobs or os.cpu_count() or 1,
                             progress=not quiet, extra=extra)
    except C2NPError as exc:
        _fail(exc)
    if out is not None:
        Evaluator.save(result, out)
    t = Table(title=f"Task {task} {split.upper()}: {result['n_samples']:,} samples")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        t.add_row(k, f"{v:.6g}")
    console.print(t)
    if out is not None:
        console.print(f"result written to {out}")
    else:
        console.print_json(json.dumps({k: v for k, v in result.items() if k != "per_radius"}))


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
        frame = Evaluator(task, split, store).targets()
    except C2NPError as exc:
        _fail(exc)
    columns = ["config_id", "material", "radius"]
    frame[columns].to_csv(out, index=False)
    console.print(f"{len(frame):,} Task {task} {split} samples written to {out}")


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="Result JSON files (any models, seeds, tasks, splits).")],
    out: Annotated[Path, typer.Option(help="Directory for report.md, report.tex, raw.csv, normalised.csv.")]
        = Path("report"),
) -> None:
    """Tabulate results: raw metrics (mean ± std over seeds) and the paper's Table 5 scores."""
    from c2np.evaluation.evaluator import load_result
    from c2np.reporting.tables import write_report

    try:
        loaded = [load_result(p) for p in results]
    except C2NPError as exc:
        _fail(exc)
    console.print(write_report(loaded, out), markup=False)
    console.print(f"\nwritten to {out}/report.md, report.tex, raw.csv, normalised.csv")


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

    try:
        result = run_baseline(model, task, split, store, sample, jobs or os.cpu_count() or 1, not quiet)
    except C2NPError as exc:
        _fail(exc)
    out = out or Path("results") / f"{model}-task{task}-{split}.json"
    Evaluator.save(result, out)
    console.print(f"{model} task {task} {split}: " + ", ".join(
        f"{k}={v:.4g}" for k, v in result["metrics"].items()) + f"  -> {out}")


@app.command()
def run(
    store: Annotated[Path, typer.Argument(help="Store directory (built if absent).")] = DEFAULT_STORE,
    out: Annotated[Path, typer.Option(help="Directory for result JSONs and the report.")] = Path("results/run"),
    sample: Annotated[int, typer.Option(help="Task 2 analytic solver: configurations per (material, R).")] = 2,
    jobs: JobsOpt = 0,
) -> None:
    """The default benchmark run: build the store if needed, run every reference solver on
    both tasks and both test splits, and print the results table (about 8 minutes on 2 cores).

    Task 1 is scored on every sample; the analytic Task 2 solver on SAMPLE random
    configurations per (material, R) (recorded in each result); template and mean on all.
    """
    from c2np.config import BuildConfig
    from c2np.evaluation.evaluator import Evaluator
    from c2np.materials.catalogue import load_materials
    from c2np.reporting.tables import write_report
    from c2np.solvers.runner import run_baseline
    from c2np.store.build import build_store
    from c2np.store.dataset import open_dataset

    jobs = jobs or os.cpu_count() or 1
    plan = [("analytic", 1, None), ("template", 1, None), ("analytic", 2, sample),
            ("template", 2, None), ("mean", 2, None)]
    try:
        if not (store / "manifest.json").exists():
            _print_summary(build_store(store, BuildConfig(), load_materials(), jobs=jobs))
        ds = open_dataset(store)
        results = []
        for split in ("id", "ood"):
            for model, task, k in plan:
                res = run_baseline(model, task, split, ds, k, jobs, progress=True)
                Evaluator.save(res, out / f"{model}-task{task}-{split}.json")
                results.append(res)
    except C2NPError as exc:
        _fail(exc)
    console.print(write_report(results, out / "report"), markup=False)
    console.print(f"\nresults in {out}/, tables in {out}/report/")


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


