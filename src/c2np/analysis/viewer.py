"""``c2np view``: one configuration and its unit cell as a self-contained HTML page.

The page carries its data as inline JSON and draws with a small inline 2D-canvas
renderer (``viewer.html``): it opens offline, needs no WebGL, and stays a few hundred
kB even for the 18k-atom particles.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols, covalent_radii
from ase.data.colors import jmol_colors

from c2np.errors import StoreError

_TEMPLATE = "viewer.html"
#: Rotation that the page opens with: a slightly tilted view, so depth reads at once.
_INITIAL = (20.0, -35.0)  # degrees about x, then y


def _initial_rotation() -> list[float]:
    from scipy.spatial.transform import Rotation

    m = Rotation.from_euler("xy", _INITIAL, degrees=True).as_matrix()
    return [round(float(v), 6) for v in m.ravel()]


def scene(name: str, title: str, atoms: Atoms, order: list[str] | None = None,
          cell: np.ndarray | None = None) -> dict:
    """One view of the page: atoms (and the cell's 12 edges when ``cell`` is given)."""
    from c2np.analysis.figures import CELL_CORNERS, CELL_EDGES, element_counts

    pos = np.asarray(atoms.positions, float)
    numbers = np.asarray(atoms.numbers, int)
    edges: list[list[int]] = []
    if cell is not None:
        base = len(pos)
        pos = np.vstack([pos, CELL_CORNERS @ np.asarray(cell, float)])
        numbers = np.concatenate([numbers, np.zeros(8, int)])  # 0: a point, not an atom
        edges = [[base + a, base + b] for a, b in CELL_EDGES]
    centre = 0.5 * (pos.min(axis=0) + pos.max(axis=0))
    extent = float(np.max(np.linalg.norm(pos - centre, axis=1))) + 1.0
    # atoms of small scenes are drawn at their covalent size; big particles shrink them
    # so that the lattice planes stay readable
    atom_scale = float(min(0.6, 6.0 / max(extent, 1.0)) if len(atoms) > 100 else 0.6)
    return {"name": name, "title": title, "numbers": numbers.tolist(),
            "positions": np.round(pos, 3).ravel().tolist(), "centre": centre.round(3).tolist(),
            "extent": round(extent, 3), "edges": edges, "atom_scale": atom_scale,
            "legend": [list(p) for p in element_counts(np.asarray(atoms.numbers), order)]}


def page(scenes: list[dict], title: str) -> str:
    """The HTML page showing ``scenes`` (buttons switch between them)."""
    if not scenes:
        raise ValueError("a viewer page needs at least one scene")
    used = sorted({int(z) for s in scenes for z in s["numbers"] if z > 0})
    elements = {str(z): {"symbol": chemical_symbols[z], "rgb": [round(float(c), 3) for c in jmol_colors[z]],
                         "radius": round(float(covalent_radii[z]), 3)} for z in used}
    data = {"scenes": scenes, "elements": elements, "initial_rotation": _initial_rotation()}
    # "</" cannot end the script element early once escaped
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    template = (resources.files("c2np.analysis") / _TEMPLATE).read_text(encoding="utf-8")
    from html import escape

    return template.replace("__TITLE__", escape(title)).replace("__DATA__", payload)


def configuration_page(dataset, material: str, radius: int, rotation: int = 0) -> str:
    """Page with one configuration (``rotation`` = rotation_id, 0 = unrotated) and the cell."""
    from c2np.analysis.figures import composition

    dataset.check_material(material)
    rows = dataset.index[(dataset.index["material"] == material) & (dataset.index["radius"] == radius)]
    if rows.empty:
        radii = sorted(dataset.index.loc[dataset.index["material"] == material, "radius"].unique())
        raise StoreError(f"{material} has no particle at R={radius} in this store; radii: "
                         f"{', '.join(map(str, radii))}")
    match = rows[rows["rotation_id"] == rotation]
    if match.empty:
        raise StoreError(f"{material} R={radius} ({rows['split'].iloc[0]}) has rotations "
                         f"0-{int(rows['rotation_id'].max())}; got {rotation}")
    atoms = dataset.by_id(int(match["config_id"].iloc[0]))
    info = dataset.materials.set_index("name").loc[material]
    order = [str(info["A"]), str(info["B"]), "H"]
    cell = dataset.unit_cell(material)
    q = ", ".join(f"{v:.4f}" for v in atoms.info["quaternion_xyzw"])
    particle = scene(f"particle R={radius}", f"{material}, R = {radius} Å, {atoms.info['split']} split, "
                     f"rotation {rotation} (q_xyzw = {q}), config_id {atoms.info['config_id']}: "
                     f"N = {len(atoms):,} ({composition(atoms.numbers, order)})", atoms, order)
    unit = scene("unit cell", f"{material} unit cell, {info['spacegroup_symbol']} "
                 f"(No. {info['spacegroup_number']}), a={info['a']:.3f} b={info['b']:.3f} "
                 f"c={info['c']:.3f} Å: N = {len(cell)}", cell, order, cell=cell.cell[:])
    return page([particle, unit], f"C2NP {material} R={radius} rotation {rotation}")


def write_page(html: str, out: Path) -> Path:
    """Write the page atomically (a half-written page is never left behind)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
