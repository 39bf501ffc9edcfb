"""Candidate perovskite structures for one ABH3 composition.

Each prototype is a textbook perovskite structure type (cubic aristotype and the four
common octahedral-tilt variants), built from its space group and Wyckoff positions with
``ase.spacegroup.crystal``. Fractional coordinates are the generic starting points of
each structure type, and the pseudo-cubic lattice constant is estimated from covalent
radii: nothing here is a material's lattice constant. The relaxation turns these
starting points into the material's own structure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from ase.spacegroup import crystal


@dataclass(frozen=True)
class Prototype:
    """A perovskite structure type: name, space group and a builder."""

    name: str
    spacegroup: int
    build: Callable[[str, str, float], Atoms]


def pseudo_cubic_estimate(a_site: str, b_site: str) -> float:
    """Starting pseudo-cubic lattice constant from covalent radii (Angstrom).

    The larger of the B-H-B chain length and the A-H face-diagonal length, the same
    geometric bound that underlies Goldschmidt's tolerance factor.
    """
    r = {s: covalent_radii[atomic_numbers[s]] for s in (a_site, b_site, "H")}
    return max(2.0 * (r[b_site] + r["H"]), math.sqrt(2.0) * (r[a_site] + r["H"]))


def _cubic(a: str, b: str, ap: float) -> Atoms:
    return crystal([a, b, "H"], [(0.5, 0.5, 0.5), (0, 0, 0), (0.5, 0, 0)],
                   spacegroup=221, cellpar=[ap, ap, ap, 90, 90, 90], primitive_cell=True)


def _pnma(a: str, b: str, ap: float) -> Atoms:
    # GdFeO3 type, a- b+ a- tilts.
    r2 = math.sqrt(2.0) * ap
    return crystal([a, b, "H", "H"],
                   [(0.05, 0.25, 0.99), (0, 0, 0.5), (0.48, 0.25, 0.08), (0.29, 0.04, 0.71)],
                   spacegroup=62, cellpar=[r2, 2 * ap, r2, 90, 90, 90])


def _r3c(a: str, b: str, ap: float) -> Atoms:
    # LaAlO3 type, a- a- a- tilts; built hexagonal, relaxed as the primitive rhombohedron.
    return crystal([a, b, "H"], [(0, 0, 0.25), (0, 0, 0), (0.55, 0, 0.25)],
                   spacegroup=167, cellpar=[math.sqrt(2) * ap, math.sqrt(2) * ap,
                                            2 * math.sqrt(3) * ap, 90, 90, 120],
                   primitive_cell=True)


def _i4mcm(a: str, b: str, ap: float) -> Atoms:
    # Low-temperature SrTiO3 type, a0 a0 c- tilts.
    r2 = math.sqrt(2.0) * ap
    return crystal([a, b, "H", "H"],
                   [(0, 0.5, 0.25), (0, 0, 0), (0, 0, 0.25), (0.22, 0.72, 0)],
                   spacegroup=140, cellpar=[r2, r2, 2 * ap, 90, 90, 90], primitive_cell=True)


def _p4mbm(a: str, b: str, ap: float) -> Atoms:
    # a0 a0 c+ tilts.
    r2 = math.sqrt(2.0) * ap
    return crystal([a, b, "H", "H"],
                   [(0, 0.5, 0.5), (0, 0, 0), (0, 0, 0.5), (0.22, 0.72, 0)],
                   spacegroup=127, cellpar=[r2, r2, ap, 90, 90, 90])


def _hex2h(a: str, b: str, ap: float) -> Atoms:
    # BaNiO3 type (2H): columns of face-sharing octahedra, the stacking large A-site
    # cations prefer when the tolerance factor exceeds 1.
    return crystal([a, b, "H"], [(1 / 3, 2 / 3, 0.75), (0, 0, 0), (0.15, 0.30, 0.25)],
                   spacegroup=194, cellpar=[math.sqrt(2) * ap, math.sqrt(2) * ap,
                                            1.25 * ap, 90, 90, 120])


PROTOTYPES: tuple[Prototype, ...] = (
    Prototype("cubic-Pm-3m", 221, _cubic),
    Prototype("orthorhombic-Pnma", 62, _pnma),
    Prototype("rhombohedral-R-3c", 167, _r3c),
    Prototype("tetragonal-I4/mcm", 140, _i4mcm),
    Prototype("tetragonal-P4/mbm", 127, _p4mbm),
    Prototype("hexagonal-2H-P6_3/mmc", 194, _hex2h),
)
#: Prototypes also tried with the two cations' sites swapped when the named B is an
#: alkaline-earth metal larger than the named A, as in the known inverse perovskite
#: SrLiH3 (Li on the octahedral site), listed under the name LiSrH3.
INVERSE = ("cubic-Pm-3m", "orthorhombic-Pnma")
INVERSE_B = ("Ca", "Sr", "Ba")


def candidates(a_site: str, b_site: str) -> list[tuple[Prototype, Atoms]]:
    """Build every prototype for the composition ``A B H3``.

    Inverse candidates (named ``inverse-...``: B on the 12-coordinated site, A on the
    octahedral one) are added for an alkaline-earth B larger than A (see ``INVERSE``).
    """
    ap = pseudo_cubic_estimate(a_site, b_site)
    out = [(p, p.build(a_site, b_site, ap)) for p in PROTOTYPES]
    if b_site in INVERSE_B and (covalent_radii[atomic_numbers[a_site]]
                                 < covalent_radii[atomic_numbers[b_site]]):
        ap_inv = pseudo_cubic_estimate(b_site, a_site)
        out += [(Prototype(f"inverse-{p.name}", p.spacegroup, p.build), p.build(b_site, a_site, ap_inv))
                for p in PROTOTYPES if p.name in INVERSE]
    return out
