"""Task 2 by geometry: recover the translation lattice and space group of a particle.

No learning and no knowledge of the material: only the particle's atoms.

1. **Candidate translations**: difference vectors between same-species atoms, from up
   to 150 anchor atoms spread over the particle, up to ``max_translation`` long (one
   representative per 0.25 A cell).
2. **Verification**: a candidate t is a lattice translation if, for the atoms whose image
   x + t stays well inside the particle, at least ``min_match`` of them land within
   ``tolerance`` of an atom of the same species (KD-tree), and if their RMS mismatch is
   near the smallest of all candidates: a tilted perovskite also nearly repeats under
   the short translations of its cubic parent, but only to within the tilt distortion
   (0.1-0.5 A), while true translations repeat to within the noise.
3. **Basis**: the three successive minima of the verified translations (shortest, then
   shortest not parallel, then shortest not coplanar), which form a basis of a 3D
   lattice; refined by least squares over every verified translation.
4. **Unit cell**: atoms near the centre are folded into that cell and merged per species
   within ``tolerance``, averaging the members of each site (this averages noise out).
5. **Symmetry**: spglib finds the space group and the conventional standard cell of the
   folded cell at a ``symprec`` scaled to the measured scatter of the merged sites; its
   parameters are the prediction. spglib also reduces a supercell, should step 3 miss a
   short translation.

Every step uses distances and differences only, so the result does not depend on the
particle's orientation or position, and any triclinic lattice is handled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from c2np.errors import C2NPError, InvalidStructureError
from c2np.symmetry import LABEL_SYMPREC_RANGE, space_group, standardize


@dataclass(frozen=True)
class Recovered:
    """A recovered lattice: conventional cell parameters, space group, and diagnostics."""

    cellpar: np.ndarray
    spacegroup: int
    n_translations: int
    n_basis_atoms: int
    symprec: float


#: Atoms (nearest the centre) used to verify each candidate translation.
MAX_PROBE = 400
#: Atoms tested per candidate in the vectorised first pass.
QUICK_PROBE = 16
#: Atoms from which candidate translations are taken (all of them in small particles,
#: where long translations only show between surface atoms).
N_ANCHORS = 150


class RecoveryError(C2NPError):
    """The particle does not show three independent lattice translations."""


def _verified_translations(pos, numbers, centre, rmax, tolerance, max_translation, min_match, margin):
    tree = cKDTree(pos)
    dist_c = np.linalg.norm(pos - centre, axis=1)
    # Anchors spread over the particle, every species: a translation longer than the
    # radius only shows between a few atoms on opposite sides, never from the centre.
    rng = np.random.default_rng(0)
    anchors = np.unique(np.concatenate([[np.argmin(dist_c)],
                                        rng.choice(len(pos), min(N_ANCHORS, len(pos)), replace=False)]))
    parts = []
    for z in np.unique(numbers):
        same, anc = np.flatnonzero(numbers == z), anchors[numbers[anchors] == z]
        if len(anc):
            parts.append((pos[same][None, :, :] - pos[anc][:, None, :]).reshape(-1, 3))
    diffs = np.concatenate(parts)
    lengths = np.linalg.norm(diffs, axis=1)
    keep = (lengths > 0.5) & (lengths <= max_translation)
    diffs, lengths = diffs[keep], lengths[keep]
    diffs = diffs[np.argsort(lengths, kind="stable")]
    # One representative per 0.25 A cell: the same translation seen from many anchors.
    _, first = np.unique(np.round(diffs / 0.25).astype(np.int64), axis=0, return_index=True)
    diffs = diffs[np.sort(first)]
    # Quick rejection of every candidate at once on the 16 atoms whose images land
    # nearest the centre; most candidates (differences between distinct sites) fail.
    k = min(QUICK_PROBE, len(pos))
    _, idx = tree.query(centre - diffs, k=k)
    moved = pos[idx] + diffs[:, None, :]
    d, j = tree.query(moved.reshape(-1, 3), distance_upper_bound=tolerance)
    hit = np.isfinite(d)
    hit[hit] &= numbers[j[hit]] == numbers[idx.reshape(-1)][hit]
    inside = (np.linalg.norm(moved - centre, axis=2) <= rmax - margin).reshape(-1)
    n_in = inside.reshape(len(diffs), k).sum(axis=1)
    n_hit = (hit & inside).reshape(len(diffs), k).sum(axis=1)
    diffs = diffs[(n_in >= 3) & (n_hit >= min_match * n_in)]
    found, residual = [], []
    for t in diffs:
        # Probe the atoms whose image lands nearest the centre: for a long t these are
        # on the far side of the particle.
        probe = tree.query(centre - t, k=min(MAX_PROBE, len(pos)))[1]
        moved = pos[probe] + t
        inside = np.linalg.norm(moved - centre, axis=1) <= rmax - margin
        if inside.sum() < 8:
            continue
        d, j = tree.query(moved[inside], distance_upper_bound=tolerance)
        ok = np.isfinite(d)
        ok[ok] &= numbers[j[ok]] == numbers[probe][inside][ok]
        if ok.mean() >= min_match:
            found.append(t)
            residual.append(float(np.sqrt(np.mean(d[ok] ** 2))))
    return np.asarray(found).reshape(-1, 3), np.asarray(residual)


def _successive_minima(vectors: np.ndarray) -> np.ndarray:
    order = np.argsort(np.linalg.norm(vectors, axis=1), kind="stable")
    basis = []
    for v in vectors[order]:
        if not basis:
            basis.append(v)
        elif len(basis) == 1:
            if np.linalg.norm(np.cross(basis[0], v)) > 0.2 * np.linalg.norm(basis[0]) * np.linalg.norm(v):
                basis.append(v)
        else:
            normal = np.cross(basis[0], basis[1])
            if abs(normal @ v) > 0.2 * np.linalg.norm(normal) * np.linalg.norm(v):
                basis.append(v)
                break
    if len(basis) < 3:
        raise RecoveryError(f"found {len(vectors)} lattice translations but not three independent ones")
    b = np.asarray(basis)
    return b if np.linalg.det(b) > 0 else b * np.array([[1], [1], [-1]])


def _refine_basis(basis: np.ndarray, translations: np.ndarray) -> np.ndarray:
    coords = translations @ np.linalg.inv(basis)
    n = np.round(coords)
    good = np.all(np.abs(coords - n) < 0.15, axis=1)
    if good.sum() >= 3 and np.linalg.matrix_rank(n[good]) == 3:
        basis = np.linalg.lstsq(n[good], translations[good], rcond=None)[0]
    return basis


def _fold(pos, numbers, basis, origin, tolerance):
    """Fold atoms into the cell and merge periodic images per species (vectorised)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    frac = (pos - origin) @ np.linalg.inv(basis)
    frac -= np.floor(frac)
    lengths = np.linalg.norm(basis, axis=1)
    # Periodic KD-tree in scaled fractional space: exact for orthogonal cells and a
    # close proxy otherwise, at distances (the tolerance) far below site separations.
    scaled = np.minimum(frac * lengths, lengths * (1 - 1e-12))
    pairs = cKDTree(scaled, boxsize=lengths).query_pairs(tolerance, output_type="ndarray")
    pairs = pairs[numbers[pairs[:, 0]] == numbers[pairs[:, 1]]]
    n = len(frac)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    first = np.full(label.max() + 1, -1)
    first[label[::-1]] = np.arange(n)[::-1]  # first member of each site
    d = frac - frac[first[label]]
    d -= np.round(d)  # minimum image relative to the site's first member
    unwrapped = frac[first[label]] + d
    counts = np.bincount(label)
    mean = np.stack([np.bincount(label, weights=unwrapped[:, k]) for k in range(3)], axis=1) / counts[:, None]
    resid = (unwrapped - mean[label]) @ basis
    scatter = float(np.sqrt(np.mean(np.sum(resid ** 2, axis=1))))
    return mean % 1.0, numbers[first], scatter, counts


def recover_lattice(atoms: Atoms, tolerance: float = 0.5, min_match: float = 0.9,
                    max_translation: float = 20.0, margin: float = 1.0,
                    noise_factor: float = 2.0, residual_floor: float = 1e-3,
                    symprec_floor: float = LABEL_SYMPREC_RANGE[0]) -> Recovered:
    """Recover the conventional lattice and space group of a (rotated) particle.

    ``tolerance`` (A) is the matching distance for translations and sites, ``min_match``
    the fraction of tested atoms that must match for a translation to count. Of those,
    translations whose RMS mismatch exceeds ``noise_factor`` times the best one's (and
    ``residual_floor`` A) are pseudo-translations of an undistorted parent structure
    and are dropped.
    """
    pos = np.asarray(atoms.positions, float)
    numbers = np.asarray(atoms.numbers)
    if len(pos) < 8:
        raise RecoveryError(f"{len(pos)} atoms are too few to show a lattice")
    centre = pos.mean(axis=0)
    rmax = float(np.linalg.norm(pos - centre, axis=1).max())
    max_t = min(max_translation, 2.0 * rmax - 2.0 * margin)
    translations, residual = _verified_translations(pos, numbers, centre, rmax, tolerance, max_t,
                                                    min_match, margin)
    if len(translations):
        # Pseudo-translations of the undistorted aristotype also match, but only to within
        # the distortion; true ones match to within the noise. Keep those near the floor.
        floor = residual.min()
        translations = translations[residual <= max(noise_factor * floor, residual_floor)]
    if len(translations) < 3:
        raise RecoveryError(f"only {len(translations)} lattice translations verified")
    basis = _refine_basis(_successive_minima(translations), translations)
    span = np.linalg.norm(basis, axis=1).sum()
    near = np.linalg.norm(pos - centre, axis=1) <= min(rmax, span + 2.0)
    origin = pos[np.argmin(np.linalg.norm(pos - centre, axis=1))]
    frac, z, scatter, _ = _fold(pos[near], numbers[near], basis, origin, tolerance)
    cell = Atoms(numbers=z, cell=basis, scaled_positions=frac, pbc=True)
    # Every bundled label is stable over LABEL_SYMPREC_RANGE and only over it, so the
    # tolerance scaled to the noise stays inside that range.
    symprec = max(symprec_floor, min(4.0 * scatter, LABEL_SYMPREC_RANGE[1]))
    try:
        std = standardize(cell, symprec)
        number = space_group(cell, symprec).number
    except InvalidStructureError as exc:
        raise RecoveryError(f"spglib could not analyse the recovered cell: {exc}") from exc
    return Recovered(np.asarray(std.cell.cellpar()), number, len(translations), len(cell), symprec)
