"""Commands over the dataset store: build, info, verify, export, materials."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from c2np.cli.common import (
    DEFAULT_STORE,
    JobsOpt,
    MaterialsOpt,
    QuietOpt,
    RadiiOpt,
    SplitOpt,
    StoreArg,
    _fail,
    fail_line,
    _names,
    _print_summary,
    _size,
    app,
    console,
    err,
    export_app,
    materials_app,
    parse_radii,
)
from c2np.errors import C2NPError


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
    """Re-hash every file of a store against its manifest; exit 1 if anything differs.

    This is the same check `open_dataset` and every command that reads a store run first.
    """
    from c2np.store.layout import OWNED
    from c2np.store.manifest import check_store

    try:
        problems = check_store(store).problems
    except C2NPError as exc:
        _fail(exc)
    if problems:
        for p in problems:
            err.print(p, style="red")
        strays = sorted({p.split(": ", 1)[1].split(" ")[0].split("/")[0] for p in problems
                         if p.startswith("unexpected")} - set(OWNED))
        fix = (f"remove {', '.join(strays)} from {store}, then rebuild with `c2np build {store} --force`"
               if strays else f"rebuild with `c2np build {store} --force`")
        err.print(f"{len(problems)} problem(s): {fix}", style="bold red")
        raise typer.Exit(1)
    console.print(f"ok: every file of {store} matches its manifest", style="green")


def _select(store: Path, materials: str | None, radii: str | None, split: str | None):
    from c2np.store.dataset import open_dataset

    ds = open_dataset(store)
    return ds.filter(materials=_names(materials), radii=parse_radii(radii), splits=_names(split))


@export_app.command("xyz")
def export_xyz_cmd(store: StoreArg, out: Annotated[Path, typer.Argument(help="Output directory (new, or an unfinished export to resume).")],
                   materials: MaterialsOpt = None, radii: RadiiOpt = None, split: SplitOpt = None,
                   jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes, one material each (default: all cores).")] = 0,
                   quiet: QuietOpt = False) -> None:
    """Write the authors' reference layout, byte for byte: quaternions/{M}/R{r}/xyz/rot_{k}.xyz
    and cifs/{M}.cif.

    The whole dataset is 171,234 files and 33.8 GB in this layout (the Parquet store holds
    the same in 14 MB); select with --materials/--radii/--split. Each material is written
    into a hidden folder and renamed into place when complete; while the export runs, the
    output folder holds an EXPORT_INCOMPLETE marker, and running the same command again
    resumes an interrupted export.

    Example: c2np export xyz c2np-store xyz-out --materials LiBeH3 --radii 10,11
    """
    from c2np.export import estimated_bytes, export_xyz

    try:
        ds = _select(store, materials, radii, split)
        if not quiet:
            err.print(f"{len(ds):,} configurations, {_size(estimated_bytes(ds))} to write")
        n = export_xyz(ds, out, progress=not quiet, jobs=jobs or os.cpu_count() or 1)
    except (C2NPError, ValueError) as exc:
        _fail(C2NPError(str(exc)))
    if not quiet:
        console.print(f"wrote {n:,} files under {out}")


@export_app.command("extxyz")
def export_extxyz_cmd(store: StoreArg, out: Annotated[Path, typer.Argument(help="Output .extxyz file.")],
                      materials: MaterialsOpt = None, radii: RadiiOpt = None, split: SplitOpt = None,
                      quiet: QuietOpt = False) -> None:
    """Write one extended-XYZ file; each frame's comment carries material, radius, split,
    quaternion, the rotated unit-cell vectors, cell parameters and space group.

    Example: c2np export extxyz c2np-store ood.extxyz --split ood --materials KMgH3
    """
    from c2np.export import estimated_bytes, export_extxyz

    try:
        ds = _select(store, materials, radii, split)
        if not quiet:
            err.print(f"{len(ds):,} configurations, {_size(estimated_bytes(ds, 'extxyz'))} to write")
        n = export_extxyz(ds, out, progress=not quiet)
    except (C2NPError, ValueError) as exc:
        _fail(C2NPError(str(exc)))
    if not quiet:
        console.print(f"wrote {n:,} frames to {out}")


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
        fail_line("CHGNet is not installed: pip install 'c2np[relax]'")
        raise typer.Exit(2) from None
    from c2np.materials.relax import relax_all, write_catalogue

    done = relax_all(work, _names(only), jobs=jobs, progress=not quiet)
    console.print(f"relaxed {len(done)} compositions into {work}")
    if out is not None:
        table = write_catalogue(work, out)
        console.print(f"wrote {len(table)} materials to {out}")


