"""Carving spherical nanoparticles out of a tiled unit cell.

The unit cell is tiled ``n_a x n_b x n_c`` (20 x 20 x 20 in the benchmark) and every atom
with ``|x - x0| <= R`` is kept. Only the translations whose fractional coordinates can
reach the sphere are generated, so the work scales with the particle, not the supercell.
Atom order equals that of ``ase.Atoms.repeat`` followed by the same filter: translations
in C order, basis atoms innermost. Positions are returned relative to ``x0`` (the
particle's centre), which is how particles are stored and rotated.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from c2np.errors import CarveError


def centre_position(cell: Atoms, supercell: tuple[int, int, int],
                    centre: tuple[float, float, float]) -> np.ndarray:
    """Cartesian x0 for ``centre`` given in fractional coordinates of the supercell.

    The default centre (0.5, 0.5, 0.5) of a 20x20x20 supercell is the lattice point
    (10, 10, 10): the particle is centred on the unit cell's origin, where the cell's
    first Wyckoff site usually sits, which makes particles as symmetric as the crystal
    allows at that site.
    """
    sup = np.asarray(cell.cell[:], float) * np.asarray(supercell, float)[:, None]
    return np.asarray(centre, float) @ sup


def supercell_clearance(cell: Atoms, supercell: tuple[int, int, int],
                        centre: tuple[float, float, float]) -> float:
    """Shortest distance (Angstrom) from x0 to a face of the supercell.

    For a triclinic cell the faces are planes, so this uses the perpendicular widths
    ``n_i / |b_i|`` (``b_i`` reciprocal vectors without 2 pi), not the edge lengths.
    """
    recip = np.linalg.inv(np.asarray(cell.cell[:], float)).T
    widths = np.asarray(supercell, float) / np.linalg.norm(recip, axis=1)
    c = np.asarray(centre, float)
    return float(np.min(np.minimum(c, 1.0 - c) * widths))


def check_fits(cell: Atoms, radius: float, supercell: tuple[int, int, int],
               centre: tuple[float, float, float], buffer: float, name: str = "cell") -> None:
    """Raise :class:`CarveError` unless the sphere plus half the buffer fits in the supercell.

    For the centred sphere this is the paper's ``L_i >= 2 R + buffer``.
    """
    clearance = supercell_clearance(cell, supercell, centre)
    need = radius + buffer / 2.0
    if clearance < need:
        raise CarveError(
            f"{name}: a {'x'.join(map(str, supercell))} supercell leaves {clearance:.3f} A from "
            f"the centre to its nearest face, but R={radius} A with a {buffer} A buffer needs "
            f"{need:.3f} A; use a larger supercell or a smaller radius or buffer")


def carve(cell: Atoms, radius: float, supercell: tuple[int, int, int] = (20, 20, 20),
          centre: tuple[float, float, float] = (0.5, 0.5, 0.5), buffer: float = 5.0,
          tolerance: float = 1e-6, name: str = "cell") -> Atoms:
    """Carve the particle of radius ``radius`` (Angstrom) from the tiled ``cell``.

    Returns a non-periodic ``Atoms`` with positions relative to x0; ``info`` holds
    ``material``, ``radius`` and ``x0`` (Cartesian centre in the supercell frame).
    Atoms at ``|x - x0| <= radius + tolerance`` are kept, so that sites lying exactly
    on the sphere are not lost to floating-point rounding.
    """
    if not np.isfinite(radius) or radius <= 0:
        raise CarveError(f"{name}: radius must be a positive number of Angstrom, got {radius}")
    check_fits(cell, radius, supercell, centre, buffer, name)
    lattice = np.asarray(cell.cell[:], float)
    basis = np.asarray(cell.positions, float)
    x0 = centre_position(cell, supercell, centre)
    inv = np.linalg.inv(lattice)
    frac_basis = basis @ inv
    f0 = x0 @ inv
    reach = (radius + tolerance) * np.linalg.norm(inv, axis=0)  # |f_i| <= R |b_i|
    lo = np.floor(f0 - frac_basis.max(axis=0) - reach).astype(int)
    hi = np.ceil(f0 - frac_basis.min(axis=0) + reach).astype(int)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.asarray(supercell) - 1)
    axes = [np.arange(lo[i], hi[i] + 1) for i in range(3)]
    shifts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3) @ lattice
    pos = (shifts[:, None, :] + basis[None, :, :]).reshape(-1, 3) - x0
    numbers = np.tile(cell.numbers, len(shifts))
    keep = np.einsum("ij,ij->i", pos, pos) <= (radius + tolerance) ** 2
    particle = Atoms(numbers=numbers[keep], positions=pos[keep], pbc=False)
    particle.info.update(material=name, radius=radius, x0=x0.tolist())
    return particle
