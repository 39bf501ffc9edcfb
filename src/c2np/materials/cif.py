"""Reading and validating unit-cell CIF files.

Every check names the file and what is wrong with it, so a user bringing their own
CIFs (``c2np build --cifs DIR``) sees at once which file to fix.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from ase import Atoms

from c2np.errors import InvalidStructureError

#: Largest unit cell accepted; a bigger "unit cell" is almost surely a supercell or an
#: error, and a 20x20x20 tiling of it would not fit in memory.
MAX_CELL_ATOMS = 1000
#: Two atoms closer than this (Angstrom) are taken as a duplicated site.
MIN_DISTANCE = 0.5
#: Smallest accepted cell volume (Angstrom^3).
MIN_VOLUME = 1.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def check_material_name(name: str) -> str:
    """Return ``name`` if it is a safe material name (it becomes a file name), else raise."""
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith(".."):
        raise InvalidStructureError(
            f"invalid material name {name!r}: use letters, digits and _ . + - only "
            "(no path separators, no leading dot)")
    return name


def validate_cell(atoms: Atoms, where: str, max_atoms: int = MAX_CELL_ATOMS) -> Atoms:
    """Raise :class:`InvalidStructureError` naming ``where`` if ``atoms`` is unusable."""
    n = len(atoms)
    if n == 0:
        raise InvalidStructureError(f"{where}: the cell has no atoms")
    if n > max_atoms:
        raise InvalidStructureError(
            f"{where}: {n} atoms in the unit cell exceeds the limit of {max_atoms}; "
            "carving tiles the cell 20x20x20, so supply a primitive or conventional cell")
    cell = np.asarray(atoms.cell[:], float)
    if not np.all(np.isfinite(cell)):
        raise InvalidStructureError(f"{where}: the cell contains NaN or infinite numbers")
    if not np.all(np.isfinite(atoms.positions)):
        raise InvalidStructureError(f"{where}: atomic positions contain NaN or infinite numbers")
    volume = float(np.linalg.det(cell))
    if volume < MIN_VOLUME:
        raise InvalidStructureError(
            f"{where}: cell volume {volume:.4g} A^3 is zero, negative (left-handed or "
            f"degenerate lattice vectors) or below {MIN_VOLUME} A^3")
    if np.any(atoms.numbers <= 0):
        raise InvalidStructureError(f"{where}: the cell contains an unknown element")
    if n > 1:
        from ase.geometry import get_distances

        _, d = get_distances(atoms.positions, cell=cell, pbc=True)
        d[np.diag_indices(n)] = np.inf
        if d.min() < MIN_DISTANCE:
            i, j = np.unravel_index(np.argmin(d), d.shape)
            raise InvalidStructureError(
                f"{where}: atoms {i} and {j} are {d.min():.3f} A apart (< {MIN_DISTANCE} A): "
                "duplicated or overlapping sites")
    return atoms


def read_cif(path: Path, max_atoms: int = MAX_CELL_ATOMS) -> Atoms:
    """Read and validate the first structure of a CIF file as a periodic ``Atoms``."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise InvalidStructureError(f"{path}: no such CIF file")
    try:
        atoms = read(path, format="cif", index=0)
    except Exception as exc:  # ase raises many types for a broken CIF; all mean "unreadable"
        raise InvalidStructureError(f"{path}: cannot parse CIF ({type(exc).__name__}: {exc})") from exc
    if not isinstance(atoms, Atoms):
        raise InvalidStructureError(f"{path}: no structure found in the CIF")
    atoms.pbc = True
    return validate_cell(atoms, str(path), max_atoms)
