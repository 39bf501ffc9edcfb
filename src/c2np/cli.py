"""The ``c2np`` command line.

Typical session::

    c2np build                    # build the benchmark store in ./c2np-store (about a minute)
    c2np info c2np-store          # counts per split, atoms, size
    c2np verify c2np-store        # re-hash every file against the manifest
    c2np export xyz c2np-store out/ --materials LiBeH3 --radii 10
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from c2np.errors import C2NPError

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
export_app = typer.Typer(help="Write configurations as files (XYZ reference layout or extended XYZ).",
                         no_args_is_help=True)
materials_app = typer.Typer(help="The bundled unit cells: list them, or recompute them.",
                            no_args_is_help=True)
app.add_typer(export_app, name="export")
app.add_typer(materials_app, name="materials")
console = Console()
err = Console(stderr=True)

DEFAULT_STORE = Path("c2np-store")
StoreArg = Annotated[Path, typer.Argument(help="Store directory.")]
MaterialsOpt = Annotated[Optional[str], typer.Option(
    "--materials", "-m", help="Comma-separated material names (default: all).")]
RadiiOpt = Annotated[Optional[str], typer.Option(
    "--radii", "-r", help="Radii in Angstrom: '10,11' or ranges '6-9,30' (default: all).")]
SplitOpt = Annotated[Optional[str], typer.Option(
    "--split", "-s", help="Comma-separated splits: train, id, ood (default: all).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
TaskOpt = Annotated[int, typer.Option(help="1: unit cell + R -> particle; 2: particle -> lattice + space group.")]
EvalSplitOpt = Annotated[str, typer.Option(help="id or ood (train also accepted).")]
StoreOpt = Annotated[Path, typer.Option(help="The dataset store.")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (default: all cores).")]


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def parse_radii(text: str | None) -> list[int] | None:
    """Parse '6-9,30' into [6, 7, 8, 9, 30]."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise typer.BadParameter(f"cannot read radius {part!r}; use e.g. 10,11 or 6-9") from None
    return sorted(set(out))


def _fail(exc: C2NPError) -> None:
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def _print_summary(s) -> None:
    t = Table(title=f"C2NP store {s.store}", show_header=True)
    t.add_column("split")
    t.add_column("configurations", justify="right")
    for k in ("train", "id", "ood", "total"):
        t.add_row(k, f"{s.counts[k]:,}")
    console.print(t)
    console.print(f"atoms per particle: {s.atoms_min:,} to {s.atoms_max:,}; "
                  f"symmetric duplicates: {s.duplicates:,}; store size: {_size(s.size_bytes)}")
    if s.up_to_date:
        console.print("store was already built with this configuration: nothing to do")
    else:
        console.print(f"built in {s.seconds:.1f} s ({s.reused} materials reused from an earlier run)")


@app.command()
def build(
    store: Annotated[Path, typer.Argument(help="Output store directory.")] = DEFAULT_STORE,
    config: Annotated[Optional[Path], typer.Option(
        help="TOML build configuration (see `c2np.config`); default: the benchmark's.")] = None,
    cifs: Annotated[Optional[Path], typer.Option(
        help="Directory of your own *.cif unit cells to use instead of the bundled 81.")] = None,
    materials: MaterialsOpt = None,
    jobs: JobsOpt = 0,
    dedup: Annotated[bool, typer.Option(
        "--dedup", help="Drop configurations that duplicate an earlier one by symmetry.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a store that was built with another configuration.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Build the dataset store: carve every material at every radius, sample orientations,
    assign splits, flag symmetric duplicates, write Parquet files and a hashed manifest.

    Deterministic: the same configuration gives byte-identical files. Interrupted builds
    resume when the same command is run again.
    """
    from c2np.config import load_config
    from c2np.materials.catalogue import load_materials
    from c2np.store.build import build_store

    try:
        cfg = load_config(config)
        if dedup:
            cfg = cfg.with_overrides(drop_duplicates=True)
        mats = load_materials(cifs, _names(materials))
        summary = build_store(store, cfg, mats, jobs=jobs or os.cpu_count() or 1, force=force,
                              progress=not quiet)
    except C2NPError as exc:
        _fail(exc)
    _print_summary(summary)


@app.command()
def info(store: StoreArg = DEFAULT_STORE) -> None:
    """Summarise a built store: counts per split, atom-count range, size, versions."""
    from c2np.store.build import summarise
    from c2np.store.manifest import read_manifest

    try:
        manifest = read_manifest(store)
        _print_summary(summarise(store, up_to_date=True))
    except C2NPError as exc:
        _fail(exc)
    console.print(f"fingerprint {manifest['fingerprint'][:16]}..., built with "
                  + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()))


@app.command()
def verify(store: StoreArg = DEFAULT_STORE) -> None:
    """Re-hash every file of a store against its manifest; exit 1 if anything differs."""
    from c2np.store.manifest import verify_store

    try:
        problems = verify_store(store)
    except C2NPError as exc:
        _fail(exc)
    if problems:
        for p in problems:
            err.print(f"[red]{p}[/]")
        err.print(f"[bold red]{len(problems)} problem(s)[/]: rebuild with `c2np build {store} --force`")
        raise typer.Exit(1)
    console.print(f"[green]ok[/]: every file of {store} matches its manifest")


def _select(store: Path, materials: str | None, radii: str | None, split: str | None):
    from c2np.store.dataset import open_dataset

    ds = open_dataset(store)
    return ds.filter(materials=_names(materials), radii=parse_radii(radii), splits=_names(split))


@export_app.command("xyz")
def export_xyz_cmd(store: StoreArg, out: Annotated[Path, typer.Argument(help="Output directory.")],
                   materials: MaterialsOpt = None, radii: RadiiOpt = None, split: SplitOpt = None,
                   quiet: QuietOpt = False) -> None:
    """Write the reference layout: quaternions/{M}/R{r}/xyz/rot_{k}.xyz and cifs/{M}.cif.

    The whole dataset is about 30 GB in this layout; filter with --materials/--radii/--split.
    """
    from c2np.export import estimated_bytes, export_xyz

    try:
        ds = _select(store, materials, radii, split)
        err.print(f"{len(ds):,} configurations, about {_size(estimated_bytes(ds))}")
        n = export_xyz(ds, out, progress=not quiet)
    except (C2NPError, ValueError) as exc:
        _fail(C2NPError(str(exc)))
    console.print(f"wrote {n:,} files under {out}")


@export_app.command("extxyz")
def export_extxyz_cmd(store: StoreArg, out: Annotated[Path, typer.Argument(help="Output .extxyz file.")],
                      materials: MaterialsOpt = None, radii: RadiiOpt = None, split: SplitOpt = None,
                      quiet: QuietOpt = False) -> None:
    """Write one extended-XYZ file; each frame's comment carries material, radius, split,
    quaternion, the rotated unit-cell vectors, cell parameters and space group."""
    from c2np.export import estimated_bytes, export_extxyz

    try:
        ds = _select(store, materials, radii, split)
        err.print(f"{len(ds):,} configurations, about {_size(estimated_bytes(ds))}")
        n = export_extxyz(ds, out, progress=not quiet)
    except (C2NPError, ValueError) as exc:
        _fail(C2NPError(str(exc)))
    console.print(f"wrote {n:,} frames to {out}")


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
        help="run.json of a `c2np train` run: its time per epoch, epochs, device and config "
             "are copied into the result.")] = None,
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

            extra = run_extra(run_info)
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
    console.print(write_report(loaded, out))
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
    console.print(write_report(results, out / "report"))
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


@materials_app.command("list")
def materials_list(cifs: Annotated[Optional[Path], typer.Option(
        help="List a directory of your own CIFs instead of the bundled set.")] = None) -> None:
    """Show the unit cells: formula, space group, lattice parameters, provenance."""
    from c2np.materials.catalogue import describe, load_materials

    try:
        mats = load_materials(cifs)
    except C2NPError as exc:
        _fail(exc)
    t = Table(title=f"{len(mats)} materials")
    for col in ("name", "space group", "a", "b", "c", "alpha", "beta", "gamma", "atoms"):
        t.add_column(col, justify="right" if col not in ("name", "space group") else "left")
    for m in mats:
        d = describe(m.name, m.cell)
        t.add_row(m.name, f"{d['spacegroup_symbol']} ({d['spacegroup_number']})",
                  *(f"{d[k]:.4f}" for k in ("a", "b", "c")),
                  *(f"{d[k]:.2f}" for k in ("alpha", "beta", "gamma")), str(d["atoms_per_cell"]))
    console.print(t)


@materials_app.command("relax")
def materials_relax(
    work: Annotated[Path, typer.Option(help="Directory for relaxed CIFs and energies (resumable).")]
        = Path("relaxed"),
    out: Annotated[Optional[Path], typer.Option(
        help="Write the catalogue (cifs/ + materials.csv) here when all are done.")] = None,
    only: MaterialsOpt = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes.")] = 1,
    quiet: QuietOpt = False,
) -> None:
    """Recompute the bundled unit cells with CHGNet (needs `pip install c2np[relax]`).

    For each ABH3 composition, relax five perovskite prototypes (Pm-3m, Pnma, R-3c,
    I4/mcm, P4/mbm), keep the lowest energy per atom and symmetrise it with spglib.
    About 40 s per composition on one core.
    """
    try:
        import chgnet  # noqa: F401
    except ImportError:
        err.print("[bold red]error:[/] CHGNet is not installed: pip install 'c2np[relax]'")
        raise typer.Exit(2) from None
    from c2np.materials.relax import relax_all, write_catalogue

    done = relax_all(work, _names(only), jobs=jobs, progress=not quiet)
    console.print(f"relaxed {len(done)} compositions into {work}")
    if out is not None:
        table = write_catalogue(work, out)
        console.print(f"wrote {len(table)} materials to {out}")


def _particle_stats(store: Path, materials: str | None, radii: str | None, jobs: int, quiet: bool):
    from c2np.analysis.statistics import particle_table

    return particle_table(store, _names(materials), parse_radii(radii),
                          jobs=jobs or os.cpu_count() or 1, progress=not quiet)


@app.command()
def stats(
    store: StoreArg = DEFAULT_STORE,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", "-f", help="Also write the tables to --out as csv (tidy: section,row,column,value), "
                               "json or md.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output file for --format.")] = None,
    lattice_only: Annotated[bool, typer.Option(
        "--lattice-only", help="Only the unit-cell tables (instant; skips the particles).")] = False,
    materials: MaterialsOpt = None, radii: RadiiOpt = None, jobs: JobsOpt = 0, quiet: QuietOpt = False,
) -> None:
    """Dataset statistics (paper Sections 3.4-3.11): lattice distributions, ratios and
    correlations, space groups, A/B sites, and per radius atom counts, hull volume,
    densities, radius of gyration, shortest distance and surface fraction.

    Particle statistics use the canonical particles, except the bounding-box density,
    which is averaged over every rotated configuration. Definitions: docs/dataset.md.
    About 20 s for the whole store on 2 cores.

    Example: c2np stats c2np-store --format md --out stats.md
    """
    from c2np.analysis.stats_tables import FORMATS, dataset_tables, rich_tables, write_tables
    from c2np.store.dataset import open_dataset

    if (fmt is None) != (out is None):
        raise typer.BadParameter("--format and --out go together")
    if fmt is not None and fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    try:
        ds = open_dataset(store)
        mats = ds.materials
        if materials is not None:
            for m in _names(materials):
                ds.check_material(m)
            mats = mats[mats["name"].isin(_names(materials))]
        particles = None if lattice_only else _particle_stats(store, materials, radii, jobs, quiet)
        tables = dataset_tables(mats, particles)
    except C2NPError as exc:
        _fail(exc)
    for t in rich_tables(tables):
        console.print(t)
    if fmt is not None:
        console.print(f"wrote {write_tables(tables, out, fmt)}")


@app.command()
def plot(
    store: StoreArg = DEFAULT_STORE,
    out: Annotated[Path, typer.Option(help="Output directory for the figures.")] = Path("figures"),
    figure: Annotated[str, typer.Option(help="Which figures: 2, 3 or 2,3.")] = "2,3",
    fig2_materials: Annotated[Optional[str], typer.Option(
        "--fig2-materials", help="Figure 2 columns (default: ZrCdH3,LiBeH3,LiCaH3,BaMnH3,KMgH3).")] = None,
    jobs: JobsOpt = 0, quiet: QuietOpt = False,
) -> None:
    """Draw the paper's Figure 2 (unit cell, R=10 and R=30 particles of five materials)
    and Figure 3 (twelve panels a-l, one PNG + PDF each, plus the composite).

    Under a minute for the whole store on 2 cores.

    Example: c2np plot c2np-store --out figures/
    """
    from c2np.analysis.figures import FIGURE2_MATERIALS, Figure3Data, figure2, figure3
    from c2np.store.dataset import open_dataset

    which = {w.strip() for w in figure.split(",") if w.strip()}
    if not which or which - {"2", "3"}:
        raise typer.BadParameter("--figure takes 2, 3 or 2,3")
    try:
        ds = open_dataset(store)
        paths = []
        if "3" in which:
            particles = _particle_stats(store, None, None, jobs, quiet)
            paths += figure3(Figure3Data.from_tables(ds.materials, particles), out)
        if "2" in which:
            names = _names(fig2_materials) or list(FIGURE2_MATERIALS)
            for m in names:
                ds.check_material(m)
            paths += figure2(ds, out, names)
    except C2NPError as exc:
        _fail(exc)
    console.print(f"wrote {len(paths)} files to {out}")


@app.command()
def view(
    material: Annotated[str, typer.Argument(help="Material name, e.g. LiBeH3.")],
    radius: Annotated[int, typer.Argument(help="Radius in Angstrom (6-30).")],
    rotation: Annotated[int, typer.Option(
        help="rotation_id within (material, R): 0 is the unrotated particle.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Output .html (default: MATERIAL_R{R}_rot{K}.html).")] = None,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Write an interactive 3D page of one configuration and its unit cell.

    The page is one self-contained HTML file (data and renderer inline): open it in any
    browser, offline. Drag to rotate, wheel to zoom, buttons switch particle / unit cell.

    Example: c2np view LiBeH3 10 --rotation 5 --out libeh3.html
    """
    from c2np.analysis.viewer import configuration_page, write_page
    from c2np.store.dataset import open_dataset

    try:
        html = configuration_page(open_dataset(store), material, radius, rotation)
    except C2NPError as exc:
        _fail(exc)
    path = write_page(html, out or Path(f"{material}_R{radius}_rot{rotation}.html"))
    console.print(f"wrote {path} ({_size(path.stat().st_size)})")


ModelOpt = Annotated[str, typer.Option(help="cdvae or symat.")]


def _torch_missing() -> None:
    try:
        import pytorch_lightning  # noqa: F401
        import torch_geometric  # noqa: F401
    except ImportError:
        err.print("[bold red]error:[/] the learned baselines need PyTorch, PyG and Lightning: "
                  "pip install -e '.[torch]'")
        raise typer.Exit(2) from None


@app.command()
def train(
    task: TaskOpt,
    model: ModelOpt,
    seed: Annotated[int, typer.Option(help="Seed of weights, batches, noise and rotations.")] = 0,
    store: StoreOpt = DEFAULT_STORE,
    out: Annotated[Path, typer.Option(help="Runs directory; the run goes to OUT/{model}-task{t}-seed{s}.")] = Path("runs"),
    config: Annotated[Optional[Path], typer.Option(
        help="TOML config (default: the bundled c2np/training/configs/{model}_task{t}.toml).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a config key: --set train.epochs=5 --set model.hidden=32 (repeatable).")] = None,
    devices: Annotated[str, typer.Option(
        help="Lightning devices: auto, a count (2 = DDP on two GPUs) or a list like 0,1.")] = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Train a learned baseline (PyTorch Lightning; a GPU is used when present).

    Writes last.ckpt, metrics.csv (losses per epoch) and run.json (config, time per
    epoch, device, parameters). Then `c2np predict` and `c2np evaluate --run-info`.

    Example: c2np train --task 2 --model cdvae --seed 0 --set train.epochs=20
    """
    _torch_missing()
    from c2np.training.configs import load_training_config
    from c2np.training.run import train as fit

    try:
        cfg = load_training_config(model, task, config, set_)
        info = fit(cfg, store, out, seed, progress=not quiet,
                   devices=int(devices) if devices.isdigit() else devices)
    except (C2NPError, ValueError) as exc:
        _fail(C2NPError(str(exc)))
    console.print(f"{info['model']} task {task} seed {seed}: {info['epochs']} epochs, "
                  f"{info['time_per_epoch']:.2f} s/epoch on {info['device']}, final loss "
                  f"{info['final_train_loss']:.4g}; checkpoint {info['checkpoint']}")


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Option(help="last.ckpt of a `c2np train` run.")],
    split: EvalSplitOpt,
    out: Annotated[Path, typer.Option(help="Prediction file: Task 1 .parquet; Task 2 .csv or .parquet.")],
    store: StoreOpt = DEFAULT_STORE,
    seed: Annotated[int, typer.Option(help="Sampling seed (Task 1 latents, species order, Langevin noise).")] = 0,
    all_rotations: Annotated[bool, typer.Option(
        "--all-rotations", help="Task 2: run the model on every rotated configuration instead of once "
                                "per (material, R) (same numbers for these invariant models, 60-164x slower).")] = False,
    sample: Annotated[Optional[int], typer.Option(help=(
        "Task 1: generate only k seeded random materials per radius (score with "
        "`c2np evaluate --sample k`)."))] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a trained model's predictions for the ID or OOD split in the harness's format.

    Example: c2np predict --checkpoint runs/cdvae-task2-seed0/last.ckpt --split ood --out preds.csv
    """
    _torch_missing()
    from c2np.training.predict import predict as run_predict

    if not checkpoint.exists():
        _fail(C2NPError(f"{checkpoint}: no such checkpoint; train first with `c2np train`"))
    try:
        path = run_predict(checkpoint, store, split, out, seed=seed, all_rotations=all_rotations,
                           sample=sample, progress=not quiet)
    except (C2NPError, ValueError) as exc:
        _fail(C2NPError(str(exc)))
    console.print(f"wrote {path}")


def main() -> None:
    """Entry point of the ``c2np`` script."""
    app()


if __name__ == "__main__":
    sys.exit(main())
