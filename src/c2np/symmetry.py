"""Space-group analysis of unit cells with spglib.

One place decides how symmetry is detected and which cell setting is "the" cell, so the
bundled catalogue, Task 2 targets and any solver agree: spglib's conventional standard
cell (``spglib.standardize_cell(to_primitive=False, no_idealize=False)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# spglib prints C-level diagnostics to stderr for every failed attempt; our callers
# handle failures themselves.
os.environ.setdefault("SPGLIB_WARNING", "OFF")

import numpy as np  # noqa: E402
import spglib  # noqa: E402
import spglib.error  # noqa: E402
from ase import Atoms  # noqa: E402

from c2np.errors import InvalidStructureError  # noqa: E402

# Raise instead of returning None (and silence spglib's deprecation warning about it).
spglib.error.OLD_ERROR_HANDLING = False

#: Default distance tolerance (Angstrom) for symmetry detection.
SYMPREC = 1e-3
#: The label policy (docs/materials.md): every bundled cell's space group is the same
#: at both ends of this symprec range (Angstrom), so no label rests on a distortion that
#: CHGNet cannot resolve. Task 2 targets are read at the upper end.
LABEL_SYMPREC_RANGE = (1e-3, 0.1)
LABEL_SYMPREC = LABEL_SYMPREC_RANGE[1]


@dataclass(frozen=True)
class SpaceGroup:
    """A detected space group: ITA number and Hermann-Mauguin symbol."""

    number: int
    symbol: str


def _spglib_cell(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(atoms.cell[:], float), atoms.get_scaled_positions(wrap=True),
            atoms.numbers.copy())


def _dataset(atoms: Atoms, symprec: float):
    try:
        return spglib.get_symmetry_dataset(_spglib_cell(atoms), symprec=symprec)
    except spglib.error.SpglibError as exc:
        raise InvalidStructureError(f"spglib found no symmetry at symprec={symprec}: {exc}") from exc


def space_group(atoms: Atoms, symprec: float = SYMPREC) -> SpaceGroup:
    """Space group of a periodic cell at distance tolerance ``symprec`` (Angstrom)."""
    dataset = _dataset(atoms, symprec)
    return SpaceGroup(int(dataset.number), str(dataset.international))


def standardize(atoms: Atoms, symprec: float = SYMPREC) -> Atoms:
    """Return the symmetrised conventional standard cell (the input is not modified)."""
    try:
        result = spglib.standardize_cell(_spglib_cell(atoms), to_primitive=False,
                                         no_idealize=False, symprec=symprec)
    except spglib.error.SpglibError as exc:
        raise InvalidStructureError(f"spglib could not standardise the cell: {exc}") from exc
    lattice, scaled, numbers = result
    return Atoms(numbers=numbers, cell=lattice, scaled_positions=scaled, pbc=True)


def proper_rotations_cartesian(atoms: Atoms, symprec: float = SYMPREC) -> np.ndarray:
    """The crystal's proper point-group rotations as Cartesian 3x3 matrices (unique).

    spglib returns rotations W in fractional coordinates (x' = W x); in Cartesian
    coordinates with lattice vectors as rows of ``A`` they are ``A^T W A^-T``.
    """
    dataset = _dataset(atoms, symprec)
    w = np.asarray(dataset.rotations, float)
    w = w[np.linalg.det(w) > 0]
    a = np.asarray(atoms.cell[:], float)
    cart = np.einsum("ij,njk,kl->nil", a.T, w, np.linalg.inv(a.T))
    _, keep = np.unique(np.round(cart, 6).reshape(len(cart), 9), axis=0, return_index=True)
    return cart[np.sort(keep)]
