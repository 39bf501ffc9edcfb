"""Task 1 metrics: a predicted particle against its reference (definitions: docs/metrics.md).

Every cost is bounded, also for degenerate predictions: g(r) and the coordination numbers
use at most about ``MAX_PAIRS`` pair distances (seeded centre atoms beyond it), and the
alignment bounds its own search (``c2np.metrics.alignment``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, cKDTree
from scipy.spatial import QhullError
from scipy.spatial.distance import cdist

from c2np.errors import C2NPError
from c2np.metrics.alignment import align, objective, pair_counts

#: RDF: pair distances up to R_MAX (Angstrom) in bins of width DR.
RDF_R_MAX = 6.0
RDF_DR = 0.05
#: Coordination cutoff (Angstrom) for the local-environment variance.
CN_CUTOFF = 3.0


@dataclass(frozen=True)
class ParticleFeatures:
    """Alignment-independent descriptors of one particle, computed once per particle."""

    n_atoms: int
    hull_volume: float
    volume_ratio: float
    rdf: np.ndarray
    cn_variance: float


def hull_volume(positions: np.ndarray) -> float:
    """Convex-hull volume (A^3); 0 for fewer than 4 or coplanar points."""
    if len(positions) < 4:
        return 0.0
    try:
        return float(ConvexHull(positions).volume)
    except QhullError:
        return 0.0


def volume_ratio(positions: np.ndarray, volume: float | None = None) -> float:
    """Hull volume over the volume of the particle's own sphere, 4/3 pi r^3 with r the
    largest distance of an atom from the centroid: how fully the particle fills its
    sphere (a shape measure, unchanged by scaling; 0 for fewer than 4 atoms)."""
    if len(positions) < 4:
        return 0.0
    volume = hull_volume(positions) if volume is None else volume
    r = np.sqrt(((positions - positions.mean(0)) ** 2).sum(1).max())
    return float(volume / (4.0 / 3.0 * np.pi * r ** 3)) if r > 0 else 0.0


#: Most pair distances computed for one particle's g(r) and coordination numbers: 3.4x
#: the 1.18 M pairs within 6 A of the largest reference particle, so no real particle
#: reaches it, while a collapsed prediction (8,000 atoms within 3 A: 3.2e7 pairs) would
#: otherwise cost minutes and gigabytes.
MAX_PAIRS = 4_000_000
#: Atoms whose neighbour counts estimate a particle's pair count.
PAIR_PROBES = 64


@dataclass(frozen=True)
class PairDistances:
    """Pairs closer than a cutoff: atom ``i``, atom ``j``, their distance ``d``.

    ``centres is None``: every pair i < j of the particle. Otherwise only the pairs of
    these seeded centre atoms with every other atom (i a centre, both orders), the
    bounded form used when the particle has more than ``MAX_PAIRS`` pairs: g(r) and the
    coordination numbers are then averaged over the centres instead of all atoms."""

    i: np.ndarray
    j: np.ndarray
    d: np.ndarray
    centres: np.ndarray | None = None


def _distances(positions: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    # Per coordinate on contiguous columns: the same sums as a row-wise norm, bit for
    # bit, at a sixth of its cost on 10^6 pairs (no (n, 3) temporaries).
    d2 = np.zeros(len(i))
    for x in np.ascontiguousarray(positions.T):
        dx = x[i] - x[j]
        d2 += dx * dx
    return np.sqrt(d2)


def _pair_distances(positions: np.ndarray, r_max: float, max_pairs: int = MAX_PAIRS) -> PairDistances:
    """Every pair closer than ``r_max``, or, if there are more than ``max_pairs`` of them
    (estimated from the neighbour counts of ``PAIR_PROBES`` seeded atoms), the pairs of
    as many seeded centre atoms as keep the count near ``max_pairs``."""
    n = len(positions)
    tree = cKDTree(positions)
    rng = np.random.default_rng(0)
    probes = rng.choice(n, min(n, PAIR_PROBES), replace=False)
    # Each probe's count is at most n, so the estimate itself costs at most 64 n.
    per_atom = tree.query_ball_point(positions[probes], r_max, return_length=True).mean() - 1
    if n * per_atom / 2 <= max_pairs:
        pairs = tree.query_pairs(r_max, output_type="ndarray")
        i, j = pairs[:, 0], pairs[:, 1]
        return PairDistances(i, j, _distances(positions, i, j))
    m = int(np.clip(max_pairs / max(per_atom, 1.0), 1, n))
    centres = np.sort(rng.choice(n, m, replace=False))
    if n <= 2 * per_atom:
        # Most atoms within r_max of each other (a collapsed particle): the centres'
        # distance tables cost a third of the tree's pair search, and give the same
        # pairs and distances bit for bit.
        return _centre_tables(positions, centres, r_max)
    found = cKDTree(positions[centres]).sparse_distance_matrix(tree, r_max, output_type="ndarray")
    i, j = centres[found["i"]], found["j"]
    keep = i != j
    return PairDistances(i[keep], j[keep], found["v"][keep], centres)


#: Centre atoms per distance table of :func:`_centre_tables` (tables stay in cache).
TABLE_CENTRES = 32


def _centre_tables(positions: np.ndarray, centres: np.ndarray, r_max: float) -> PairDistances:
    """The bounded pairs of :func:`_pair_distances` from the distance tables of
    ``TABLE_CENTRES`` centres at a time against every atom, summed per coordinate as
    :func:`_distances` does."""
    columns = np.ascontiguousarray(positions.T)
    i, j, d = [], [], []
    for start in range(0, len(centres), TABLE_CENTRES):
        c = centres[start:start + TABLE_CENTRES]
        d2 = np.zeros((len(c), len(positions)))
        for x in columns:
            dx = x[c][:, None] - x
            d2 += dx * dx
        table = np.sqrt(d2)
        table[np.arange(len(c)), c] = np.inf  # an atom is no pair with itself
        rows, cols = np.nonzero(table <= r_max)
        i.append(c[rows])
        j.append(cols)
        d.append(table[rows, cols])
    return PairDistances(np.concatenate(i), np.concatenate(j), np.concatenate(d), centres)


def rdf(positions: np.ndarray, r_max: float = RDF_R_MAX, dr: float = RDF_DR,
        pairs: PairDistances | None = None) -> np.ndarray:
    """g(r) per bin: 2 n_k / (N 4 pi r_k^2 dr), all species together (A^-3).

    ``pairs``: the pairs within at least ``r_max``, if known. In their bounded form
    (``centres``) 2 n_k / N is the mean over the centres of their neighbours in bin k."""
    edges = np.arange(0.0, r_max + dr / 2, dr)
    n = len(positions)
    if n < 2:
        return np.zeros(len(edges) - 1)
    pairs = _pair_distances(positions, r_max) if pairs is None else pairs
    counts, _ = np.histogram(pairs.d, bins=edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    if pairs.centres is None:
        return 2.0 * counts / (n * 4.0 * np.pi * mid ** 2 * dr)
    return counts / (len(pairs.centres) * 4.0 * np.pi * mid ** 2 * dr)


def coordination_variance(positions: np.ndarray, cutoff: float = CN_CUTOFF,
                          pairs: PairDistances | None = None) -> float:
    """Variance over atoms of the number of neighbours within ``cutoff`` (inclusive).

    ``pairs``: the pairs within at least ``cutoff``, if known; in their bounded form the
    variance is over the centre atoms."""
    if len(positions) == 0:
        return 0.0
    pairs = _pair_distances(positions, cutoff) if pairs is None else pairs
    near = pairs.d <= cutoff
    n = len(positions)
    if pairs.centres is not None:
        cn = np.bincount(np.searchsorted(pairs.centres, pairs.i[near]), minlength=len(pairs.centres))
    else:
        cn = np.bincount(pairs.i[near], minlength=n) + np.bincount(pairs.j[near], minlength=n)
    return float(np.var(cn))


def features(positions: np.ndarray) -> ParticleFeatures:
    """Descriptors of a particle used by :func:`task1_metrics`."""
    positions = np.asarray(positions, float)
    volume = hull_volume(positions)
    # One neighbour search serves the RDF and the coordination numbers (CN_CUTOFF < RDF_R_MAX).
    pairs = _pair_distances(positions, max(RDF_R_MAX, CN_CUTOFF)) if len(positions) >= 2 else None
    return ParticleFeatures(len(positions), volume, volume_ratio(positions, volume), rdf(positions, pairs=pairs),
                            coordination_variance(positions, pairs=pairs))


def rdf_error(g_pred: np.ndarray, g_ref: np.ndarray) -> float:
    """Relative L1 distance sum|g_p - g_r| / sum g_r (0 = identical)."""
    total = float(np.sum(g_ref))
    diff = float(np.sum(np.abs(g_pred - g_ref)))
    return diff / total if total > 0 else diff


#: CDVAE's structural validity (Xie et al., 2022): no two atoms closer than this (A).
VALID_MIN_DISTANCE = 0.5
#: Two atoms closer than this (A) sit on one site: a collapse, not a short bond.
COINCIDENT_DISTANCE = 1e-3


def nearest_distances(pos: np.ndarray) -> np.ndarray:
    """Each atom's distance to its nearest other atom (A; inf for a lone atom), one k-d tree."""
    pos = np.asarray(pos, float)
    return cKDTree(pos).query(pos, k=2)[0][:, 1] if len(pos) > 1 else np.full(len(pos), np.inf)


def crowding(pos: np.ndarray) -> dict[str, float]:
    """A predicted particle's ``min_distance`` (A, the closest pair; inf for a lone atom) and
    ``close_atom_fraction`` (its atoms within VALID_MIN_DISTANCE of another; docs/metrics.md,
    Validity)."""
    nearest = nearest_distances(pos)
    return {"min_distance": float(nearest.min()), "close_atom_fraction": float(np.mean(nearest < VALID_MIN_DISTANCE))}


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between two point sets (A), species ignored."""
    if len(a) == 0 or len(b) == 0:
        return float("inf")
    return float(max(_directed_hausdorff(a, b), _directed_hausdorff(b, a)))


#: Points of the inner set whose distances bound the outer set's from above, and the
#: outer points queried first for a lower bound, in :func:`_directed_hausdorff`.
HAUSDORFF_SAMPLE, HAUSDORFF_FIRST = 64, 32


def _directed_hausdorff(x: np.ndarray, y: np.ndarray) -> float:
    """Largest distance from a point of ``x`` to its nearest point of ``y``."""
    tree = cKDTree(y)
    spread_x = ((x - x.mean(0)) ** 2).sum(1).max()
    spread_y = ((y - y.mean(0)) ** 2).sum(1).max()
    if spread_x <= 4 * spread_y or len(x) <= HAUSDORFF_FIRST:
        return float(tree.query(x)[0].max())
    # x reaches more than twice as far out as y (a collapsed or stretched prediction), and
    # a nearest-point query from far outside a dense set visits much of its tree. The
    # distance to the nearest of a seeded sample of y bounds each point's from above;
    # the exact distances of the points with the largest bounds bound the maximum from
    # below, and only the points whose upper bound reaches that are queried: the same
    # maximum from far fewer queries (a third of the time on the benchmark's collapsed
    # prediction).
    sample = y[np.random.default_rng(0).choice(len(y), min(len(y), HAUSDORFF_SAMPLE), replace=False)]
    upper = cdist(x, sample).min(1)
    low = tree.query(x[np.argsort(upper)[-HAUSDORFF_FIRST:]])[0].max()
    rest = np.flatnonzero(upper >= low * (1 - 1e-9))  # margin: two distance routines' rounding
    return float(max(low, tree.query(x[rest])[0].max())) if len(rest) else float(low)


def task1_metrics(pred_pos: np.ndarray, pred_z: np.ndarray, ref_pos: np.ndarray, ref_z: np.ndarray,
                  ref_features: ParticleFeatures | None = None) -> dict[str, float]:
    """All Task 1 metrics for one predicted particle (see docs/metrics.md)."""
    pred_pos, ref_pos = np.asarray(pred_pos, float), np.asarray(ref_pos, float)
    for name, x in (("predicted", pred_pos), ("reference", ref_pos)):
        if not np.isfinite(x).all():
            # No distance, hull or alignment is defined for them (c2np evaluate refuses
            # such files before scoring).
            raise C2NPError(f"task1_metrics: the {name} positions hold NaN or infinite values")
    ref_f = features(ref_pos) if ref_features is None else ref_features
    pred_f = features(pred_pos)
    out = {"atom_count_error": abs(len(pred_pos) - len(ref_pos)) / max(len(ref_pos), 1),
           "hull_volume_error": (abs(pred_f.hull_volume - ref_f.hull_volume) / ref_f.hull_volume
                                 if ref_f.hull_volume > 0 else float("nan")),
           "volume_ratio": pred_f.volume_ratio,
           "volume_ratio_error": abs(pred_f.volume_ratio - ref_f.volume_ratio),
           "rdf_error": rdf_error(pred_f.rdf, ref_f.rdf),
           "lev_pred": pred_f.cn_variance, "lev_ref": ref_f.cn_variance,
           "lev_error": abs(pred_f.cn_variance - ref_f.cn_variance)}
    if len(pred_pos) == 0:
        out.update(rmsd=objective(0.0, *pair_counts(np.asarray(pred_z), np.asarray(ref_z))),
                   hausdorff=float("inf"), matched_fraction=0.0, assignment_exact=True,
                   exact_embedding=False, hypotheses=0, refined=0, best_hits=0, degenerate=False)
        return out
    al = align(pred_pos, pred_z, ref_pos, ref_z)
    moved = al.apply(pred_pos)
    out["rmsd"] = al.rmsd
    out["hausdorff"] = hausdorff(moved, ref_pos)
    out["matched_fraction"] = len(al.ref_index) / max(len(ref_pos), 1)
    out.update({k: al.certificate[k] for k in ("assignment_exact", "exact_embedding", "hypotheses",
                                                "refined", "best_hits", "degenerate")})
    return out
