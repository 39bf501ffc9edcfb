"""Optimal rigid alignment of two particles with optimal same-species atom assignment.

The problem: find the rotation R, translation t and species-preserving assignment that
minimise the RMSD between a predicted and a reference particle. It is solved by
alternating assignment and Kabsch (iterative closest point with a true assignment step)
from several starting rotations:

* **Starting rotations**: identity, the 24 rotations of the cube, four principal-axis
  frames and 4096 seeded uniform random rotations. All are scored at once
  (nearest-neighbour distance of 64 atoms near the centre); the best 24 are converged by
  nearest-neighbour ICP on the 8 A core, the best 4 of those on growing cores (16 A,
  all), and the best is refined with optimal assignment. The same candidates make the result independent of the prediction's frame.
* **Assignment step**, per species, exact whenever it is cheap to be exact:
  if every atom's nearest same-species neighbour is a bijection, that bijection is the
  optimal assignment (each term of the sum is individually minimal); otherwise a dense
  Hungarian assignment (scipy ``linear_sum_assignment``) for up to ``DENSE_LIMIT``
  atoms of a species; beyond that, a sparse minimum-weight matching restricted to
  KD-tree k-nearest candidates (``min_weight_full_bipartite_matching``), which is an
  upper bound and is reported with ``exact=False``.
* **Unequal atom counts**: each species matches min(n_pred, n_ref) pairs (rectangular
  assignment); unmatched atoms do not enter the RMSD (the atom-count error and the
  Hausdorff distance see them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

#: Seeded uniform random rotations among the starts (90% of SO(3) lies within 13 degrees).
N_RANDOM_STARTS = 4096
#: Starts kept after screening, then after ICP on the 8 A core.
KEEP_SCREENED, KEEP_CORE = 24, 4

#: Largest species block assigned with the dense Hungarian algorithm.
DENSE_LIMIT = 1500
#: Atoms used to score starting rotations.
SCORE_SAMPLE = 64
#: Maximum alignment/assignment iterations per start.
MAX_ITER = 50


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align`: ``pred @ rotation.T + translation`` ~ ``ref`` on the pairs."""

    rotation: np.ndarray
    translation: np.ndarray
    pred_index: np.ndarray
    ref_index: np.ndarray
    rmsd: float
    exact: bool

    def apply(self, positions: np.ndarray) -> np.ndarray:
        """Move predicted positions into the reference frame."""
        return positions @ self.rotation.T + self.translation


def kabsch(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation minimising ``|p R^T + t - q|`` for paired points."""
    pc, qc = p.mean(axis=0), q.mean(axis=0)
    if len(p) < 2:
        return np.eye(3), qc - pc
    rot, _ = Rotation.align_vectors(q - qc, p - pc)
    r = rot.as_matrix()
    return r, qc - pc @ r.T


def _assign_block(x: np.ndarray, y: np.ndarray, dense_limit: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Optimal (or sparse upper-bound) assignment of the smaller set into the larger."""
    swap = len(x) > len(y)
    a, b = (y, x) if swap else (x, y)  # a is the smaller side: every a gets a partner
    if len(a) == 0:
        return np.empty(0, int), np.empty(0, int), True
    tree = cKDTree(b)
    _, nn = tree.query(a, k=1)
    if len(np.unique(nn)) == len(a):
        ia, ib, exact = np.arange(len(a)), nn, True
    elif len(b) <= dense_limit:
        ia, ib = linear_sum_assignment(cdist(a, b, "sqeuclidean"))
        exact = True
    else:
        ia = ib = None
        for k in (8, 32, 128):
            k = min(k, len(b))
            dist, idx = tree.query(a, k=k)
            rows = np.repeat(np.arange(len(a)), k)
            # +1e-12 keeps exact zero distances as stored edges of the sparse graph.
            graph = csr_matrix((dist.ravel() ** 2 + 1e-12, (rows, idx.ravel())), shape=(len(a), len(b)))
            try:
                ia, ib = min_weight_full_bipartite_matching(graph)
                break
            except ValueError:
                continue
        if ia is None:
            ia, ib = linear_sum_assignment(cdist(a, b, "sqeuclidean"))
        exact = False
    return (ib, ia, exact) if swap else (ia, ib, exact)


def assign(x: np.ndarray, zx: np.ndarray, y: np.ndarray, zy: np.ndarray,
           dense_limit: int = DENSE_LIMIT) -> tuple[np.ndarray, np.ndarray, bool]:
    """Same-species assignment between point sets ``x`` and ``y`` (indices into each)."""
    ix, iy, exact = [], [], True
    for z in np.intersect1d(zx, zy):
        sx, sy = np.flatnonzero(zx == z), np.flatnonzero(zy == z)
        a, b, ok = _assign_block(x[sx], y[sy], dense_limit)
        ix.append(sx[a])
        iy.append(sy[b])
        exact &= ok
    if not ix:
        return np.empty(0, int), np.empty(0, int), True
    return np.concatenate(ix), np.concatenate(iy), exact


def _cube_rotations() -> np.ndarray:
    return Rotation.create_group("O").as_matrix()


def _principal_frames(p: np.ndarray, q: np.ndarray) -> list[np.ndarray]:
    def axes(x):
        _, vecs = np.linalg.eigh(np.cov((x - x.mean(0)).T))
        return vecs

    ap, aq = axes(p), axes(q)
    out = []
    for signs in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)):
        r = aq @ np.diag(signs) @ ap.T
        if np.linalg.det(r) < 0:
            r = aq @ np.diag(signs) @ np.diag([1, 1, -1]) @ ap.T
        out.append(r)
    return out


_GRID_CACHE: dict[str, np.ndarray] = {}


def starting_rotations(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Every rotation tried as a start (n, 3, 3); deterministic."""
    if "grid" not in _GRID_CACHE:
        _GRID_CACHE["grid"] = Rotation.random(N_RANDOM_STARTS, rng=np.random.default_rng(0)).as_matrix()
    frames = _principal_frames(p, q) if len(p) >= 3 and len(q) >= 3 else []
    return np.concatenate([np.eye(3)[None], _cube_rotations(), np.asarray(frames).reshape(-1, 3, 3),
                           _GRID_CACHE["grid"]])


class _SpeciesTrees:
    """KD-trees of the reference, one per species, built once per alignment."""

    def __init__(self, q: np.ndarray, zq: np.ndarray):
        self.points = q
        self.index = {int(z): np.flatnonzero(zq == z) for z in np.unique(zq)}
        self.trees = {z: cKDTree(q[idx]) for z, idx in self.index.items()}

    def nearest(self, x: np.ndarray, zx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows of x, matched reference indices, squared distances), species-aware."""
        rows, cols, d2 = [], [], []
        for z, tree in self.trees.items():
            sel = np.flatnonzero(zx == z)
            if len(sel):
                d, j = tree.query(x[sel], k=1)
                rows.append(sel)
                cols.append(self.index[z][j])
                d2.append(d ** 2)
        if not rows:
            return np.empty(0, int), np.empty(0, int), np.empty(0)
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(d2)


def _coarse(p, zp, trees, r0, t0, iters=30):
    """Classic ICP (nearest-neighbour correspondences): cheap, converges the rotation."""
    r, t = r0, t0
    for _ in range(iters):
        rows, cols, _ = trees.nearest(p @ r.T + t, zp)
        if len(rows) == 0:
            break
        r_new, t_new = kabsch(p[rows], trees.points[cols])
        done = np.abs(r_new - r).max() < 1e-10 and np.abs(t_new - t).max() < 1e-10
        r, t = r_new, t_new
        if done:
            break
    rows, cols, d2 = trees.nearest(p @ r.T + t, zp)
    return r, t, float(d2.mean()) if len(d2) else np.inf


def _refine(p, zp, q, zq, r, t, dense_limit):
    """Alternate optimal assignment and Kabsch until the assignment no longer changes."""
    prev, exact = None, True
    ip = iq = np.empty(0, int)
    for _ in range(MAX_ITER):
        ip, iq, exact = assign(p @ r.T + t, zp, q, zq, dense_limit)
        if len(ip) == 0:
            return r, t, ip, iq, np.inf, True
        key = (ip.tobytes(), iq.tobytes())
        if key == prev:
            break
        prev = key
        r, t = kabsch(p[ip], q[iq])
    diff = p[ip] @ r.T + t - q[iq]
    return r, t, ip, iq, float(np.sqrt((diff ** 2).sum(1).mean())), exact


#: Predicted atoms used by each coarse stage.
COARSE_SAMPLE = 2000
#: Core radii (Angstrom) of the coarse stages: a wrong rotation by a few degrees moves
#: outer atoms by whole bond lengths (a false local minimum of ICP on a lattice) but
#: core atoms only slightly, so the rotation is converged on the core first.
COARSE_SHELLS = (8.0, 16.0, np.inf)


def _shells(p0: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    dist = np.linalg.norm(p0, axis=1)
    order = np.argsort(dist, kind="stable")
    out = []
    for radius in COARSE_SHELLS:
        sel = np.flatnonzero(dist <= radius)
        if len(sel) < 50:
            sel = order[:50]
        if len(sel) > COARSE_SAMPLE:
            sel = np.sort(rng.choice(sel, COARSE_SAMPLE, replace=False))
        out.append(sel)
    return out


def align(pred: np.ndarray, zpred: np.ndarray, ref: np.ndarray, zref: np.ndarray,
          n_starts: int | None = KEEP_CORE, starts: np.ndarray | None = None,
          dense_limit: int = DENSE_LIMIT) -> Alignment:
    """Best rigid alignment of ``pred`` onto ``ref`` with optimal same-species assignment.

    Starts are screened by a subsample's nearest-neighbour distance; the best
    ``n_starts`` are converged by nearest-neighbour ICP on up to ``COARSE_SAMPLE`` atoms;
    the best of those is refined with full optimal assignment. ``n_starts=None`` skips
    screening and the coarse stage and fully refines every start, which is the
    brute-force reference the tests compare against.
    """
    pred, ref = np.asarray(pred, float), np.asarray(ref, float)
    zpred, zref = np.asarray(zpred), np.asarray(zref)
    starts = starting_rotations(pred, ref) if starts is None else np.asarray(starts)
    pc, qc = pred.mean(0), ref.mean(0)
    p0, q0 = pred - pc, ref - qc
    zero = np.zeros(3)
    if n_starts is None:
        results = [_refine(p0, zpred, q0, zref, r0, zero, dense_limit) for r0 in starts]
        best = min(results, key=lambda res: res[4])
    else:
        rng = np.random.default_rng(0)
        trees = _SpeciesTrees(q0, zref)
        shells = _shells(p0, rng)
        sample = shells[0][:SCORE_SAMPLE]
        moved = np.einsum("nd,sed->sne", p0[sample], starts)  # every start at once
        rows, _, d2 = trees.nearest(moved.reshape(-1, 3), np.tile(zpred[sample], len(starts)))
        scores = np.bincount(rows // len(sample), weights=d2, minlength=len(starts))
        chosen = starts[np.argsort(scores, kind="stable")[:KEEP_SCREENED]]
        core = [_coarse(p0[shells[0]], zpred[shells[0]], trees, r0, zero, iters=15) for r0 in chosen]
        core.sort(key=lambda c: c[2])
        coarse = []
        for r, t, score in core[:n_starts]:
            for sel in shells[1:]:
                r, t, score = _coarse(p0[sel], zpred[sel], trees, r, t)
            coarse.append((r, t, score))
        r, t, _ = min(coarse, key=lambda c: c[2])
        best = _refine(p0, zpred, q0, zref, r, t, dense_limit)
    r, t, ip, iq, rmsd, exact = best
    # Back to the original frames: pred @ R^T + (t + qc - pc @ R^T).
    return Alignment(r, t + qc - pc @ r.T, ip, iq, rmsd, exact)
