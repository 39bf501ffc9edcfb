"""The 81 ABH3 compositions of the bundled set.

The paper's authors did not publish usable unit-cell files, so the composition list is
ours. It is chosen to reproduce the paper's stated compositional statistics exactly
(Section 3.4): 10 A-site species with Li 21, Na 16 and K 14 the most frequent, 27
B-site elements with V and Rh 8 each, then Cu and Zn 6 each, and the four materials the
paper names (ZrCdH3, LiBeH3, LiCaH3, BaMnH3). ``docs/materials.md`` explains the choice.
"""

from __future__ import annotations

# A-site element -> B-site partners. Order is irrelevant: the catalogue sorts by name.
PAIRS: dict[str, tuple[str, ...]] = {
    "Li": ("Be", "Ca", "V", "Rh", "Cu", "Zn", "Mn", "Ge", "Co", "Fe", "Cr", "Ti", "Sc",
           "Pd", "Pt", "Al", "Ga", "Mg", "Sr", "Nb", "Ag"),
    "Na": ("Be", "Ca", "V", "Rh", "Cu", "Zn", "Mg", "Ni", "Co", "Fe", "Ti", "Pd", "Ir",
           "Ru", "Si", "Y"),
    "K": ("Be", "Ca", "V", "Rh", "Cu", "Zn", "Mg", "Mn", "Ni", "Co", "Ir", "Ru", "Ge",
          "Sc"),
    "Rb": ("V", "Rh", "Mg", "Ca", "Zn"),
    "Cs": ("V", "Rh", "Mg", "Ca", "Cu"),
    "Mg": ("V", "Rh", "Co", "Ti"),
    "Ca": ("V", "Rh", "Ni", "Pd", "Cu"),
    "Sr": ("Rh", "Pd", "Cr", "Zn"),
    "Ba": ("Mn", "V", "Ga", "Al", "Cu"),
    "Zr": ("Cd", "Zn"),
}


def compositions() -> list[tuple[str, str, str]]:
    """Return ``(name, A, B)`` for every bundled composition, sorted by name."""
    return sorted((f"{a}{b}H3", a, b) for a, partners in PAIRS.items() for b in partners)
