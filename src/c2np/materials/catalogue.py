"""The material catalogue: bundled unit cells or a user's directory of CIFs.

A :class:`Material` pairs a validated periodic ``ase.Atoms`` unit cell with its
provenance. The bundled set lives in ``c2np/materials/data`` as one CIF per material
and ``materials.csv`` (see ``docs/materials.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd
from ase import Atoms

from c2np.errors import InvalidStructureError, UnknownMaterialError
from c2np.materials.cif import check_material_name, read_cif
from c2np.symmetry import LABEL_SYMPREC, space_group

#: Columns of ``materials.csv``, in order.
COLUMNS = ("name", "formula", "A", "B", "spacegroup_number", "spacegroup_symbol",
           "a", "b", "c", "alpha", "beta", "gamma", "volume", "atoms_per_cell",
           "prototype", "energy_per_atom_eV",
           # Structural validity and label stability (c2np.materials.validity).
           "octahedral_cation", "b_coordination", "b_h_min", "b_h_max", "next_h",
           "corner_sharing", "tolerance_factor", "tilt", "symprec_min", "symprec_max",
           "selection", "source", "method")


@dataclass(frozen=True)
class Material:
    """A named unit cell with its provenance."""

    name: str
    cell: Atoms
    source: str
    method: str
    #: Further ``materials.csv`` columns known for bundled cells (A, B, prototype, energy).
    extra: tuple[tuple[str, str], ...] = ()

    def copy_cell(self) -> Atoms:
        """A copy of the unit cell that callers may modify."""
        return self.cell.copy()


_EXTRA_COLUMNS = ("A", "B", "prototype", "energy_per_atom_eV")


def bundled_dir() -> Path:
    """Directory holding the bundled ``materials.csv`` and ``cifs/``."""
    return Path(str(resources.files("c2np.materials") / "data"))


def describe(name: str, cell: Atoms, **extra: object) -> dict:
    """One ``materials.csv`` row computed from a unit cell (lattice, symmetry, formula)."""
    a, b, c, alpha, beta, gamma = (float(x) for x in cell.cell.cellpar())
    sg = space_group(cell, LABEL_SYMPREC)
    row = {"name": name, "formula": cell.get_chemical_formula(mode="metal", empirical=True),
           "A": extra.pop("A", ""), "B": extra.pop("B", ""),
           "spacegroup_number": sg.number, "spacegroup_symbol": sg.symbol,
           "a": a, "b": b, "c": c, "alpha": alpha, "beta": beta, "gamma": gamma,
           "volume": float(cell.cell.volume), "atoms_per_cell": len(cell)}
    row.update(extra)
    return {k: row.get(k, "") for k in COLUMNS}


def sites(cell: Atoms) -> tuple[str, str]:
    """(A, B) of a user's ABH3 cell: the larger cation (covalent radius) is A."""
    from ase.data import atomic_numbers, covalent_radii

    metals = sorted({s for s in cell.get_chemical_symbols() if s != "H"},
                    key=lambda s: -covalent_radii[atomic_numbers[s]])
    if len(metals) != 2:
        raise InvalidStructureError(
            f"{cell.get_chemical_formula()}: an ABH3 cell needs exactly two cation species")
    return metals[0], metals[1]


def load_materials(cif_dir: Path | None = None, names: list[str] | None = None) -> list[Material]:
    """Load and validate the bundled materials, or every ``*.cif`` in ``cif_dir``.

    ``names`` restricts the selection; an unknown name raises
    :class:`~c2np.errors.UnknownMaterialError`. The result is sorted by name.
    """
    if cif_dir is None:
        root = bundled_dir()
        table = pd.read_csv(root / "materials.csv", keep_default_na=False)
        entries = [(r["name"], root / "cifs" / f"{r['name']}.cif", r["source"], r["method"],
                    tuple((k, str(r[k])) for k in _EXTRA_COLUMNS))
                   for r in table.to_dict("records")]
    else:
        cif_dir = Path(cif_dir)
        if not cif_dir.is_dir():
            raise InvalidStructureError(f"{cif_dir}: not a directory of CIF files")
        entries = [(p.stem, p, f"user file {p.name}", "user-supplied CIF", ())
                   for p in sorted(cif_dir.glob("*.cif"))]
        if not entries:
            raise InvalidStructureError(f"{cif_dir}: contains no *.cif files")
    known = {e[0] for e in entries}
    if names is not None:
        missing = sorted(set(names) - known)
        if missing:
            raise UnknownMaterialError(
                f"unknown material(s) {', '.join(missing)}; known: {', '.join(sorted(known))}")
        entries = [e for e in entries if e[0] in set(names)]
    out = [Material(check_material_name(n), read_cif(p), src, meth, extra)
           for n, p, src, meth, extra in entries]
    return sorted(out, key=lambda m: m.name)
