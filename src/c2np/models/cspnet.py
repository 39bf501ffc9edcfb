"""CSPNet on a finite particle: the denoising / velocity network of DiffCSP and FlowMM.

DiffCSP's CSPNet (jiaor17/DiffCSP, ``cspnet.py``; FlowMM reuses it) passes messages over
the atoms of one periodic cell, fully connected, with edge inputs [h_i, h_j, L L^T,
Fourier features of the fractional difference f_j - f_i] and reads the coordinate output
in fractional units. A particle has up to 18,251 atoms and no periodicity, so here:

- edges are a radius graph (``cutoff``) capped at the ``max_neighbors`` nearest atoms of
  each target (DiffCSP's own "knn" edge style with its 7 A / 20 neighbours), which keeps
  memory linear in the atoms however dense a noisy state gets;
- the fractional difference is the Cartesian edge vector in the conditioning cell's
  basis, (x_j - x_i) L^-1; its Fourier features carry the periodic bias of the crystal,
  and a Gaussian expansion of |x_j - x_i| adds what periodic features cannot tell apart
  (an edge of exactly one lattice vector looks like a self-loop to them);
- the output vector is read in the cell's basis and mapped back with the unit lattice
  rows. The network sees the geometry only through L L^T, fractional differences and
  distances, so when the particle and its cell rotate together the output rotates with
  them (equivariant in the cell's frame, as DiffCSP's output is).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn.models.schnet import GaussianSmearing
from torch_geometric.utils import scatter

from c2np.models.batches import Task1Batch
from c2np.models.components import MAX_Z, fourier_features, mlp, sinusoidal
from c2np.models.graph import NeighbourList, nearest_edges, radius_graph


class CSPLayer(nn.Module):
    """One CSPNet message-passing layer: pre-LayerNorm, edge MLP, mean aggregation,
    node MLP, residual (DiffCSP's layer, with its SiLU MLPs)."""

    def __init__(self, hidden: int, edge_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.edge_mlp = nn.Sequential(nn.Linear(2 * hidden + edge_dim, hidden), nn.SiLU(),
                                      nn.Linear(hidden, hidden), nn.SiLU())
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(),
                                      nn.Linear(hidden, hidden), nn.SiLU())

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        x = self.norm(h)
        src, tgt = edge_index
        m = self.edge_mlp(torch.cat([x[tgt], x[src], edge_attr], -1))
        agg = scatter(m, tgt, dim=0, dim_size=len(h), reduce="mean")
        return h + self.node_mlp(torch.cat([x, agg], -1))


class ParticleCSPNet(nn.Module):
    """Node features of a (noisy) particle -> one vector per atom, in Angstrom units.

    ``lattice_dots`` adds FlowMM's edge-to-lattice features (the edge vector's dot
    products with the three lattice vectors, normalised).
    """

    def __init__(self, hidden: int = 128, layers: int = 4, edge_freq: int = 16, cutoff: float = 7.0,
                 max_neighbors: int = 20, gaussians: int = 16, lattice_dots: bool = False):
        super().__init__()
        self.cutoff, self.max_neighbors, self.edge_freq = cutoff, max_neighbors, edge_freq
        self.lattice_dots = lattice_dots
        self.neighbours: NeighbourList | None = None  # set while sampling (graph.reused_neighbours)
        self.distance = GaussianSmearing(0.0, cutoff, gaussians)
        edge_dim = 6 * edge_freq + gaussians + 9 + (3 if lattice_dots else 0)
        self.layers = nn.ModuleList(CSPLayer(hidden, edge_dim) for _ in range(layers))
        self.final_norm = nn.LayerNorm(hidden)
        # no bias: a constant drift of every atom has no place in a centred particle
        self.out = nn.Linear(hidden, 3, bias=False)

    def edges(self, pos: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
        """Radius-graph edges, each target capped at its ``max_neighbors`` nearest atoms."""
        edge_index = radius_graph(pos, ptr, self.cutoff, self.neighbours)
        if self.max_neighbors > 0:
            length = (pos[edge_index[1]] - pos[edge_index[0]]).norm(dim=-1)
            edge_index = edge_index[:, nearest_edges(edge_index, length, len(pos), self.max_neighbors)]
        return edge_index

    def forward(self, h: torch.Tensor, pos: torch.Tensor, graph: torch.Tensor, ptr: torch.Tensor,
                lattice: torch.Tensor) -> torch.Tensor:
        """``h`` (n, hidden) node inputs, ``pos`` (n, 3), ``graph`` (n,) graph of each atom,
        ``ptr`` (G + 1,), ``lattice`` (G, 3, 3) rows of the conditioning cell."""
        return self.propagate(h, pos, graph, self.edges(pos, ptr), lattice)

    def propagate(self, h: torch.Tensor, pos: torch.Tensor, graph: torch.Tensor, edge_index: torch.Tensor,
                  lattice: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on a given graph: no data-dependent shapes, so that ``c2np predict
        --compile`` compiles it once for every batch."""
        src, tgt = edge_index
        g = graph[tgt]
        diff = pos[src] - pos[tgt]
        # inv_ex: inv's singularity check is a host wait on a GPU; the same values
        frac = torch.einsum("ei,eij->ej", diff, torch.linalg.inv_ex(lattice).inverse[g])
        lengths = lattice.norm(dim=-1)  # (G, 3)
        scale = lengths.mean(-1).view(-1, 1, 1)
        metric = (lattice @ lattice.transpose(-1, -2) / scale ** 2).flatten(1)  # L L^T, unitless
        dist = diff.norm(dim=-1)
        feats = [fourier_features(frac, self.edge_freq), self.distance(dist), metric[g]]
        if self.lattice_dots:
            dots = torch.einsum("ei,eji->ej", diff, lattice[g])
            feats.append(dots / dots.norm(dim=-1, keepdim=True).clamp_min(1e-6))
        edge_attr = torch.cat(feats, -1)
        for layer in self.layers:
            h = layer(h, edge_index, edge_attr)
        out = self.out(self.final_norm(h))  # in the cell's basis
        unit = lattice / lengths.unsqueeze(-1)
        return torch.einsum("ni,nij->nj", out, unit[graph])


class Task1CSPNet(nn.Module):
    """:class:`ParticleCSPNet` with the Task 1 node inputs: species embedding + the site
    features of each atom in the conditioning cell + a per-graph vector of (whole-cell
    condition, time) + the atom's distance from the centre relative to R (the sphere's
    boundary is where a carved particle ends)."""

    def __init__(self, hidden: int = 128, **net):
        super().__init__()
        self.hidden = hidden
        self.embedding = nn.Embedding(MAX_Z + 1, hidden)
        self.graph_cond = mlp(2 * hidden, hidden, hidden)
        self.radial = mlp(1, hidden, hidden)
        self.net = ParticleCSPNet(hidden, **net)

    def forward(self, batch: Task1Batch, pos: torch.Tensor, site: torch.Tensor, cond: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
        """``site`` (n, hidden) from ``Task1Generator.site_condition``, ``cond`` (G, hidden)
        from ``cell_condition``, ``t`` (G,) time in [0, 1]."""
        per_graph = self.graph_cond(torch.cat([cond, sinusoidal(t, self.hidden)], -1))
        radial = pos.norm(dim=-1, keepdim=True) / batch.radius[batch.batch].view(-1, 1)
        h = self.embedding(batch.z) + site + per_graph[batch.batch] + self.radial(radial)
        return self.net(h, pos, batch.batch, batch.ptr, batch.lattice)
