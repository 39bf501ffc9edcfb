"""Radius graphs on the model's own device, without torch_cluster: a cell list.

Atoms are binned into cubic voxels of edge ``cutoff`` (per graph, from the graph's own
minimum corner), the voxel keys (graph, vx, vy, vz) are sorted once, and every atom looks
up its 27 neighbouring voxels with ``searchsorted``. Only pairs in neighbouring voxels
are measured, so time and memory grow as N x (atoms per 27 voxels), linear in the atom
count at the fixed density of a particle, instead of the N^2 of all pairs (18,251-atom
particles: about 270 candidates per atom instead of 18,251). Everything stays on the
device; the host waits for the device twice per graph: the candidate count, and the
size of the selection of the pairs inside the cutoff.
"""

from __future__ import annotations

import contextlib
import functools
import itertools

import numpy as np
import torch
from scipy.spatial import cKDTree

_OFFSETS = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.long)


@functools.cache
def _offsets(device: torch.device) -> torch.Tensor:
    # one copy per device: a blocking copy from pageable memory at every call makes a GPU
    # step wait for the device
    return _OFFSETS.to(device)


def graph_index(ptr: torch.Tensor, n: int) -> torch.Tensor:
    """The graph of each node from PyG-style boundaries ``ptr``."""
    return torch.repeat_interleave(torch.arange(len(ptr) - 1, device=ptr.device), ptr.diff(),
                                   output_size=n)


def _voxels(p: torch.Tensor, ptr: torch.Tensor, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each atom's graph and its voxel (edge ``cutoff``) counted from its graph's lowest
    corner: the cell list's grid, shared by :func:`_candidates` and :func:`cell_list_order`."""
    graph = graph_index(ptr, len(p))
    return graph, torch.floor((p - graph_minimum(p, graph, ptr)[graph]) / cutoff).long()  # >= 0


def graph_minimum(p: torch.Tensor, graph: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    """(graphs, 3) lowest corner of each graph's atoms (+inf for a graph without atoms).

    A segmented reduction over each graph's run of atoms (``ptr``), one coordinate at a
    time, instead of ``scatter_reduce(..., "amin")``: on a GPU a float minimum scattered
    is an atomic compare-and-swap loop per atom, all of a graph's atoms on the same three
    addresses (``benchmarks/atomic_contention.py``: 0.126 against 0.107 ms for 25,000
    atoms in 9 graphs on an H100). The same values (a minimum is exact)."""
    if torch.compiler.is_compiling():  # a compiled static step (train.compile = "static")
        lo = torch.full((len(ptr) - 1, 3), float("inf"), device=p.device)
        return lo.scatter_reduce(0, graph.view(-1, 1).expand(-1, 3), p, "amin", include_self=True)
    ptr = ptr.to(p.device)
    # unsafe: no validation of the offsets, which would be a host wait
    return torch.stack([torch.segment_reduce(c, "min", offsets=ptr, unsafe=True) for c in p.T.contiguous()], 1)


def _candidates(pos: torch.Tensor, ptr: torch.Tensor, cutoff: float):
    """The cell list's candidate pairs: float32 positions, the atoms in voxel-key order,
    and for every (target atom, neighbouring voxel) (n * 27 entries, target-major) the
    first index into that order and the number of atoms of the voxel."""
    device = pos.device
    p = pos.detach().float()
    graph, vox = _voxels(p, ptr.to(device), cutoff)
    dims = vox.max(0).values + 1  # the same grid size for every graph of the batch
    stride = torch.stack([dims[1] * dims[2], dims[2], torch.ones_like(dims[2])])
    per_graph = dims.prod()
    key = graph * per_graph + (vox * stride).sum(1)
    sorted_key, order = torch.sort(key, stable=True)
    if torch.compiler.is_compiling():
        # built on the device: a cached CPU tensor would be a copy inside a compiled step
        # (and a CPU input keeps CUDA graphs off); the same order as _OFFSETS
        k = torch.arange(27, device=device)
        offsets = torch.stack([k // 9, k // 3 % 3, k % 3], -1) - 1
    else:
        offsets = _offsets(device)
    nbr = vox.unsqueeze(1) + offsets.unsqueeze(0)  # (n, 27, 3)
    inside = ((nbr >= 0) & (nbr < dims)).all(-1)
    nbr_key = graph.view(-1, 1) * per_graph + (nbr * stride).sum(-1)
    start = torch.searchsorted(sorted_key, nbr_key)
    count = torch.where(inside, torch.searchsorted(sorted_key, nbr_key, right=True) - start, 0)
    count, start = count.view(-1), start.view(-1)
    return p, order, start, count


def radius_edges(pos: torch.Tensor, ptr: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Directed edges (2, E) ``[source, target]`` between atoms of one graph within ``cutoff``.

    ``ptr`` holds the graph boundaries (PyG's ``Batch.ptr``): graph g owns nodes
    ``ptr[g]:ptr[g+1]``. Self-loops are excluded. Edges come grouped by target in node
    order (deterministic), which also keeps the scatter of message passing local.
    """
    n, device = len(pos), pos.device
    if n == 0:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    p, order, start, count = _candidates(pos, ptr, cutoff)
    total = int(count.sum())
    if total == 0:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    src, tgt, keep = _within(p, order, start, count, total, cutoff)
    # one boolean selection of both rows: one host wait, not one per row
    return torch.stack([src, tgt])[:, keep]


def _within(p: torch.Tensor, order: torch.Tensor, start: torch.Tensor, count: torch.Tensor, total: int,
            cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``total`` candidate pairs of :func:`_candidates` as (source, target) and whether
    each is an edge (inside the cutoff, not a self-loop), in :func:`radius_edges`' order."""
    device = p.device
    # one expansion (each candidate's (target, voxel) entry) and gathers, not three
    # repeat_interleaves over ``count``: each is a kernel writing ``total`` indices
    entry = torch.repeat_interleave(torch.arange(len(count), device=device), count, output_size=total)
    tgt = entry // 27
    first = torch.cumsum(count, 0) - count
    src = order[start[entry] + torch.arange(total, device=device) - first[entry]]
    d2 = (p[src] - p[tgt]).square().sum(1)
    return src, tgt, (d2 < cutoff * cutoff) & (src != tgt)


def radius_edges_sets(sets: list[torch.Tensor], ptr: torch.Tensor, cutoff: float) -> list[torch.Tensor]:
    """``[radius_edges(pos, ptr, cutoff) for pos in sets]``: the graphs of several position
    sets of the same atoms (a particle and its perturbed copy), the same edges in the same
    order, from one cell list over all of them: two host waits in all instead of two per
    set, and one set of kernels.

    Why the same: each graph's voxels count from its own lowest corner, and the order
    (target, neighbouring voxel in a fixed order, source index) does not depend on the
    grid's size, which the sets share."""
    if not sets:
        return []
    k, n, device = len(sets), len(sets[0]), sets[0].device
    if n == 0:
        return [torch.empty(2, 0, dtype=torch.long, device=device) for _ in sets]
    ptr = ptr.to(device)
    every = torch.cat([ptr[:-1] + j * n for j in range(k)] + [ptr[-1:] + (k - 1) * n])
    p, order, start, count = _candidates(torch.cat(sets), every, cutoff)
    per_set = count.view(k, -1).sum(1)
    total = int(per_set.sum())  # host wait 1
    if total == 0:
        return [torch.empty(2, 0, dtype=torch.long, device=device) for _ in sets]
    src, tgt, keep = _within(p, order, start, count, total, cutoff)
    # the candidates are grouped by target, so by set: each set's kept edges are a run
    ends = torch.cumsum(per_set, 0)
    # host wait 2: every set's edge count at once (a set without candidates ends where the last did)
    kept = torch.cat([ends.new_zeros(1), torch.cumsum(keep, 0)])[ends].tolist()
    edges = torch.stack([src, tgt])[:, torch.nonzero_static(keep, size=kept[-1]).view(-1)]
    return [edges[:, a:b] - j * n for j, (a, b) in enumerate(zip([0] + kept[:-1], kept))]


def radius_edges_static(pos: torch.Tensor, ptr: torch.Tensor, cutoff: float, active: torch.Tensor,
                        candidates: int, edges: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`radius_edges` into a fixed-capacity buffer, without a host wait: the shapes
    depend on ``candidates`` and ``edges`` only, so a padded step (``c2np.models.padding``)
    compiles and captures once per bucket.

    Atoms with ``active`` 0 (padding) get no edges. Returns ``(edge_index, overflow)``:
    the first slots of ``edge_index`` (2, ``edges``) are :func:`radius_edges`'s edges in its
    order, the rest are self-loops on the padding atoms (:func:`filler_edges`; the last
    atom must be padding, so that they touch no real atom); ``overflow`` (0-d bool) is
    true when the candidate pairs or the edges did not fit, and some edges are then missing.
    """
    n = len(pos)
    p, order, start, count = _candidates(pos, ptr, cutoff)
    count = count * active.view(-1, 1).to(count.dtype).expand(-1, 27).reshape(-1)
    ends = torch.cumsum(count, 0)
    # slot j of the candidate buffer is the (target, voxel) entry whose range holds j
    slot = torch.arange(candidates, device=pos.device)
    entry = torch.searchsorted(ends, slot, right=True).clamp_max(len(count) - 1)
    src = order[(start[entry] + slot - (ends[entry] - count[entry])).clamp(0, n - 1)]
    tgt = entry // 27
    d2 = (p[src] - p[tgt]).square().sum(1)
    keep = (slot < ends[-1]) & (d2 < cutoff * cutoff) & (src != tgt)
    # compaction in order: a kept pair goes to its rank among kept pairs, the rest (and any
    # pair past the capacity) to a dump slot that is cut off
    rank = torch.cumsum(keep, 0)
    dest = torch.where(keep, rank - 1, edges).clamp_max(edges)
    padding = (active == 0).sum()  # a tensor: its value would be a host wait
    out = filler_edges(edges + 1, n, padding).clone()
    out.scatter_(1, dest.view(1, -1).expand(2, -1), torch.stack([src, tgt]))
    return out[:, :edges], (ends[-1] > candidates) | (rank[-1] > edges)


def filler_edges(count: int, n: int, padding: int | torch.Tensor,
                 device: torch.device | None = None) -> torch.Tensor:
    """(2, ``count``) self-loops that fill a padded graph's unused edge slots: on the last
    ``padding`` atoms of ``n`` (the padding atoms, at least the last one), in turn.

    Why in turn and not all on the last atom: every message sum over the edges is an
    atomic add per edge into its target's row, and a GPU serialises the atomic adds to one
    address. With tens of thousands of filler edges (up to 19 % of the slots,
    ``prepare_padded``) on one atom, the message kernels of a captured CDVAE Task 1 step
    took 5.4 ms a step on an H100; spread, 2.1 ms (docs/models.md, "Throughput"). A
    self-loop on a padding atom touches no real atom; it is its own reverse, so the graph
    stays symmetric (``undirected_pairs``).
    ``padding``: an int, or a 0-d tensor on the device (then the edges are made there)."""
    if torch.is_tensor(padding):
        device, padding = padding.device, padding.clamp_min(1)
    else:
        padding = max(int(padding), 1)
    # made on the device: a copy from the host would wait for it
    atom = n - 1 - torch.arange(count, device=device) % padding
    return atom.view(1, -1).expand(2, -1)


def radius_edges_host(pos: torch.Tensor, ptr: torch.Tensor, cutoff: float) -> torch.Tensor:
    """:func:`radius_edges` on the CPU, for DataLoader workers: the same edges in the same
    order, found with scipy's KD-tree (a quarter of the cell list's CPU time on one core:
    0.10 s instead of 0.40 to 0.48 s for 22,744 atoms on the 2-core dev machine, shared).

    The KD-tree proposes pairs within a slightly larger radius; the cell list's float32
    test ``d^2 < cutoff^2`` then decides, so boundary pairs come out the same. The order is
    the cell list's: by target, then by the source's voxel among the target's 27
    neighbouring voxels, then by source index.
    """
    p = pos.detach().float().cpu()
    bounds = ptr.tolist()
    found = [cKDTree(p[a:b].numpy()).query_pairs(cutoff * (1 + 1e-4), output_type="ndarray") + a
             for a, b in zip(bounds[:-1], bounds[1:]) if b - a > 1]
    pairs = torch.from_numpy(np.concatenate(found) if found else np.empty((0, 2), np.int64))
    src, tgt = torch.cat([pairs[:, 0], pairs[:, 1]]), torch.cat([pairs[:, 1], pairs[:, 0]])
    keep = (p[src] - p[tgt]).square().sum(1) < cutoff * cutoff
    edges = torch.stack([src[keep], tgt[keep]])
    return edges[:, cell_list_order(p, ptr.cpu(), edges, cutoff)]


def is_symmetric(edge_index: torch.Tensor) -> bool:
    """Whether every edge ``[source, target]`` of ``edge_index`` (2, E) has its reverse,
    as many times as itself: true of :func:`radius_edges` and the graphs that give its
    edge set (the test ``d^2 < cutoff^2`` is symmetric), false of graphs capped at the
    nearest neighbours (:func:`nearest_edges`). One sort of the edges each way."""
    src, tgt = edge_index
    n = int(edge_index.max()) + 1 if edge_index.numel() else 0
    return torch.equal(torch.sort(src * n + tgt).values, torch.sort(tgt * n + src).values)


#: pair keys below this bound are sorted as int32 (:func:`undirected_pairs`)
_INT32_KEYS = 2 ** 31 - 1


def undirected_pairs(edge_index: torch.Tensor, n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The unordered pairs of a symmetric graph (:func:`is_symmetric`: every edge and its
    reverse, once each): ``(first, pair)``, where ``first`` (ceil(E / 2),) holds one edge
    of each pair and ``pair`` (E,) each edge's pair, so that a per-pair value ``v`` gives
    the per-edge values ``v[pair]``. A function of the length alone (SchNet's filters) is
    then computed once per pair instead of once per direction: the two lengths are
    bit-equal (``a - b == -(b - a)`` in floating point), so the values are the same up to
    the rounding of a matrix product over fewer rows.

    One sort of the edges by their unordered pair: each pair's two edges are then
    neighbours in that order. The keys are int32 while ``n_nodes ** 2`` fits (a
    30,000-atom batch's does), which halves the passes of the GPU's radix sort; the same
    order either way. The shapes depend on E alone (no host wait; compiles with
    dynamic shapes). Self-loops (a padded graph's filler edges, :func:`filler_edges`, all of
    length 0 on padding atoms) pair with each other, or the last one with itself. On a
    graph that is not symmetric the pairs are wrong: the caller must know
    (``SchNetEncoder.symmetric_graphs``).
    """
    src, tgt = edge_index
    if n_nodes * n_nodes <= _INT32_KEYS:
        # a radix sort takes one pass per byte of key: 32-bit keys, half the passes of 64
        src, tgt = src.int(), tgt.int()
    key = torch.minimum(src, tgt) * n_nodes + torch.maximum(src, tgt)
    order = torch.argsort(key, stable=True)
    rank = torch.arange(len(order), device=order.device)
    pair = torch.empty_like(order).scatter_(0, order, rank // 2)
    return order[0::2], pair


def nearest_edges(edge_index: torch.Tensor, length: torch.Tensor, n_nodes: int, k: int) -> torch.Tensor:
    """Indices of the edges to keep so that every target keeps its ``k`` shortest edges.

    Edges are first put in a canonical order (by target, then source), because the cell
    list returns them in an order that depends on the voxels, which move when the particle
    rotates; then two stable sorts (by length, then by target) rank each target's edges.
    Tied lengths are therefore broken by atom index, whatever the frame. O(E log E), on
    the edges' device.
    """
    order = torch.argsort(edge_index[1] * n_nodes + edge_index[0])
    order = order[torch.sort(length[order], stable=True).indices]
    order = order[torch.sort(edge_index[1, order], stable=True).indices]
    tgt = edge_index[1, order]
    counts = torch.bincount(tgt, minlength=n_nodes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=order.device) - starts[tgt]
    return order[rank < k]


#: Angstrom added to the cutoff of a reused neighbour list (:class:`NeighbourList`)
DEFAULT_SKIN = 1.0


class NeighbourList:
    """:func:`radius_edges` of successive positions of the same atoms (a sampler's steps),
    from candidate pairs kept between builds: a Verlet list.

    A build keeps the pairs within ``cutoff + skin`` (the cell list) and the positions it
    saw. While no atom has moved more than ``skin / 2`` since then, every pair within
    ``cutoff`` now was within ``cutoff + skin`` at the build, so filtering the kept pairs
    with the cell list's own float32 test ``d^2 < cutoff^2`` gives exactly the cell list's
    edge set; one reduction per call (the largest displacement, one host wait) decides.
    ``ordered`` also puts the edges in the cell list's order (target, neighbouring voxel,
    source; one sort of the kept pairs), so that a message sum over them adds in the same
    order and gives the same bits; a caller that puts the edges in its own canonical order
    (:func:`nearest_edges`) passes False.

    Early in sampling the atoms move more than the skin at every step, and a list would be
    rebuilt (at the larger cutoff, dearer) at every call; so a list is built only when the
    atoms moved less than ``skin / 2`` since the previous call, and otherwise the graph is
    the plain cell list at ``cutoff`` (:func:`radius_edges` itself). ``calls``, ``builds``
    and ``plain`` count the graphs asked for, the lists built and the plain graphs.
    """

    def __init__(self, cutoff: float, skin: float = DEFAULT_SKIN, ordered: bool = True):
        if skin <= 0:
            raise ValueError(f"skin must be positive, got {skin}")
        self.cutoff, self.skin, self.ordered = float(cutoff), float(skin), ordered
        self.calls = self.builds = self.plain = 0
        self._ref: torch.Tensor | None = None  # positions at the list's build
        self._last: torch.Tensor | None = None  # positions at the previous call
        self._ptr: torch.Tensor | None = None
        self._pairs = torch.empty(2, 0, dtype=torch.long)

    def _moved(self, p: torch.Tensor, before: torch.Tensor) -> bool:
        # 2 % under half the skin: float32 rounding of the distances stays far inside it;
        # written so that a NaN position counts as moved
        return not bool((p - before).square().sum(1).max() <= (0.49 * self.skin) ** 2)

    def __call__(self, pos: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
        """The edges ``radius_edges(pos, ptr, cutoff)`` (the same set; the same order when ``ordered``)."""
        p = pos.detach().float()
        self.calls += 1
        # the same atoms: a sampler passes its batch's own ``ptr`` at every step (an
        # identity test, not a comparison of values, which would be a host wait)
        same = self._last is not None and self._last.shape == p.shape and ptr is self._ptr
        last, self._last, self._ptr = self._last, p.clone(), ptr
        if not (same and self._ref is not None and not self._moved(p, self._ref)):
            if not same or self._moved(p, last):
                self._ref = None
                self.plain += 1
                return radius_edges(p, ptr, self.cutoff)
            self._pairs = radius_edges(p, ptr, self.cutoff + self.skin)
            self._ref = self._last
            self.builds += 1
        src, tgt = self._pairs
        keep = (p[src] - p[tgt]).square().sum(1) < self.cutoff * self.cutoff
        edges = self._pairs[:, keep]
        if not self.ordered or edges.shape[1] == 0:
            return edges
        return edges[:, cell_list_order(p, ptr.to(p.device), edges, self.cutoff)]


def radius_graph(pos: torch.Tensor, ptr: torch.Tensor, cutoff: float,
                 neighbours: NeighbourList | None = None) -> torch.Tensor:
    """:func:`radius_edges`, taken from ``neighbours`` (a sampler's reused list, the same
    edges) when the module that owns it has one set (:func:`reused_neighbours`)."""
    return neighbours(pos, ptr) if neighbours is not None else radius_edges(pos, ptr, cutoff)


def cell_list_order(p: torch.Tensor, ptr: torch.Tensor, edges: torch.Tensor, cutoff: float) -> torch.Tensor:
    """The permutation that puts ``edges`` (within ``cutoff`` of float32 positions ``p``)
    in :func:`radius_edges`' order: by target, then by the source's voxel among the
    target's 27 neighbouring voxels (itertools order), then by source index."""
    _, vox = _voxels(p, ptr, cutoff)
    src, tgt = edges
    weights = torch.tensor([9, 3, 1], device=p.device)  # itertools order of _OFFSETS
    offset = ((vox[src] - vox[tgt] + 1) * weights).sum(1)
    return torch.argsort((tgt * 27 + offset) * len(p) + src)


@contextlib.contextmanager
def reused_neighbours(model: torch.nn.Module, skin: float | None = DEFAULT_SKIN):
    """Within the block, every module of ``model`` that builds radius graphs (it has a
    ``neighbours`` attribute, None outside) takes them from its own :class:`NeighbourList`
    with ``skin``; yields those lists (their counters tell how often they were rebuilt).
    ``skin=None``: no lists, every graph is built afresh. Graphs capped at the nearest
    ``max_neighbors`` are put in canonical order by :func:`nearest_edges`, so their lists
    skip the sort."""
    owners = [m for m in model.modules() if hasattr(m, "neighbours")] if skin is not None else []
    lists = []
    for m in owners:
        m.neighbours = NeighbourList(m.cutoff, skin, ordered=getattr(m, "max_neighbors", 0) <= 0)
        lists.append(m.neighbours)
    try:
        yield lists
    finally:
        for m in owners:
            m.neighbours = None
