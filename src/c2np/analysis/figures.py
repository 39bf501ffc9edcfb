"""The paper's Figure 2 (unit cells and carved particles) and Figure 3 (twelve panels a-l).

Every Figure 3 panel is one function ``(ax, data) -> None`` so that the single-panel files
and the composite are drawn by the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from c2np.analysis.statistics import CORRELATION_PAIRS, ParticleStatistics, lattice_table

#: Figure 2's columns. The paper lists ZrCdH3, LiBeH3, LiCaH3, BaMnH3 and LiBeH3 again;
#: the repeat is replaced by the cubic KMgH3 so that five different cells are shown.
FIGURE2_MATERIALS = ("ZrCdH3", "LiBeH3", "LiCaH3", "BaMnH3", "KMgH3")
FIGURE2_RADII = (10, 30)
FORMATS = ("png", "pdf")


def _style():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
                         "legend.fontsize": 9, "figure.dpi": 110, "savefig.bbox": "tight",
                         "pdf.fonttype": 42})
    return plt


@dataclass
class Figure3Data:
    """What the panels need: the lattice table and the per-radius statistics."""

    lattice: pd.DataFrame
    by_radius: pd.DataFrame  # ParticleStatistics.by_radius()

    @classmethod
    def from_tables(cls, materials: pd.DataFrame, particles: ParticleStatistics) -> Figure3Data:
        return cls(lattice_table(materials), particles.by_radius())


# ------------------------------------------------------------------ lattice panels (a-h)


def panel_ratios(ax, d: Figure3Data) -> None:
    """(a) anisotropy ratios b/a, b/c, c/a."""
    cols = ["b/a", "b/c", "c/a"]
    data = [d.lattice[c].to_numpy() for c in cols]
    parts = ax.violinplot(data, showmedians=True)
    for body in parts["bodies"]:
        body.set_alpha(0.5)
    ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
    ax.set_xticks([1, 2, 3], cols)
    ax.set_ylabel("ratio")
    ax.set_title("(a) lattice anisotropy")


def _histogram(ax, values: np.ndarray, label: str, title: str) -> None:
    ax.hist(values, bins=20, color="C0", alpha=0.8, edgecolor="white")
    m, s = values.mean(), values.std(ddof=1)
    ax.axvline(m, color="C3", lw=1.2)
    ax.set_xlabel(label)
    ax.set_ylabel("unit cells")
    ax.set_title(f"{title}\nmean {m:.2f}, std {s:.2f}, {values.min():.2f}-{values.max():.2f}")


def _lattice_hist(col: str, letter: str) -> Callable:
    def panel(ax, d: Figure3Data) -> None:
        _histogram(ax, d.lattice[col].to_numpy(), f"{col} (Å)", f"({letter}) lattice parameter {col}")
    panel.__doc__ = f"({letter}) distribution of {col}."
    return panel


def panel_volume(ax, d: Figure3Data) -> None:
    """(e) unit-cell volume."""
    _histogram(ax, d.lattice["volume"].to_numpy(), "cell volume (Å$^3$)", "(e) unit-cell volume")


def _scatter(x: str, y: str, letter: str) -> Callable:
    def panel(ax, d: Figure3Data) -> None:
        lat = d.lattice
        r = np.corrcoef(lat[x], lat[y])[0, 1]
        for i, (sg, grp) in enumerate(lat.groupby("spacegroup_symbol")):
            ax.scatter(grp[x], grp[y], s=18, alpha=0.8, color=f"C{i}", label=sg)
        ax.set_xlabel(f"{x} (Å)")
        ax.set_ylabel(f"{y} (Å)")
        ax.set_title(f"({letter}) {x} vs {y}: Pearson r = {r:.3f}")
        ax.legend(loc="best", frameon=False, fontsize=8)
    panel.__doc__ = f"({letter}) {x} against {y}, coloured by space group."
    return panel


# ------------------------------------------------------------------ radius panels (i-l)


def _band(ax, br: pd.DataFrame, q: str, label: str, color: str, scale: float = 1.0) -> None:
    r = br["radius"].to_numpy()
    m = br[f"{q}_mean"].to_numpy() * scale
    s = br[f"{q}_std"].to_numpy() * scale
    ax.plot(r, m, "o-", ms=3, color=color, label=label)
    ax.fill_between(r, m - s, m + s, color=color, alpha=0.2, lw=0)


def _split_shading(ax, br: pd.DataFrame) -> None:
    for r, split in zip(br["radius"], br["split"]):
        if split != "train":
            ax.axvspan(r - 0.5, r + 0.5, color="C1" if split == "id" else "C3", alpha=0.07, lw=0)


def _radius_axes(ax, br: pd.DataFrame, ylabel: str, title: str, **legend) -> None:
    """Common finish of panels (i)-(l): labels, legend, ID/OOD shading, title."""
    ax.set_xlabel("R (Å)")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, **legend)
    _split_shading(ax, br)
    ax.set_title(title)


def panel_hull(ax, d: Figure3Data) -> None:
    """(i) hull volume against R with the sphere's 4/3 pi R^3, and V^(1/3) on a second axis."""
    br = d.by_radius
    r = br["radius"].to_numpy(float)
    _band(ax, br, "hull_volume", "hull volume", "C0", 1e-3)
    ax.plot(r, 4 / 3 * np.pi * r ** 3 * 1e-3, "k--", lw=0.8, label=r"$\frac{4}{3}\pi R^3$")
    ax.set_xlabel("R (Å)")
    ax.set_ylabel(r"hull volume ($10^3$ Å$^3$)")
    twin = ax.twinx()
    _band(twin, br, "hull_volume_cbrt", r"$V^{1/3}$", "C2")
    twin.set_ylabel(r"$V^{1/3}$ (Å)")
    lines = ax.get_legend_handles_labels()
    lines2 = twin.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", frameon=False)
    _split_shading(ax, br)
    ax.set_title("(i) convex-hull scaling")


def panel_density(ax, d: Figure3Data) -> None:
    """(j) hull density and bounding-box density against R."""
    br = d.by_radius
    _band(ax, br, "hull_density", "convex hull", "C0")
    _band(ax, br, "bbox_density", "bounding box (rotated configs)", "C1")
    _radius_axes(ax, br, "density (atoms/Å$^3$)", "(j) density and packing")


def panel_atoms(ax, d: Figure3Data) -> None:
    """(k) atom count against R (log scale), mean ± std and min-max."""
    br = d.by_radius
    _band(ax, br, "n_atoms", "mean ± std", "C0")
    ax.fill_between(br["radius"], br["n_atoms_min"], br["n_atoms_max"], color="C0", alpha=0.08,
                    lw=0, label="min-max")
    ax.set_yscale("log")
    _radius_axes(ax, br, "atoms per particle",
                 f"(k) atom count: {int(br['n_atoms_min'].min()):,} to {int(br['n_atoms_max'].max()):,}",
                 loc="lower right")


def panel_lengths(ax, d: Figure3Data) -> None:
    """(l) radius of gyration (with sqrt(3/5) R of a full sphere) and shortest distance."""
    br = d.by_radius
    r = br["radius"].to_numpy(float)
    _band(ax, br, "radius_of_gyration", r"$R_g$", "C0")
    ax.plot(r, np.sqrt(3 / 5) * r, "k--", lw=0.8, label=r"$\sqrt{3/5}\,R$")
    _band(ax, br, "shortest_distance", "shortest distance", "C3")
    _radius_axes(ax, br, "length (Å)", "(l) global and local length scales")


FIGURE3_PANELS: dict[str, Callable] = {
    "a": panel_ratios, "b": _lattice_hist("a", "b"), "c": _lattice_hist("b", "c"),
    "d": _lattice_hist("c", "d"), "e": panel_volume,
    **{letter: _scatter(x, y, letter) for letter, (x, y) in zip("fgh", CORRELATION_PAIRS)},
    "i": panel_hull, "j": panel_density, "k": panel_atoms, "l": panel_lengths,
}


def _save(fig, out: Path, stem: str, formats) -> list[Path]:
    paths = []
    for fmt in formats:
        p = out / f"{stem}.{fmt}"
        fig.savefig(p)
        paths.append(p)
    return paths


def figure3(data: Figure3Data, out: Path, formats=FORMATS) -> list[Path]:
    """One file per panel (figure3_a ... figure3_l) plus the 3 x 4 composite ``figure3``."""
    plt = _style()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for letter, panel in FIGURE3_PANELS.items():
        fig, ax = plt.subplots(figsize=(5.2, 4.0), layout="constrained")
        panel(ax, data)
        paths += _save(fig, out, f"figure3_{letter}", formats)
        plt.close(fig)
    fig, axes = plt.subplots(3, 4, figsize=(22, 14.5), layout="constrained")
    for ax, panel in zip(axes.ravel(), FIGURE3_PANELS.values()):
        panel(ax, data)
    paths += _save(fig, out, "figure3", formats)
    plt.close(fig)
    return paths


# ------------------------------------------------------------------------------ Figure 2


def element_counts(numbers: np.ndarray, order: list[str] | None = None) -> list[tuple[str, int]]:
    """(symbol, count) pairs: elements in ``order`` first, the rest by decreasing count."""
    from ase.data import chemical_symbols

    z, n = np.unique(np.asarray(numbers), return_counts=True)
    counts = {chemical_symbols[a]: int(b) for a, b in zip(z, n)}
    keys = [k for k in (order or []) if k in counts] + sorted(
        (k for k in counts if k not in (order or [])), key=lambda k: -counts[k])
    return [(k, counts[k]) for k in keys]


def composition(numbers: np.ndarray, order: list[str] | None = None) -> str:
    """'Zr108 Cd108 H324' style composition, elements in ``order`` (default: by count)."""
    return " ".join(f"{k}{n:,}" for k, n in element_counts(numbers, order))


#: The unit cube's 8 corners (fractional) and its 12 edges as corner-index pairs.
CELL_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)
CELL_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8)
              if np.sum(np.abs(CELL_CORNERS[a] - CELL_CORNERS[b])) == 1]


def draw_atoms(ax, positions: np.ndarray, numbers: np.ndarray, size: float) -> None:
    """Atoms as spheres in Jmol's CPK colours in a 3D axis, drawn far to near.

    Marker areas grow linearly with the covalent radius, not with its square, so that
    hydrogen stays visible next to Ba or Cs.
    """
    from ase.data import covalent_radii
    from ase.data.colors import jmol_colors

    view = np.array([1.0, -1.0, 0.6]) / np.linalg.norm([1.0, -1.0, 0.6])
    order = np.argsort(positions @ view)  # far atoms first so that near ones cover them
    p, z = positions[order], numbers[order]
    ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=jmol_colors[z], s=size * covalent_radii[z],
               edgecolors="0.25", linewidths=0.2, depthshade=False, rasterized=True)


def _unit_box(ax, lattice: np.ndarray) -> None:
    corners = CELL_CORNERS @ lattice
    for a, b in CELL_EDGES:
        seg = corners[[a, b]]
        ax.plot(seg[:, 0], seg[:, 1], seg[:, 2], color="0.3", lw=0.8)


def figure2(dataset, out: Path, materials=FIGURE2_MATERIALS, radii=FIGURE2_RADII,
            formats=FORMATS) -> list[Path]:
    """Unit cell (top row) and the particles at ``radii`` (next rows) for each material."""
    plt = _style()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = dataset.materials.set_index("name")
    rows = 1 + len(radii)
    fig = plt.figure(figsize=(4.0 * len(materials), 4.0 * rows), layout="constrained")
    for j, name in enumerate(materials):
        order = [table.loc[name, "A"], table.loc[name, "B"], "H"]
        cell = dataset.unit_cell(name)
        ax = fig.add_subplot(rows, len(materials), 1 + j, projection="3d")
        draw_atoms(ax, cell.positions, cell.numbers, 150)
        _unit_box(ax, cell.cell[:])
        ax.set_title(f"{name} unit cell ({table.loc[name, 'spacegroup_symbol']})\n"
                     f"N = {len(cell)}: {composition(cell.numbers, order)}", fontsize=10)
        for i, r in enumerate(radii):
            atoms = dataset.canonical(name, r)
            ax = fig.add_subplot(rows, len(materials), 1 + (i + 1) * len(materials) + j,
                                 projection="3d")
            draw_atoms(ax, atoms.positions, atoms.numbers, 3000.0 / r ** 2)
            ax.set_title(f"{name}, R = {r} Å\nN = {len(atoms):,}: {composition(atoms.numbers, order)}",
                         fontsize=10)
    for ax in fig.axes:
        ax.set_axis_off()
        ax.set_aspect("equal")
        ax.view_init(elev=20, azim=-45)
    paths = _save(fig, out, "figure2", formats)
    plt.close(fig)
    return paths
