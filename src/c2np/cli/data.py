"""Commands over the dataset store: build, info, verify, export, materials."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
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
    split_scheme: Annotated[Optional[str], typer.Option(
        "--split-scheme", help="radius (the paper's splits, default) or materials: also hold out a "
                               "stratified fold of about 20% of the materials, every radius of them "
                               "test data (docs/splits.md). Overrides [splits] scheme of --config.")] = None,
    fold: Annotated[Optional[int], typer.Option(
        help="Materials scheme: which of the 5 fixed folds to hold out (0-4, default 0); "
             "build one store per fold for k-fold error bars over materials.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a store that was built with another configuration.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Build the dataset store: carve every material at every radius, sample orientations,
    assign splits, flag symmetric duplicates, write Parquet files and a hashed manifest.

    Deterministic: the same configuration gives byte-identical files. Interrupted builds
    resume when the same command is run again.

    Example: c2np build c2np-store-materials --split-scheme materials
    """
    from c2np.config import load_config
    from c2np.materials.catalogue import load_materials
    from c2np.store.build import build_store

    try:
        cfg = load_config(config)
        if dedup:
            cfg = cfg.with_overrides(drop_duplicates=True)
        if split_scheme is not None:
            cfg = cfg.with_overrides(split_scheme=split_scheme)
        if fold is not None:
            if cfg.split_scheme != "materials":
                raise typer.BadParameter("--fold needs --split-scheme materials")
            cfg = cfg.with_overrides(material_fold=fold)
        mats = load_materials(cifs, _names(materials))
        summary = build_store(store, cfg, mats, jobs=jobs or os.cpu_count() or 1, force=force,
                              progress=not quiet)
    except C2NPError as exc:
        _fail(exc)
    _print_summary(summary)


@app.command()
def info(store: StoreArg = DEFAULT_STORE) -> None:
    """Summarise a built store: split scheme, counts per split (held-out materials for the
    materials scheme), atom-count range, size, versions."""
    from c2np.store.build import summarise
    from c2np.store.manifest import listed_fingerprint, read_manifest

    try:
        manifest = read_manifest(store)
        _print_summary(summarise(store, up_to_date=True), after_build=False)
    except C2NPError as exc:
        _fail(exc)
    console.print(f"fingerprint {manifest['fingerprint'][:16]}..., built with "
                  + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()))
    # the hash of the files as the manifest lists them (`c2np verify` checks the bytes):
    # what every result JSON records as store_fingerprint, and what `c2np report` compares
    content = listed_fingerprint(manifest["files"])
    console.print(f"content fingerprint {content[:16]}... (results scored on this store record it as "
                  "store_fingerprint)")


DOC_BEGIN, DOC_END = "<!-- heldout-materials:begin -->", "<!-- heldout-materials:end -->"


@app.command()
def splits(
    store: StoreArg = DEFAULT_STORE,
    doc: Annotated[Optional[Path], typer.Option(
        help="Markdown file whose block between the lines <!-- heldout-materials:begin --> and "
             "<!-- heldout-materials:end --> is replaced by the table (docs/splits.md).")] = None,
) -> None:
    """Show which materials a store of the materials scheme holds out, with their folds.

    The folds are drawn from the store's own materials table (space group and A-site
    species strata, seeded), so this table follows the cells actually built.

    Example: c2np splits c2np-store-materials --doc docs/splits.md
    """
    from c2np.material_holdout import holdout_table
    from c2np.store.dataset import open_dataset

    try:
        ds = open_dataset(store)
        table = holdout_table(ds.materials, ds.config)
    except C2NPError as exc:
        _fail(exc)
    except ValueError as exc:
        _fail(C2NPError(f"{store}: {exc}"))
    counts = ds.index.groupby("split").size()
    held = table[table["heldout"]]
    lines = [f"Split scheme `{ds.split_scheme}`: {len(held)} of {len(table)} materials held out; "
             "configurations per split: " + ", ".join(f"{s} {int(counts.get(s, 0)):,}" for s in ds.splits)
             + ".", "", "| held-out material | space group | A | B | training materials of its space group |",
             "|---|---|---|---|---|"]
    per_group = table[~table["heldout"]].groupby("spacegroup_number").size()
    for r in held.itertuples():
        lines.append(f"| {r.name} | {r.spacegroup_symbol} ({r.spacegroup_number}) | {r.A} | {r.B} | "
                     f"{int(per_group.get(r.spacegroup_number, 0))} |")
    text = "\n".join(lines)
    console.print(text)
    if doc is not None:
        body = doc.read_text() if doc.exists() else ""
        if DOC_BEGIN not in body or DOC_END not in body:
            _fail(C2NPError(f"{doc}: no {DOC_BEGIN} ... {DOC_END} block to replace"))
        head, rest = body.split(DOC_BEGIN, 1)
        doc.write_text(f"{head}{DOC_BEGIN}\n{text}\n{DOC_END}{rest.split(DOC_END, 1)[1]}")
        console.print(f"updated {doc}")


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
    the same in 12.5 MB); select with --materials/--radii/--split. Each material is written
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


CHECK_FORMATS = ("table", "csv", "json", "md")


@materials_app.command("check")
def materials_check(
    cifs: Annotated[Optional[Path], typer.Option(
        help="Check a directory of your own ABH3 CIFs (A = the larger cation) instead.")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help=f"Output format: {', '.join(CHECK_FORMATS)}.")] = "table",
    out: Annotated[Optional[Path], typer.Option(help="Write to this file instead of stdout.")]
        = None,
) -> None:
    """Is each cell a perovskite, and does its space-group label rest on a real distortion?

    Per material: the octahedral cation and its H coordination number (CN), B-H bond
    range and the next H beyond it, corner-sharing BH6 octahedra yes/no, Goldschmidt
    tolerance factor t (Shannon radii), tilt (largest H offset from the B-B midpoint, A),
    and the symprec interval (A) over which spglib's space group stays the same. The
    label policy asks for a stable label from 0.001 to 0.1 A (docs/materials.md).
    Exit code 1 if a label is unstable or a non-perovskite cell has no recorded reason.

    Example: c2np materials check --format md --out check.md
    """
    import pandas as pd

    from c2np.analysis.stats_tables import _markdown
    from c2np.materials.catalogue import bundled_dir, load_materials, sites
    from c2np.materials.validity import check_cell

    if fmt not in CHECK_FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(CHECK_FORMATS)}")
    try:
        mats = load_materials(cifs)
        named = ({} if cifs is not None else
                 {r["name"]: r for r in pd.read_csv(bundled_dir() / "materials.csv",
                                                      keep_default_na=False).to_dict("records")})
        rows = []
        for m in mats:
            ab = (named[m.name]["A"], named[m.name]["B"]) if m.name in named else sites(m.cell)
            c = check_cell(m.cell, *ab)
            note = named.get(m.name, {}).get("selection", "")
            rows.append({"name": m.name, **c.row(), "octahedral": c.octahedral,
                         "label_stable": c.label_stable, "selection": note})
    except C2NPError as exc:
        _fail(exc)
    table = pd.DataFrame(rows)
    unexplained = table[~table["octahedral"] & (table["selection"].str.find("not a perovskite") < 0)]
    unstable = table[~table["label_stable"]]
    if fmt == "table":
        t = Table(title=f"{len(table)} materials: label policy symprec 0.001-0.1 A")
        for col in ("name", "SG", "B", "CN", "B-H (A)", "next H", "corner", "t", "tilt (A)",
                    "stable symprec (A)"):
            t.add_column(col, justify="left" if col in ("name", "B") else "right")
        for r in rows:
            ok = "green" if r["label_stable"] else "red"
            t.add_row(r["name"], str(r["spacegroup_number"]), r["octahedral_cation"],
                      str(r["b_coordination"]), f"{r['b_h_min']:.3f}-{r['b_h_max']:.3f}",
                      f"{r['next_h']:.2f}", "yes" if r["corner_sharing"] else "[yellow]no[/]",
                      f"{r['tolerance_factor']:.3f}", f"{r['tilt']:.3f}",
                      f"[{ok}]{r['symprec_min']:.2g}-{r['symprec_max']:.2g}[/]")
        (Console(file=out.open("w"), width=200) if out else console).print(t)
    else:
        text = {"csv": lambda: table.to_csv(index=False),
                "json": lambda: table.to_json(orient="records", indent=1),
                "md": lambda: _markdown(table)}[fmt]()
        if out:
            out.write_text(text + "\n")
        else:
            typer.echo(text)
    err.print(f"{int(table['octahedral'].sum())} of {len(table)} corner-sharing octahedral; "
              f"{len(unstable)} unstable label(s); {len(unexplained)} non-perovskite cell(s) "
              "without a recorded reason")
    if len(unstable) or (cifs is None and len(unexplained)):
        raise typer.Exit(1)


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

    For each ABH3 composition, relax the perovskite prototypes (Pm-3m, Pnma, R-3c,
    I4/mcm, P4/mbm), the hexagonal 2H stacking and, for an alkaline-earth B, the inverse
    cubic and Pnma cells; then apply the label policy (docs/materials.md): symmetrise
    each at symprec 0.1 A and re-relax, prefer a corner-sharing octahedral perovskite
    within 25 meV/atom of the lowest energy, and the higher symmetry within 5 meV/atom.
    17-330 s per composition on one core (median 60 s, measured on the lent GPU machine).
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


