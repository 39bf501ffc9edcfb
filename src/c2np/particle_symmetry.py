"""Symmetric duplicates among the rotated configurations of one particle.

Two configurations ``R_j P`` and ``R_k P`` are the same set of atoms (same species at the
same places) exactly when ``R_j^T R_k`` is a rotational symmetry of the particle ``P``
about its centre. Comparing ordered coordinates, as the reference implementation does,
never detects this, because a symmetry permutes the atoms.

The symmetry group is found by testing each proper rotation of the crystal's point
group (the only candidates for a particle carved around a point of the crystal) on the
particle itself with a KD-tree: every rotated atom must land within ``tolerance`` of an
atom of the same species. Accidental symmetries of very small particles that are not
crystal symmetries are therefore not detected.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

#: Atoms tested first; a non-symmetry almost always fails on them, skipping the full test.
_PROBE = 32


def maps_onto_itself(positions: np.ndarray, numbers: np.ndarray, rotation: np.ndarray,
                     tolerance: float, tree: cKDTree | None = None) -> bool:
    """True if ``positions @ rotation.T`` equals ``positions`` as a set of same-species atoms."""
    tree = cKDTree(positions) if tree is None else tree
    # Probe the farthest atoms first: they move most under a wrong rotation.
    order = np.argsort(-np.einsum("ij,ij->i", positions, positions), kind="stable")
    for idx in (order[:_PROBE], order):
        moved = positions[idx] @ rotation.T
        dist, nearest = tree.query(moved, distance_upper_bound=tolerance)
        if not np.all(np.isfinite(dist)) or np.any(numbers[nearest] != numbers[idx]):
            return False
    # A bijection, not only "every image has a neighbour": images must be distinct atoms.
    return len(np.unique(nearest)) == len(idx)


def particle_symmetry_group(particle: Atoms, candidates: np.ndarray, tolerance: float
                            ) -> np.ndarray:
    """The candidate rotations (k, 3, 3) that map ``particle`` onto itself."""
    pos = np.asarray(particle.positions, float)
    tree = cKDTree(pos)
    keep = [g for g in candidates if maps_onto_itself(pos, particle.numbers, g, tolerance, tree)]
    return np.asarray(keep).reshape(-1, 3, 3)


def duplicate_of(rotations: np.ndarray, group: np.ndarray, max_radius: float, tolerance: float
                 ) -> np.ndarray:
    """For each configuration, the index of the first earlier one it duplicates, or -1.

    ``rotations`` are the configurations' matrices (n, 3, 3). ``R_j^T R_k`` is matched to
    a group element ``g`` when every atom, at most ``max_radius`` from the centre, would
    land within ``tolerance`` of where ``g`` puts it: an angle below
    ``tolerance / max_radius``, i.e. a Frobenius distance below ``sqrt(2) * that``.
    """
    n = len(rotations)
    out = np.full(n, -1, dtype=np.int64)
    if len(group) == 0 or n < 2:
        return out
    limit = np.sqrt(2.0) * tolerance / max(max_radius, 1e-12)
    rel = np.einsum("jba,kbc->jkac", rotations, rotations)  # R_j^T R_k
    dist = np.linalg.norm(rel[:, :, None] - group[None, None], axis=(-2, -1)).min(axis=-1)
    match = (dist <= limit) & np.triu(np.ones((n, n), bool), k=1)
    for k in range(n):  # n <= a few hundred configurations, not atoms
        earlier = np.flatnonzero(match[:k, k] & (out[:k] == -1))
        if len(earlier):
            out[k] = earlier[0]
    return out
