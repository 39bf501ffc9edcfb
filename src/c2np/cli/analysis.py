"""Commands that look at the data: stats, plot, view."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from c2np.cli.common import (
    DEFAULT_STORE,
    JobsOpt,
    MaterialsOpt,
    QuietOpt,
    RadiiOpt,
    StoreArg,
    StoreOpt,
    _fail,
    _names,
    _size,
    app,
    console,
    parse_radii,
)
from c2np.errors import C2NPError


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
    About 29 s of wall time (54 s of CPU) for the whole store on an idle 2-core machine.

    Example: c2np stats c2np-store --format md --out stats.md
    """
    from c2np.analysis.stats_tables import (
        FORMATS,
        dataset_tables,
        rich_tables,
        write_tables,
    )
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


