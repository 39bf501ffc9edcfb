"""Is a unit cell a perovskite, and does its space-group label rest on a real distortion?

``c2np materials check`` and the ``materials.csv`` columns it fills come from here. Per
cell: the coordination of the octahedral (B) cation by hydrogen and its B-H distances,
whether the BH6 octahedra share corners only, the Goldschmidt tolerance factor, the
octahedral tilt magnitude, and the symprec interval over which spglib's space group does
not change. ``docs/materials.md`` explains every definition and the label policy.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from ase.neighborlist import neighbor_list

from c2np.symmetry import LABEL_SYMPREC_RANGE, space_group

#: A B-H distance counts as a bond when it is at most this factor times the shortest
#: B-H distance of the cell. 1.3 separates the octahedra of every bundled cell (next H
#: beyond 1.5x the bond) and still counts the four long bonds of a Jahn-Teller-like
#: distorted octahedron; ``docs/materials.md`` shows the distance gaps.
BOND_FACTOR = 1.3
#: Radius (Angstrom) searched for B-H neighbours: longer than any metal-hydrogen bond.
SEARCH_RADIUS = 4.0
#: Ionic radius of H- (Angstrom). Shannon's table has no H- entry; 1.40 A (the size of
#: O2-, which H- resembles in perovskites) is the conventional choice for hydrides.
H_MINUS_RADIUS = 1.40
#: A bond is also never longer than this factor times the sum of covalent radii, so a
#: cation with no H nearby (H bound elsewhere) has coordination 0, not a distant shell.
COVALENT_FACTOR = 1.35
#: symprec grid (Angstrom) scanned for the stability interval: 1e-5 to 0.5, 25 values.
SYMPREC_GRID = np.round(np.logspace(-5, math.log10(0.5), 25), 8)
#: Oxidation states (A, B) that balance three H- ions, by A-site element.
_OXIDATION = {**{a: (1, 2) for a in ("Li", "Na", "K", "Rb", "Cs")},
              **{a: (2, 1) for a in ("Mg", "Ca", "Sr", "Ba")}}


@dataclass(frozen=True)
class CellCheck:
    """Structural and symmetry descriptors of one ABH3 cell (one ``materials.csv`` row)."""

    octahedral_cation: str
    b_coordination: int
    b_h_min: float
    b_h_max: float
    next_h: float
    corner_sharing: bool
    tolerance_factor: float
    tilt: float
    spacegroup_number: int
    symprec_min: float
    symprec_max: float

    @property
    def octahedral(self) -> bool:
        """Six-coordinated B in corner-sharing octahedra: a perovskite network."""
        return self.b_coordination == 6 and self.corner_sharing

    @property
    def label_stable(self) -> bool:
        """The space group is the same at both ends of the policy's symprec range."""
        lo, hi = LABEL_SYMPREC_RANGE
        return self.symprec_min <= lo and self.symprec_max >= hi

    def row(self) -> dict:
        """Flat dict for tables, with rounded floats."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = float(f"{v:.4g}") if math.isfinite(v) else float("nan")
        return out


def _bonds(cell: Atoms, cation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Bonded (cation index, H index, distance) triples and (shortest, next) distance."""
    sym = np.array(cell.get_chemical_symbols())
    i, j, d = neighbor_list("ijd", cell, SEARCH_RADIUS)
    keep = (sym[i] == cation) & (sym[j] == "H")
    i, j, d = i[keep], j[keep], d[keep]
    if not len(d):
        return i, j, d, math.inf, math.inf
    cut = min(BOND_FACTOR * d.min(), COVALENT_FACTOR * (
        covalent_radii[atomic_numbers[cation]] + covalent_radii[1]))
    bonded = d <= cut
    nxt = float(d[~bonded].min()) if (~bonded).any() else math.inf
    return i[bonded], j[bonded], d[bonded], float(d.min()), nxt


def coordination(cell: Atoms, cation: str) -> tuple[int, float, float, float]:
    """Smallest H coordination of ``cation`` sites, bond range, and the next H distance."""
    i, _, d, _, nxt = _bonds(cell, cation)
    sites = np.flatnonzero(np.array(cell.get_chemical_symbols()) == cation)
    counts = np.bincount(i, minlength=len(cell))[sites]
    if not len(d):
        return 0, math.nan, math.nan, nxt
    return int(counts.min()), float(d.min()), float(d.max()), nxt


def octahedral_cation(cell: Atoms, a_site: str, b_site: str) -> str:
    """The cation on the octahedral site: the named B, unless only the named A is and
    B is one of the alkaline earths tried inverted (``prototypes.INVERSE_B``).

    An inverse assignment (the known SrLiH3 structure under the name LiSrH3) is
    recognised from the structure instead of trusted from the name.
    """
    from c2np.materials.prototypes import INVERSE_B

    def octahedral(el: str) -> bool:
        return coordination(cell, el)[0] == 6 and corner_sharing_tilt(cell, el)[0]

    if b_site in INVERSE_B and not octahedral(b_site) and octahedral(a_site):
        return a_site
    return b_site


def corner_sharing_tilt(cell: Atoms, cation: str) -> tuple[bool, float]:
    """Whether the cation's H polyhedra share corners only, and the tilt magnitude.

    Corner-sharing: every H bridges exactly two cations at a cation-H-cation angle above
    120 degrees (edge- and face-sharing octahedra bridge at about 80-100 degrees). The
    tilt magnitude is the largest distance of an H from the midpoint of its two cations,
    zero in the cubic aristotype (Angstrom; NaN when not corner-sharing).
    """
    sym = np.array(cell.get_chemical_symbols())
    _, _, bond, _, _ = _bonds(cell, cation)
    if not len(bond):
        return False, math.nan
    h, c, vec, shift = neighbor_list("ijDS", cell, SEARCH_RADIUS)
    keep = (sym[h] == "H") & (sym[c] == cation) & (np.linalg.norm(vec, axis=1) <= bond.max())
    h, c, vec, shift = h[keep], c[keep], vec[keep], shift[keep]
    per_h = np.bincount(h, minlength=len(cell))[sym == "H"]
    if not len(h) or not (per_h == 2).all():
        return False, math.nan
    order = np.argsort(h, kind="stable")
    pair, c, shift = vec[order].reshape(-1, 2, 3), c[order].reshape(-1, 2), shift[order].reshape(-1, 2, 3)
    cos = np.einsum("ij,ij->i", pair[:, 0], pair[:, 1]) / np.prod(
        np.linalg.norm(pair, axis=2), axis=1)
    # Two octahedra (cation index + lattice image) sharing more than one H share an edge
    # or a face (2H stacking), whatever the angles.
    rel = shift[:, 1] - shift[:, 0]
    swap = c[:, 0] > c[:, 1]
    c[swap], rel[swap] = c[swap][:, ::-1], -rel[swap]
    # A cation bridged to its own image: +shift and -shift name the same two octahedra.
    first = rel[np.arange(len(rel)), np.argmax(rel != 0, axis=1)]
    rel[(c[:, 0] == c[:, 1]) & (first < 0)] *= -1
    keys = np.column_stack([c, rel])
    shared = np.unique(keys, axis=0, return_counts=True)[1].max()
    if shared > 1 or not (cos < -0.5).all():
        return False, math.nan
    # Vectors run from H to its cations, so the midpoint offset is |d1 + d2| / 2.
    return True, float((np.linalg.norm(pair.sum(axis=1), axis=1) / 2.0).max())


_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "IVSQ": 4, "V": 5, "VI": 6, "VII": 7,
          "VIII": 8, "IX": 9, "X": 10, "XI": 11, "XII": 12}


@lru_cache(maxsize=1)
def _shannon() -> dict:
    from c2np.materials.catalogue import bundled_dir

    return json.loads((bundled_dir() / "shannon_radii.json").read_text())["radii"]


def shannon_radius(element: str, charge: int, cn: int) -> float:
    """Shannon ionic radius (Angstrom) at coordination ``cn``, or the nearest tabulated
    coordination (ties to the higher; high spin where both are given); NaN if absent."""
    table = _shannon().get(element, {}).get(str(charge), {})
    if not table:
        return math.nan
    best = min(table, key=lambda k: (abs(_ROMAN.get(k, 0) - cn), -_ROMAN.get(k, 0)))
    spins = table[best]
    return float(spins.get("High Spin", next(iter(spins.values()))))


def tolerance_factor(a_site: str, b_site: str) -> float:
    """Goldschmidt t = (r_A + r_H) / (sqrt(2) (r_B + r_H)) from Shannon radii.

    A at coordination XII and B at VI, or the nearest coordination the table has
    (``data/shannon_radii.json``, extracted from pymatgen); H- is :data:`H_MINUS_RADIUS`.
    NaN where no charge-balanced A(m+) B(n+) H3 assignment has Shannon radii (Zr; B(+1)
    ions that Shannon does not list).
    """
    if a_site not in _OXIDATION:
        return math.nan
    ox_a, ox_b = _OXIDATION[a_site]
    r_a, r_b = shannon_radius(a_site, ox_a, 12), shannon_radius(b_site, ox_b, 6)
    return (r_a + H_MINUS_RADIUS) / (math.sqrt(2.0) * (r_b + H_MINUS_RADIUS))


def stability_range(cell: Atoms, symprec: float) -> tuple[int, float, float]:
    """Space group at ``symprec`` and the contiguous grid interval of symprec giving it."""
    number = space_group(cell, symprec).number
    grid = np.union1d(SYMPREC_GRID, [symprec])
    same = []
    for s in grid:
        try:
            same.append(space_group(cell, float(s)).number == number)
        except Exception:  # spglib gives up at a tolerance: not the same group
            same.append(False)
    same = np.asarray(same)
    k = int(np.searchsorted(grid, symprec))
    lo = k
    while lo > 0 and same[lo - 1]:
        lo -= 1
    hi = k
    while hi + 1 < len(grid) and same[hi + 1]:
        hi += 1
    return number, float(grid[lo]), float(grid[hi])


def check_cell(cell: Atoms, a_site: str, b_site: str) -> CellCheck:
    """Every descriptor of one ABH3 cell; ``a_site``/``b_site`` as named."""
    cation = octahedral_cation(cell, a_site, b_site)
    cn, dmin, dmax, nxt = coordination(cell, cation)
    corner, tilt = corner_sharing_tilt(cell, cation)
    other = a_site if cation == b_site else b_site
    number, lo, hi = stability_range(cell, LABEL_SYMPREC_RANGE[1])
    return CellCheck(cation, cn, dmin, dmax, nxt, corner and cn == 6,
                     tolerance_factor(other, cation), tilt, number, lo, hi)
