"""Optimal rigid alignment of two particles with optimal same-species atom assignment.

**The objective** (the one number the Task 1 RMSD reports; docs/metrics.md). Species z
pairs min(N_P^z, N_Q^z) atoms of the two particles; the other |N_P^z - N_Q^z| atoms are
unmatched. With n_u unmatched atoms and n = sum_z max(N_P^z, N_Q^z) atoms in all,

    RMSD^2 = ( sum over pairs |R p_i + t - q_pi(i)|^2 + n_u * UNMATCHED_PENALTY^2 ) / n,

minimised over the rotation R, the translation t and the assignment pi. The unmatched
term does not depend on R, t or pi, so the search minimises the pair sum and the
reported value is exactly the minimum found. Consequences: an exact embedding of the
smaller particle in the larger (pair sum 0) is a global optimum, and a particle with
atoms missing or extra can never score 0.

**The search** maps the particle with fewer atoms (S) into the other (L):

* *Environment hypotheses*: around a few atoms of S's rarest shared species, the two
  nearest non-collinear neighbour vectors; every atom of that species in L whose
  neighbour vectors match them (species, lengths, angle) gives a rotation and a
  translation. For two particles cut from one lattice the true motion is among them,
  in any frame and at any offset, so an exact embedding is found whenever one exists;
  it is verified on every atom and then certified optimal.
* *Start rotations*: identity, the 24 rotations of the cube, four principal-axis frames
  and 4096 seeded uniform random rotations, with the centroids superposed, for
  particles that do not embed.
* All hypotheses are screened by the nearest same-species distance of 64 core atoms of S
  (the starts on 16 of them first); the best 24 or more converge by nearest-neighbour ICP
  on the 8 A core; symmetric copies (motions related by a rotation mapping L or S onto
  itself, which would retrace one refinement) are dropped; the distinct survivors
  converge on growing cores (16 A, all) and are refined by alternating optimal
  assignment and Kabsch (all of them for dissimilar particles, one for a near-copy); the
  lowest objective wins.
* **Assignment step**, per species, exact whenever it is cheap to be exact:
  if every atom's nearest same-species neighbour is a bijection, that bijection is the
  optimal assignment (each term of the sum is individually minimal); otherwise a dense
  Hungarian assignment (scipy ``linear_sum_assignment``) for up to ``DENSE_LIMIT``
  atoms of a species; beyond that, a sparse minimum-weight matching restricted to
  KD-tree k-nearest candidates, which is an upper bound and is reported with
  ``exact=False``; with it the refinement stops once a Kabsch step gains less than
  ``SPARSE_STOP``. That matching is solved by a primal-dual solver from the
  nearest-neighbour assignment whose result LP duals certify optimal, with scipy's
  ``min_weight_full_bipartite_matching`` as the fallback (:func:`_sparse_matching`), which
  is given a graph only once a unit-capacity maximum flow has shown it a full matching
  (:func:`_full_matching_exists`; same answers, minutes less on compressed particles).

* **Degenerate predictions** (collapsed or scattered: median nearest-neighbour distance
  more than ``DEGENERATE_SCALE`` (6) times off the reference's) get a bounded search: no
  environment hypotheses, one candidate converged on the core only, 2 to
  ``DEGENERATE_MAX_ITER`` refinement steps (fewer for more atoms) with a greedy
  O(n log n) assignment, the lowest pair sum of the steps kept; the value is an upper
  bound. The greedy assignment
  also replaces a dense solve where the sparse matching finds no full matching in a
  block too large to solve densely (``DENSE_FALLBACK_PAIRS``).

Every result carries a certificate: how many hypotheses were screened and refined, how
many refinements reached the best value, whether an exact embedding was found (then the
value is the proven global minimum), whether the assignment was exact and whether the
prediction was degenerate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra, maximum_flow, min_weight_full_bipartite_matching
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

#: Seeded uniform random rotations among the starts (90% of SO(3) lies within 13 degrees).
N_RANDOM_STARTS = 4096
#: Hypotheses kept after screening.
KEEP_SCREENED = 24

#: Largest species block assigned with the dense Hungarian algorithm.
DENSE_LIMIT = 1500
#: Atoms used to score starting rotations. A first screen on 16 atoms keeps
#: PRESCREEN_FACTOR times as many starts as the ICP stage takes (192 to 1,024).
SCORE_SAMPLE, PRESCREEN_FACTOR = 64, 8
#: Maximum alignment/assignment iterations per start.
MAX_ITER = 50
#: With an inexact (sparse) assignment, whose solve cost 0.05-0.4 s per species block
#: of 10^4 atoms on scipy's solver alone (0.07-0.14 s on _sparse_matching), the
#: iteration stops once a Kabsch step lowers the pair sum by less than this (A^2 per
#: pair): the steps shrink geometrically (2.4, 0.36, 2e-4 A^2 in all on the largest
#: benchmark pair), and stopping there cost 6e-6 A of RMSD (docs/metrics.md).
SPARSE_STOP = 1e-3
#: Candidates per atom of the greedy assignment (see _greedy_block).
GREEDY_K = 8
#: Candidates per atom of the sparse assignment: the nearest 8, widened to 32 and 128
#: while no full matching exists among them.
SPARSE_K = (8, 32, 128)
#: The sparse assignment's own solver (:func:`_sparse_matching`) takes a block small
#: enough for scipy's dense solve (DENSE_MATCHING_PAIRS) whose rows' nearest columns
#: collide for at most n_cols / SPARSE_SURPLUS_DIVISOR rows, for at most
#: n_cols / SPARSE_PHASE_DIVISOR phases (each augments one path or more; the benchmark's
#: largest blocks, 60 and 226 collisions in 10,860 columns, need 20 and 31), else scipy's.
#: It takes every larger block, however crowded, to the end.
SPARSE_SURPLUS_DIVISOR, SPARSE_PHASE_DIVISOR = 32, 64
#: Slack (A^2) of the LP-duality certificate of a sparse assignment, per constraint.
CERTIFICATE_TOL = 1e-9
#: Largest block (pairs) whose sparse graph :func:`_scipy_matching` solves densely: scipy's
#: LAPJVsp took 24-36 s a call on the 1,934 lithium atoms of a crowded FlowMM particle
#: (LiCaH3, R = 29, 8-32 candidates an atom), where linear_sum_assignment on the dense
#: matrix took 0.41 s for the same optimum; a crowded 4,000-atom block took 1.9 s densely.
DENSE_MATCHING_PAIRS = 16_000_000
#: Largest block (pairs) solved densely when the sparse matching has no full matching;
#: 4e7 float64 costs are 320 MB. Larger blocks get the greedy upper bound.
DENSE_FALLBACK_PAIRS = 40_000_000


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align`: ``pred @ rotation.T + translation`` ~ ``ref`` on the pairs.

    ``rmsd`` is the objective of the module docstring (the reported Task 1 RMSD);
    ``certificate`` says how its optimum was established.
    """

    rotation: np.ndarray
    translation: np.ndarray
    pred_index: np.ndarray
    ref_index: np.ndarray
    rmsd: float
    exact: bool
    certificate: dict

    def apply(self, positions: np.ndarray) -> np.ndarray:
        """Move predicted positions into the reference frame."""
        return positions @ self.rotation.T + self.translation


def kabsch(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation minimising ``|p R^T + t - q|`` for paired points."""
    pc, qc = p.mean(axis=0), q.mean(axis=0)
    if len(p) < 2:
        return np.eye(3), qc - pc
    # SVD of the 3x3 covariance, the sign fixed to a proper rotation; plain numpy, since
    # the search calls this thousands of times and scipy's align_vectors costs 20x more.
    u, _, vt = np.linalg.svd((p - pc).T @ (q - qc))
    r = vt.T @ u.T
    if np.linalg.det(r) < 0:
        vt[2] *= -1
        r = vt.T @ u.T
    return r, qc - pc @ r.T


def _distinct(idx: np.ndarray, n: int) -> bool:
    """True if the indices ``idx``, each in [0, n), are pairwise distinct: the answer of
    ``len(np.unique(idx)) == len(idx)`` from a mark per index, in 2-17 microseconds where
    np.unique's hashing took 0.08-1.1 ms (300-10,000 indices); the bijection, embedding
    and symmetry tests ask it thousands of times per split."""
    seen = np.zeros(n, bool)
    seen[idx] = True
    return int(np.count_nonzero(seen)) == len(idx)


def _greedy_block(a: np.ndarray, b: np.ndarray, dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """A partner in ``b`` for every point of ``a`` (the smaller set), in O(n log n):
    rank by rank through each point's nearest candidates (``dist``, ``idx``: a KD-tree
    query of ``a`` in ``b`` with k = min(GREEDY_K, len(b))), every unused candidate goes
    to the nearest point proposing it; the points left over are matched to the unused
    ones in order of distance from ``b``'s centroid. An upper bound, for particles no
    matching of near candidates can cover."""
    k = min(GREEDY_K, len(b))
    dist, idx = dist.reshape(len(a), k), idx.reshape(len(a), k)
    partner, used = np.full(len(a), -1), np.zeros(len(b), bool)
    for rank in range(k):
        rows = np.flatnonzero(partner < 0)
        rows = rows[~used[idx[rows, rank]]]
        cols = idx[rows, rank]
        order = np.lexsort((dist[rows, rank], cols))  # by column, nearest proposer first
        first = order[np.r_[True, cols[order][1:] != cols[order][:-1]]] if len(order) else order
        partner[rows[first]] = cols[first]
        used[cols[first]] = True
    left = np.flatnonzero(partner < 0)
    if len(left):
        centre = b.mean(0)
        free = np.flatnonzero(~used)
        rows = left[np.argsort(((a[left] - centre) ** 2).sum(1), kind="stable")]
        partner[rows] = free[np.argsort(((b[free] - centre) ** 2).sum(1), kind="stable")][:len(rows)]
    return partner


def _sparse_matching(cost: np.ndarray, idx: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The minimum-cost matching of every row to a distinct column among its candidates,
    the optimum scipy's ``min_weight_full_bipartite_matching`` finds on the same graph:
    row i may take column ``idx[i, k]`` at ``cost[i, k]`` (each row ascending in cost).
    Returns (rows, columns); ``ValueError`` if no such matching exists.

    scipy's LAPJVsp skips its initialisation on a rectangular graph and scans every
    column at each step of each row's search: 0.3-0.5 s for the 10^4 hydrogen atoms of
    two lattices, whose nearest neighbours collide for a few per cent of the rows. Here
    every row starts on its nearest column (duals: row minima, columns 0), and the
    columns claimed more than once pass their surplus rows on along shortest augmenting
    paths to unclaimed columns (the primal-dual Hungarian method): per phase one
    multi-source Dijkstra (scipy's, in C) over the reduced costs, the duals moved by the
    distances up to the last path taken, and the paths to the nearest unclaimed columns
    augmented together while they share no node. The result is *certified* by LP
    duality: u_i + v_j <= c_ij on every edge, equality on the matched ones, v_j <= 0 and
    v_j = 0 on the unmatched columns (each to CERTIFICATE_TOL), so its cost is the dual
    bound. scipy's solver takes a block of at most ``DENSE_MATCHING_PAIRS`` pairs (its
    dense solve) instead when the surplus exceeds ``n_cols / SPARSE_SURPLUS_DIVISOR``
    (many phases: the glassy predictions, whose small blocks scipy solves in
    milliseconds) or after ``n_cols / SPARSE_PHASE_DIVISOR`` phases; a larger block runs
    until every surplus row has moved. Any block whose certificate fails goes to scipy.
    """
    n, k = cost.shape
    col, u, v = idx[:, 0].copy(), cost[:, 0].copy(), np.zeros(n_cols)
    load = np.bincount(col, minlength=n_cols)
    extra = int((load[load > 1] - 1).sum())  # rows to move on
    if n * n_cols > DENSE_MATCHING_PAIRS:
        # Beyond the dense solve scipy's alternative is LAPJVsp, which stalls on crowded
        # blocks (an ADiT particle, LiCuH3 R = 30: 2,623 of 9,078 hydrogen rows colliding;
        # one call had not returned after 2 minutes, where this solver took 1.5 s for the
        # certified optimum). Every phase augments at least one path, so `extra` phases end it.
        phases = extra + 1
    elif extra * SPARSE_SURPLUS_DIVISOR > n_cols:
        return _scipy_matching(cost, idx, n_cols)
    else:
        phases = max(n_cols // SPARSE_PHASE_DIVISOR, 1)
    # Nodes of the residual graph: columns 0..n_cols-1, rows n_cols..n_cols+n-1. Arcs:
    # a column to each row on it (tight, reduced cost 0) and a row to its candidates.
    row_arcs = k * np.arange(1, n + 1)
    limit = np.inf
    for _ in range(phases):
        surplus = load > 1
        if not surplus.any():
            break
        reduced = np.maximum(cost - u[:, None] - v[idx], 0.0)  # >= 0 up to rounding
        indptr = np.concatenate([[0], np.cumsum(load)])
        residual = csr_matrix((np.concatenate([np.zeros(n), reduced.ravel()]),
                               np.concatenate([n_cols + np.argsort(col, kind="stable"), idx.ravel()]),
                               np.concatenate([indptr, indptr[-1] + row_arcs])),
                              shape=(n_cols + n, n_cols + n))
        while True:
            # Bounded by 4x the last phase's reach, within which 47 of the benchmark
            # blocks' 51 phases found their paths; unbounded if that finds none.
            dist, pred = dijkstra(residual, indices=np.flatnonzero(surplus), min_only=True,
                                  return_predecessors=True, limit=limit)[:2]
            free = np.flatnonzero((load == 0) & np.isfinite(dist[:n_cols]))
            if len(free):
                break
            if not np.isfinite(limit):
                raise ValueError("no full matching exists")  # no augmenting path is left
            limit = np.inf
        budget, used = load - 1, np.zeros(n_cols + n, bool)
        paths, reach = [], 0.0
        for f in free[np.argsort(dist[free], kind="stable")]:
            node, path = f, []
            while node >= n_cols or not surplus[node]:
                path.append(node)
                node = pred[node]
            if used[path].any() or budget[node] == 0:
                break  # it waits for the next phase, so that every nearer path is taken
            used[path] = True
            budget[node] -= 1
            paths.append((path, node))
            reach = dist[f]
        # Duals moved by the distance short of `reach`: every arc keeps a reduced cost
        # >= 0, the arcs of the chosen paths become tight, unclaimed columns keep v = 0.
        v += np.minimum(dist[:n_cols], reach) - reach
        u += reach - np.minimum(dist[n_cols:], reach)
        for path, source in paths:  # column, row, column, ..., row (toward the source)
            for t in range(1, len(path), 2):
                col[path[t] - n_cols] = path[t - 1]
            load[path[0]] += 1
            load[source] -= 1
        limit = 4 * reach if reach > 0 else np.inf
    else:
        return _scipy_matching(cost, idx, n_cols)
    reduced = cost - u[:, None] - v[idx]
    on = np.argmax(idx == col[:, None], axis=1)
    if ((reduced >= -CERTIFICATE_TOL).all() and (np.abs(reduced[np.arange(n), on]) <= CERTIFICATE_TOL).all()
            and (v <= CERTIFICATE_TOL).all() and (np.abs(v[load == 0]) <= CERTIFICATE_TOL).all()):
        return np.arange(n), col
    return _scipy_matching(cost, idx, n_cols)


def _full_matching_exists(idx: np.ndarray, n_cols: int) -> bool:
    """True if every row of ``idx`` (its candidate columns) can take a distinct column: a
    maximum flow of unit capacities (scipy's Dinic, O(E sqrt V)) through source -> rows ->
    candidates -> sink saturates every row.

    scipy's LAPJVsp proves a graph infeasible only after its search has tried everything:
    on a compressed DiffCSP particle (LiAlH3, R = 29; 7,248 hydrogen atoms, 7,937 columns,
    128 candidates each, 2,976 rows whose nearest column is taken) it was still searching
    after 2 minutes, step after step of the refinement (the particle had not been scored
    after 24 CPU-minutes), where this flow found 7,195 as the largest matching in 0.8 s."""
    n, k = idx.shape
    source, sink = n + n_cols, n + n_cols + 1
    tails = np.concatenate([np.full(n, source), np.repeat(np.arange(n), k), n + np.arange(n_cols)])
    heads = np.concatenate([np.arange(n), n + idx.ravel(), np.full(n_cols, sink)])
    graph = csr_matrix((np.ones(len(tails), np.int32), (tails, heads)), shape=(sink + 1, sink + 1))
    return int(maximum_flow(graph, source, sink, method="dinic").flow_value) == n


def _scipy_matching(cost: np.ndarray, idx: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """scipy's sparse solver on the graph of :func:`_sparse_matching`; ``ValueError`` if no
    full matching exists, established first by :func:`_full_matching_exists` (the same
    answer scipy gives, without its exhaustive search)."""
    if not _full_matching_exists(idx, n_cols):
        raise ValueError("no full matching exists")
    rows = np.repeat(np.arange(len(cost)), cost.shape[1])
    if len(cost) * n_cols <= DENSE_MATCHING_PAIRS:
        # the same optimum: a full matching exists on the graph, and a pair off it costs
        # more than all of its edges together, so no optimum takes one
        dense = np.full((len(cost), n_cols), cost.sum() + 1.0)
        dense[rows, idx.ravel()] = cost.ravel()
        return linear_sum_assignment(dense)
    return min_weight_full_bipartite_matching(csr_matrix((cost.ravel(), (rows, idx.ravel())),
                                                         shape=(len(cost), n_cols)))


def _assign_block(x: np.ndarray, y: np.ndarray, dense_limit: int, greedy: bool = False,
                  tree_y: cKDTree | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Optimal (or sparse, or with ``greedy`` greedy, upper-bound) assignment of the
    smaller set into the larger. ``tree_y``: a KD-tree of ``y``, if one is at hand."""
    swap = len(x) > len(y)
    a, b = (y, x) if swap else (x, y)  # a is the smaller side: every a gets a partner
    if len(a) == 0:
        return np.empty(0, int), np.empty(0, int), True
    tree = tree_y if tree_y is not None and not swap else cKDTree(b)
    # The greedy path needs the GREEDY_K nearest anyway, the sparse one its first 8: one
    # query serves the bijection test too (a degenerate particle's far-off atoms make
    # each query costly; blocks beyond dense_limit were no bijection in 106 of 126 of
    # the benchmark's mixed-set steps, so the separate nearest query was mostly spent).
    width = min(GREEDY_K if greedy else SPARSE_K[0], len(b)) if greedy or len(b) > dense_limit else 1
    near = tree.query(a, k=width)
    nn = near[1].reshape(len(a), -1)[:, 0]
    if _distinct(nn, len(b)):
        ia, ib, exact = np.arange(len(a)), nn, True
    elif greedy:
        ia, ib, exact = np.arange(len(a)), _greedy_block(a, b, *near), False
    elif len(b) <= dense_limit:
        ia, ib = linear_sum_assignment(cdist(a, b, "sqeuclidean"))
        exact = True
    else:
        ia = ib = None
        for k in SPARSE_K:
            k = min(k, len(b))
            dist, idx = near if k == width else tree.query(a, k=k)
            try:
                # +1e-12 keeps exact zero distances as stored edges of the sparse graph.
                ia, ib = _sparse_matching((dist ** 2 + 1e-12).reshape(len(a), k), idx.reshape(len(a), k), len(b))
                break
            except ValueError:
                continue
        exact = False
        if ia is None and len(a) * len(b) <= DENSE_FALLBACK_PAIRS:
            # No full matching among the 128 nearest (glassy predictions of early-trained
            # models): the dense solve is exact and, at this size, faster than widening
            # the sparse graph (a MatterGen R = 26 particle: 148 s exact, where the greedy
            # bound was 2.7 times the optimum and k = 512 took 289 s).
            # Still flagged inexact, as before this fallback existed: the refinement then
            # keeps its SPARSE_STOP rule, so earlier results are reproduced to the bit.
            ia, ib = linear_sum_assignment(cdist(a, b, "sqeuclidean"))
        elif ia is None:
            # Beyond that only a collapsed or scattered particle, whose dense assignment
            # would cost O(n^3) and n^2 memory: a greedy upper bound.
            ia, ib = np.arange(len(a)), _greedy_block(a, b, *tree.query(a, k=min(GREEDY_K, len(b))))
    return (ib, ia, exact) if swap else (ia, ib, exact)


def assign(x: np.ndarray, zx: np.ndarray, y: np.ndarray, zy: np.ndarray,
           dense_limit: int = DENSE_LIMIT, greedy: bool = False,
           y_trees: _SpeciesTrees | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Same-species assignment between point sets ``x`` and ``y`` (indices into each).

    ``y_trees``: the :class:`_SpeciesTrees` of ``y``, whose KD-trees then serve every
    call of a refinement instead of being rebuilt for each step."""
    ix, iy, exact = [], [], True
    for z in np.intersect1d(zx, zy):
        sx, sy = np.flatnonzero(zx == z), np.flatnonzero(zy == z)
        tree = None if y_trees is None else y_trees.trees[int(z)]
        a, b, ok = _assign_block(x[sx], y[sy], dense_limit, greedy, tree)
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
        self._far = None

    @property
    def far(self) -> np.ndarray:
        """Indices of the points, farthest from their centroid first (computed once)."""
        if self._far is None:
            self._far = np.argsort(-((self.points - self.points.mean(0)) ** 2).sum(1), kind="stable")
        return self._far

    def nearest(self, x: np.ndarray, zx: np.ndarray, bound: float = np.inf
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows of x, matched reference indices, squared distances), species-aware.

        With a finite ``bound`` only the distances up to it are exact: a point with no
        reference atom within it gets an infinite distance and a meaningless index. A
        tolerance test needs no more, and the KD-tree then stops early on a miss."""
        rows, cols, d2 = [], [], []
        for z, tree in self.trees.items():
            sel = np.flatnonzero(zx == z)
            if len(sel):
                d, j = tree.query(x[sel], k=1, distance_upper_bound=bound)
                j = np.minimum(j, len(self.index[z]) - 1)
                rows.append(sel)
                cols.append(self.index[z][j])
                d2.append(d ** 2)
        if not rows:
            return np.empty(0, int), np.empty(0, int), np.empty(0)
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(d2)

    def nearest_batch(self, x: np.ndarray, zx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(matched reference indices, squared distances), each (c, m), of the point sets
        ``x`` (c, m, 3) sharing species ``zx``, whose species must all be in the trees."""
        cols, d2 = np.empty(x.shape[:2], int), np.empty(x.shape[:2])
        for z, tree in self.trees.items():
            sel = np.flatnonzero(zx == z)
            if len(sel):
                d, j = tree.query(x[:, sel].reshape(-1, 3), k=1)
                cols[:, sel] = self.index[z][j].reshape(len(x), -1)
                d2[:, sel] = (d ** 2).reshape(len(x), -1)
        return cols, d2


def _kabsch_batch(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`kabsch` of one point set ``p`` (m, 3) against many ``q`` (c, m, 3), m >= 2."""
    pc, qc = p.mean(axis=0), q.mean(axis=1)
    u, _, vt = np.linalg.svd((p - pc).T @ (q - qc[:, None, :]))
    r = vt.transpose(0, 2, 1) @ u.transpose(0, 2, 1)
    flip = np.linalg.det(r) < 0
    vt[flip, 2] *= -1
    r[flip] = vt[flip].transpose(0, 2, 1) @ u[flip].transpose(0, 2, 1)
    return r, qc - pc @ r.transpose(0, 2, 1)


def _coarse_batch(p, zp, trees, r0, t0, iters=30):
    """Classic ICP (nearest-neighbour correspondences) from each starting motion (r0[i], t0[i]):
    cheap, converges the rotation. Returns [(R, t, mean squared nearest distance)].

    All starts move together, so each step is one KD-tree query per species for all of
    them (a query's fixed cost exceeds its work on a 200-atom core); every start follows
    exactly the iteration it would alone and leaves the batch once it has converged."""
    rows = np.concatenate([np.flatnonzero(zp == z) for z in trees.trees] + [np.empty(0, int)])
    r, t = np.array(r0, float), np.array(t0, float)
    score = np.full(len(r), np.inf)
    if len(rows) < 2:
        return [(r[i], t[i], score[i]) for i in range(len(r))]
    x, zx = p[rows], zp[rows]

    def nearest(active):
        return trees.nearest_batch(x @ r[active].transpose(0, 2, 1) + t[active][:, None, :], zx)

    active = np.arange(len(r))
    for _ in range(iters):
        if len(active) == 0:
            break
        cols, d2 = nearest(active)
        r_new, t_new = _kabsch_batch(x, trees.points[cols])
        done = (np.abs(r_new - r[active]).max(axis=(1, 2)) < 1e-10) & (np.abs(t_new - t[active]).max(axis=1) < 1e-10)
        r[active], t[active] = r_new, t_new
        # Moved by < 1e-10: the last distances are the score (one query saved).
        score[active[done]] = d2[done].mean(axis=1)
        active = active[~done]
    if len(active):
        score[active] = nearest(active)[1].mean(axis=1)
    return [(r[i], t[i], float(score[i])) for i in range(len(r))]


def _refine(p, zp, q, zq, r, t, dense_limit, seen=None, greedy=False, max_iter=MAX_ITER, q_trees=None):
    """Alternate optimal assignment and Kabsch until the assignment no longer changes.

    Returns (R, t, pairs of p, pairs of q, sum of squared pair distances, exact).
    ``seen`` maps every assignment met by earlier refinements (of the same pair) to their
    result: from a given assignment the rest of the iteration is determined, so a start
    that meets one of them ends where that refinement ended, without repeating it.
    With an inexact (sparse) assignment the iteration also stops once a Kabsch step
    lowers the pair sum by less than ``SPARSE_STOP`` A^2 per pair (see there).
    ``greedy`` and ``max_iter``: the bounded refinement of a degenerate particle, which
    returns the lowest pair sum of its steps. ``q_trees``: the :class:`_SpeciesTrees` of ``q``, if built."""
    seen = {} if seen is None else seen
    prev, trail, result, best = None, [], None, None
    for _ in range(max_iter):
        ip, iq, exact = assign(p @ r.T + t, zp, q, zq, dense_limit, greedy, q_trees)
        if len(ip) == 0:
            return r, t, ip, iq, 0.0, True
        key = hashlib.blake2b(ip.tobytes() + iq.tobytes(), digest_size=16).digest()
        if key in seen:
            result = seen[key]
            break
        if key == prev:
            break
        trail.append(key)
        prev = key
        before = ((p[ip] @ r.T + t - q[iq]) ** 2).sum()
        r, t = kabsch(p[ip], q[iq])
        if exact and not greedy:  # the exact alternation never raises the pair sum
            continue
        after = ((p[ip] @ r.T + t - q[iq]) ** 2).sum()
        if greedy and (best is None or after < best[4]):
            # Greedy steps need not lower the pair sum (on the benchmark's collapsed and
            # stretched particles they wander by tenths of a per cent): the lowest one
            # met is the bound.
            best = (r, t, ip, iq, float(after), exact)
        if not exact and before - after < SPARSE_STOP * len(ip):
            break
    if result is None and best is not None:
        result = best
    elif result is None:
        diff = p[ip] @ r.T + t - q[iq]
        result = (r, t, ip, iq, float((diff ** 2).sum()), exact)
    seen.update(dict.fromkeys(trail, result))
    return result


#: Pair mean squared distance (A^2) below which a refined result marks a near-copy
#: (0.2 A of noise per coordinate gives 0.12 A^2).
NEAR_COPY_MSD = 0.25

#: Predicted atoms used by each coarse stage.
COARSE_SAMPLE = 2000
#: Core radii (Angstrom) of the coarse stages: a wrong rotation by a few degrees moves
#: outer atoms by whole bond lengths (a false local minimum of ICP on a lattice) but
#: core atoms only slightly, so the rotation is converged on the core first.
COARSE_SHELLS = (8.0, 16.0, np.inf)

#: Cost (Angstrom) of one unmatched atom: the first-coordination-shell cutoff of these
#: hydrides (CN_CUTOFF of the metrics), i.e. an atom missing or extra counts like an atom
#: displaced out of its coordination shell.
UNMATCHED_PENALTY = 3.0
#: Largest pair distance (Angstrom) of an exact embedding (floating-point noise only).
EMBED_TOL = 1e-4
#: Largest displacement (Angstrom) of an atom under a rigid motion counted as a symmetry
#: of a particle: converged starting motions related by a symmetry agree this closely.
SYM_TOL = 1e-3
#: Environment hypotheses: neighbour-vector lengths match within ENV_TOL (Angstrom) and
#: the cosine of their angle within ENV_COS_TOL; a second neighbour is used only if it is
#: at least MIN_SIN off the line of the first.
ENV_TOL, ENV_COS_TOL, MIN_SIN = 0.25, 0.1, 0.3
#: Anchor atoms of S whose environments generate hypotheses.
N_ANCHORS = 2
#: Neighbours of a target atom of L examined for matching environments. A real
#: particle's atoms within the reach of an anchor's environment (its two neighbours'
#: distance + ENV_TOL) are its first shell or two, well inside 64 (the nested-particle
#: tests of all 81 materials embed exactly with the cap); in a collapsed particle every
#: atom is within reach, which made the hypotheses quadratic, their angle table cubic,
#: in the atom count.
MAX_ENV_NEIGHBOURS = 64
#: Environment hypotheses kept after a first screen on 8 atoms (besides exact fits), and
#: the most exact fits of the 64 core atoms checked on the whole particle.
KEEP_ENV, MAX_EMBED_CHECKS = 256, 64
#: Candidates converged and considered for refinement: (REFINE_SCALE / n_atoms)^2 of them,
#: at least MIN_REFINE, at most MAX_REFINE. A refinement costs about n^2 (assignment), so
#: this keeps the cost flat, and small particles, whose dissimilar pairs have the most
#: local minima, get many (64 at 400 atoms).
REFINE_SCALE, MIN_REFINE, MAX_REFINE = 3200, 2, 128
#: A degenerate prediction: its median nearest-neighbour distance is more than
#: DEGENERATE_SCALE times the reference's or less than 1 / DEGENERATE_SCALE of it (the
#: reference particles span 1.56-3.03 A, a ratio of 1.94; the glassy particles of ADiT
#: and MatterGen after 1-2 epochs 0.26-0.64 of their reference's, and the full search
#: scores them 2-4.5 A lower than the bounded one, so they stay on it; a collapsed
#: particle is 10-100x denser). It cannot embed and scores at the far end of
#: every metric, and an exact assignment of its near-equidistant atoms is the Hungarian
#: algorithm's worst case (O(n^3)), so its alignment is bounded: no environment
#: hypotheses, one candidate (the best screened start) converged on the 8 A core and
#: refined with the greedy assignment in DEGENERATE_STEP_ATOMS / n_atoms steps, at least
#: 2 and at most DEGENERATE_MAX_ITER (a step costs about n log n: 10 steps up to 4,000
#: atoms, 2 from 20,000), keeping the lowest pair sum met; the value is an upper bound
#: (``assignment_exact`` false, ``degenerate`` true).
DEGENERATE_SCALE, DEGENERATE_MAX_ITER, DEGENERATE_STEP_ATOMS = 6.0, 10, 40_000
#: Atoms whose nearest-neighbour distances give a particle's spacing.
SPACING_SAMPLE = 512


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


def pair_counts(zp: np.ndarray, zq: np.ndarray) -> tuple[int, int]:
    """(unmatched atoms, atoms in all) of the objective: per species |N_P - N_Q| and max."""
    species = np.union1d(zp, zq)
    n_p = np.array([(zp == z).sum() for z in species])
    n_q = np.array([(zq == z).sum() for z in species])
    return int(np.abs(n_p - n_q).sum()), int(np.maximum(n_p, n_q).sum())


def objective(pair_sq_sum: float, n_unmatched: int, n_total: int) -> float:
    """The reported RMSD: pair distances and unmatched atoms at ``UNMATCHED_PENALTY``."""
    if n_total == 0:
        return 0.0
    return float(np.sqrt((pair_sq_sum + n_unmatched * UNMATCHED_PENALTY ** 2) / n_total))


def _frames(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Right-handed orthonormal frames (..., 3, 3), columns e1 || u1, e3 || u1 x u2."""
    e1 = u1 / np.linalg.norm(u1, axis=-1, keepdims=True)
    e3 = np.cross(u1, u2)
    e3 /= np.linalg.norm(e3, axis=-1, keepdims=True)
    return np.stack([e1, np.cross(e3, e1), e3], axis=-1)


def _anchor_offset_bound(s: np.ndarray, anchor: np.ndarray, reach: float) -> float:
    """Largest distance from L's centroid at which ``anchor`` can lie when every atom of
    ``s`` lies within ``reach`` of it, whatever the rotation.

    Two atoms w apart inside a ball of radius ``reach`` have their midpoint within
    sqrt(reach^2 - w^2 / 4) of its centre (parallelogram law); the anchor is a fixed
    distance from that midpoint. Taken over the opposite extreme atoms along x, y and z.
    """
    c = s - s.mean(0)
    lo, hi = s[np.argmin(c, 0)], s[np.argmax(c, 0)]
    w2 = ((hi - lo) ** 2).sum(1)
    if (w2 > 4 * reach ** 2).any():
        return -1.0
    return float((np.sqrt(reach ** 2 - w2 / 4) + np.linalg.norm((hi + lo) / 2 - anchor, axis=1)).min())


def _environment_hypotheses(s: np.ndarray, zs: np.ndarray, l: np.ndarray, zl: np.ndarray,
                            reach: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Rigid motions (R, t) mapping anchor environments of ``s`` onto matching ones of ``l``
    that can keep every atom of ``s`` within ``reach`` of L's centroid."""
    shared = np.intersect1d(zs, zl)
    out_r, out_t = [np.empty((0, 3, 3))], [np.empty((0, 3))]
    if len(shared) == 0 or len(s) < 3:
        return out_r[0], out_t[0]
    rare = min(shared, key=lambda z: ((zs == z).sum(), z))
    anchors = np.flatnonzero(zs == rare)
    anchors = anchors[np.argsort(np.linalg.norm(s[anchors] - s.mean(0), axis=1), kind="stable")]
    all_targets = np.flatnonzero(zl == rare)
    target_offset = np.linalg.norm(l[all_targets] - l.mean(0), axis=1)
    s_tree, l_tree = cKDTree(s), cKDTree(l)
    for a in anchors[:N_ANCHORS]:
        # Same-size particles: the anchor must land near L's centre, which leaves a few
        # per cent of the targets (a smaller S may sit anywhere and keeps them all).
        targets = all_targets[target_offset <= _anchor_offset_bound(s, s[a], reach)]
        if len(targets) == 0:
            continue
        d, j = s_tree.query(s[a], k=min(len(s), 13))
        keep = j != a
        d, j = d[keep], j[keep]
        u = s[j] - s[a]
        sin = np.linalg.norm(np.cross(u[0], u), axis=1) / (d[0] * np.maximum(d, 1e-12))
        second = np.flatnonzero(sin > MIN_SIN)
        if len(second) == 0:
            continue
        i2 = second[0]
        reach = max(d[0], d[i2]) + ENV_TOL
        k = 16
        while True:  # every neighbour within reach of every target, up to MAX_ENV_NEIGHBOURS
            dv, jv = l_tree.query(l[targets], k=min(k, len(l)), distance_upper_bound=reach)
            if k >= min(len(l), MAX_ENV_NEIGHBOURS) or not np.isfinite(dv[:, -1]).any():
                break
            k *= 2
        found = np.isfinite(dv) & (dv > 0)
        jv, dv = np.where(found, jv, 0), np.where(found, dv, 1.0)
        v = l[jv] - l[targets][:, None, :]
        m1 = found & (zl[jv] == zs[j[0]]) & (np.abs(dv - d[0]) < ENV_TOL)
        m2 = found & (zl[jv] == zs[j[i2]]) & (np.abs(dv - d[i2]) < ENV_TOL)
        cos_u = u[0] @ u[i2] / (d[0] * d[i2])
        cos_v = np.einsum("bid,bjd->bij", v, v) / (dv[:, :, None] * dv[:, None, :])
        ok = m1[:, :, None] & m2[:, None, :] & (np.abs(cos_v - cos_u) < ENV_COS_TOL)
        ok &= ~np.eye(ok.shape[1], dtype=bool)[None]
        ok &= cos_v ** 2 < 1 - 1e-12  # collinear vectors in L define no frame
        b, i, jj = np.nonzero(ok)
        if len(b) == 0:
            continue
        rot = _frames(v[b, i], v[b, jj]) @ _frames(u[0], u[i2]).T
        out_r.append(rot)
        out_t.append(l[targets[b]] - rot @ s[a])
    return np.concatenate(out_r), np.concatenate(out_t)


def _extremes(x: np.ndarray) -> np.ndarray:
    """Indices of the atoms farthest out along +-x, +-y, +-z and from the centroid."""
    c = x - x.mean(0)
    return np.unique(np.concatenate([np.argmax(c, 0), np.argmin(c, 0),
                                     [np.argmax((c ** 2).sum(1))]]))


def _screen(s_sample, z_sample, trees, rot, trans):
    """Mean squared nearest same-species distance of the moved sample, per hypothesis."""
    if len(rot) == 0:
        return np.empty(0)
    moved = s_sample @ rot.transpose(0, 2, 1) + trans[:, None, :]
    rows, _, d2 = trees.nearest(moved.reshape(-1, 3), np.tile(z_sample, len(rot)))
    return np.bincount(rows // len(s_sample), weights=d2, minlength=len(rot)) / len(s_sample)


def _embedding(s, zs, trees, r, t):
    """Pairs (rows of s, atoms of l) if s moved by (r, t) lies on distinct same-species
    atoms of l to EMBED_TOL, else None."""
    rows, cols, d2 = trees.nearest(s @ r.T + t, zs, 2 * EMBED_TOL)
    if len(rows) < len(s) or d2.max() > EMBED_TOL ** 2 or not _distinct(cols, len(trees.points)):
        return None
    return rows, cols


def _maps_onto_itself(x, zx, trees, r, t):
    """True if ``x @ r.T + t`` puts every atom within SYM_TOL of a distinct same-species
    atom of ``x`` (``trees`` built on ``x``); the farthest atoms are tried first."""
    far = trees.far[:32]
    rows, _, d2 = trees.nearest(x[far] @ r.T + t, zx[far], 2 * SYM_TOL)
    if len(rows) < len(far) or d2.max() > SYM_TOL ** 2:
        return False
    moved = x @ r.T + t
    for z, idx in trees.index.items():  # the species blocks of x, as the trees hold them
        d, j = trees.trees[z].query(moved[idx], distance_upper_bound=2 * SYM_TOL)
        if (d ** 2).max() > SYM_TOL ** 2 or not _distinct(j, len(idx)):
            return False
    return True


def _symmetric_copy(s, zs, s_trees, l, zl, l_trees, r0, t0, r, t):
    """True if the motion (r, t) is (r0, t0) composed with a symmetry of L or of S.

    Refining it would then retrace the refinement from (r0, t0) through permuted atoms
    and end at the same value: a cubic particle offers 24 such copies of each minimum."""
    h_r = r @ r0.T  # (r, t) = h o (r0, t0), h a motion of L's frame
    if _maps_onto_itself(l, zl, l_trees, h_r, t - h_r @ t0):
        return True
    g_r = r0.T @ r  # (r, t) = (r0, t0) o g, g a motion of S's frame
    return _maps_onto_itself(s, zs, s_trees, g_r, (t - t0) @ r0)


def _copy_of_any(earlier, r, t, score, s, zs, s_trees, l, zl, l_trees) -> bool:
    """True if the candidate (r, t, score) repeats one of ``earlier``: the same motion
    (rotation entries within 1e-3, translation within 1e-2 A), or a symmetric copy (same
    score to rounding, so only equal scores are tested)."""
    for r0, t0, score0 in earlier:
        if np.abs(r - r0).max() < 1e-3 and np.abs(t - t0).max() < 1e-2:
            return True
        if (np.isfinite(score) and abs(score - score0) <= 1e-9 * abs(score) + 1e-12
                and _symmetric_copy(s, zs, s_trees, l, zl, l_trees, r0, t0, r, t)):
            return True
    return False


def _drop_copies(cands, s, zs, s_trees, l, zl, l_trees, limit):
    """The first ``limit`` of the candidates (R, t, score) that do not repeat an earlier
    one (see :func:`_copy_of_any`), and how many were dropped."""
    out, copies = [], 0
    for r, t, score in cands:
        if _copy_of_any(out, r, t, score, s, zs, s_trees, l, zl, l_trees):
            copies += 1
            continue
        out.append((r, t, score))
        if len(out) == limit:
            break
    return out, copies


def spacing(x: np.ndarray) -> float:
    """Median nearest-neighbour distance (A) of up to SPACING_SAMPLE seeded atoms of ``x``."""
    if len(x) < 2:
        return float("nan")
    sample = np.random.default_rng(0).choice(len(x), min(len(x), SPACING_SAMPLE), replace=False)
    return float(np.median(cKDTree(x).query(x[np.sort(sample)], k=2)[0][:, 1]))


def is_degenerate(pred: np.ndarray, ref: np.ndarray) -> bool:
    """True if the spacings of ``pred`` and ``ref`` differ by more than DEGENERATE_SCALE."""
    sp, sr = spacing(pred), spacing(ref)
    if not (sr > 0):  # too few reference atoms to say, or a reference without spacing
        return False
    return not (sr / DEGENERATE_SCALE <= sp <= sr * DEGENERATE_SCALE)


def _search(s, zs, l, zl, n_starts, starts, dense_limit, degenerate=False):
    """Best (R, t, pairs, pair sum, exact, certificate) moving ``s`` onto ``l``."""
    cs, cl = s.mean(0), l.mean(0)
    trees = _SpeciesTrees(l, zl)
    rng = np.random.default_rng(0)
    shells = _shells(s - cs, rng)
    sample = shells[0][:SCORE_SAMPLE]
    # Environment hypotheses: drop those that carry S's outermost atoms beyond L's radius
    # (impossible for an embedding), keep the best on 8 atoms, score the rest like starts.
    reach = np.sqrt(((l - cl) ** 2).sum(1).max()) + 1.0
    if degenerate:  # no embedding at another scale
        env_r, env_t = np.empty((0, 3, 3)), np.empty((0, 3))
    else:
        env_r, env_t = _environment_hypotheses(s, zs, l, zl, reach)
    n_env = len(env_r)
    if n_env:
        ext = s[_extremes(s)]
        far = np.linalg.norm(ext @ env_r.transpose(0, 2, 1) + env_t[:, None, :] - cl, axis=2).max(1)
        env_r, env_t = env_r[far <= reach], env_t[far <= reach]
        first = _screen(s[sample[:8]], zs[sample[:8]], trees, env_r, env_t)
        # Every hypothesis that fits those 8 atoms exactly stays: several lattice
        # translations can, and only one may carry the whole particle.
        keep = np.union1d(np.argsort(first, kind="stable")[:KEEP_ENV], np.flatnonzero(first <= EMBED_TOL ** 2))
        env_r, env_t = env_r[keep], env_t[keep]
    env_scores = _screen(s[sample], zs[sample], trees, env_r, env_t)
    cert = {"hypotheses": n_env + len(starts), "environment_hypotheses": n_env, "refined": 0,
            "best_hits": 0, "exact_embedding": False, "degenerate": degenerate}
    for h in np.argsort(env_scores, kind="stable")[:MAX_EMBED_CHECKS]:
        if env_scores[h] > EMBED_TOL ** 2:
            break
        pairs = _embedding(s, zs, trees, env_r[h], env_t[h])
        if pairs is not None:
            r, t = kabsch(s[pairs[0]], l[pairs[1]])
            diff = s[pairs[0]] @ r.T + t - l[pairs[1]]
            cert.update(hypotheses=n_env, exact_embedding=True, refined=1, best_hits=1)
            return r, t, pairs[0], pairs[1], float((diff ** 2).sum()), True, cert
    start_t = cl - cs @ starts.transpose(0, 2, 1)
    rot = np.concatenate([env_r, starts])
    trans = np.concatenate([env_t, start_t])
    n_refine = 1 if degenerate else int(np.clip((REFINE_SCALE / max(len(s), 1)) ** 2,
                                                  max(MIN_REFINE, n_starts), MAX_REFINE))
    n_core = 1 if degenerate else max(KEEP_SCREENED, n_refine)
    # Starts are screened on 16 atoms first; PRESCREEN_FACTOR times as many as go on to
    # the ICP stage get the full score.
    start_scores = np.full(len(starts), np.inf)
    pre = np.argsort(_screen(s[sample[:16]], zs[sample[:16]], trees, starts, start_t), kind="stable")
    pre = pre[:PRESCREEN_FACTOR * n_core]
    start_scores[pre] = _screen(s[sample], zs[sample], trees, starts[pre], start_t[pre])
    scores = np.concatenate([env_scores, start_scores])
    chosen = np.argsort(scores, kind="stable")[:n_core]
    core = _coarse_batch(s[shells[0]], zs[shells[0]], trees, rot[chosen], trans[chosen], iters=15)
    core.sort(key=lambda c: c[2])
    s_trees = _SpeciesTrees(s, zs)
    # Repeats and symmetric copies of a candidate would retrace its refinement: they are
    # dropped, so the n_refine candidates are distinct minima.
    core, copies = _drop_copies(core, s, zs, s_trees, l, zl, trees, n_refine)
    refined, kept, seen, grown = [], [], {}, {}

    def grow(idx):
        """Converge the candidates ``idx`` on the growing cores, all at once."""
        if degenerate:
            # The growing cores keep the outer atoms of a lattice in register; a collapsed
            # or scattered particle has none, and its one candidate stays as the core left
            # it (the outer shells' ICP was a fifth of its bounded time).
            grown.update((i, core[i]) for i in idx)
            return
        r, t = np.array([core[i][0] for i in idx]), np.array([core[i][1] for i in idx])
        for sel in shells[1:]:
            out = _coarse_batch(s[sel], zs[sel], trees, r, t)
            r, t = np.array([o[0] for o in out]), np.array([o[1] for o in out])
        grown.update(zip(idx, out))

    for i, (r, t, score) in enumerate(core):
        # Near-copies: the nearest-neighbour score bounds the pair objective from below at
        # the same motion, and refinement moves a near-copy little, so once a refinement
        # has reached a pair mean below NEAR_COPY_MSD, a candidate whose score (on the
        # core, then on all atoms) is no better is dropped unrefined: one refinement.
        # Dissimilar particles: refinement moves far from the ICP minimum, so every
        # candidate is refined (a skip here cost 0.023 A on one pair of the tests).
        best_mean = min((res[4] / max(len(res[2]), 1) for res in refined), default=np.inf)
        if best_mean < NEAR_COPY_MSD and score >= best_mean:
            continue
        if i not in grown:
            # Once a refinement has found no near-copy, the skip above cannot drop the
            # rest until one does: they are converged together.
            grow(range(i, len(core)) if refined and best_mean >= NEAR_COPY_MSD else [i])
        r, t, score = grown[i]
        if best_mean < NEAR_COPY_MSD and score >= best_mean:
            continue
        if _copy_of_any(kept, r, t, score, s, zs, s_trees, l, zl, trees):
            copies += 1
            continue
        kept.append((r, t, score))
        steps = (int(np.clip(DEGENERATE_STEP_ATOMS // max(len(s), 1), 2, DEGENERATE_MAX_ITER))
                 if degenerate else MAX_ITER)
        refined.append(_refine(s, zs, l, zl, r, t, dense_limit, seen, greedy=degenerate,
                               max_iter=steps, q_trees=trees))
    best = min(refined, key=lambda res: res[4])
    cert.update(refined=len(refined), best_hits=sum(res[4] <= best[4] + 1e-6 for res in refined),
                copies_dropped=copies)
    return (*best, cert)


def align(pred: np.ndarray, zpred: np.ndarray, ref: np.ndarray, zref: np.ndarray,
          n_starts: int | None = MIN_REFINE, starts: np.ndarray | None = None,
          dense_limit: int = DENSE_LIMIT) -> Alignment:
    """Rigid motion and assignment of ``pred`` onto ``ref`` minimising the objective.

    ``n_starts`` is the least number of converged candidates considered for refinement
    with optimal assignment (more for small particles, see ``REFINE_SCALE``).
    ``n_starts=None`` skips hypotheses, screening and the coarse stage and fully refines
    every one of ``starts`` (centroids superposed): the brute-force reference the tests
    compare against.
    """
    pred, ref = np.asarray(pred, float), np.asarray(ref, float)
    zpred, zref = np.asarray(zpred), np.asarray(zref)
    if not (np.isfinite(pred).all() and np.isfinite(ref).all()):
        raise ValueError("align: positions hold NaN or infinite values")
    starts = starting_rotations(pred, ref) if starts is None else np.asarray(starts)
    n_unmatched, n_total = pair_counts(zpred, zref)
    swap = n_starts is not None and len(ref) < len(pred)
    s, zs, l, zl = (ref, zref, pred, zpred) if swap else (pred, zpred, ref, zref)
    if n_starts is None:
        cs, cl = s.mean(0), l.mean(0)
        trees = _SpeciesTrees(l, zl)
        results = [_refine(s, zs, l, zl, r0, cl - r0 @ cs, dense_limit, q_trees=trees) for r0 in starts]
        r, t, i_s, i_l, sq, exact = min(results, key=lambda res: res[4])
        cert = {"hypotheses": len(starts), "environment_hypotheses": 0, "refined": len(starts),
                "best_hits": sum(res[4] <= sq + 1e-6 for res in results), "exact_embedding": False,
                "degenerate": False}
    else:
        r, t, i_s, i_l, sq, exact, cert = _search(s, zs, l, zl, n_starts, starts, dense_limit,
                                                  is_degenerate(pred, ref))
    if swap:  # found ref @ r.T + t ~ pred; invert
        r, t, i_s, i_l = r.T, -t @ r, i_l, i_s
    cert["assignment_exact"] = bool(exact)
    return Alignment(r, t, i_s, i_l, objective(sq, n_unmatched, n_total), bool(exact), cert)
