"""Shared building blocks of SPEC.md's baselines: a learnable atom embedding, a SchNet
encoder (PyTorch Geometric's interaction blocks), MLPs with LayerNorm + SiLU, and
sinusoidal embeddings of the diffusion time and of the radius (Task 1)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.nn.models.schnet import GaussianSmearing, InteractionBlock
from torch_geometric.utils import scatter

from c2np.models.graph import radius_edges

#: Atomic numbers up to this value have an embedding row.
MAX_Z = 100


def mlp(n_in: int, hidden: int, n_out: int, layers: int = 2) -> nn.Sequential:
    """Linear -> LayerNorm -> SiLU blocks, then a linear output layer."""
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers - 1):
        mods += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


def sinusoidal(x: torch.Tensor, dim: int, max_period: float = 100.0) -> torch.Tensor:
    """(n,) -> (n, dim) sin/cos features of a scalar (time in [0, 1], or R in Angstrom)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device) / half)
    args = x.float().view(-1, 1) * freqs.view(1, -1) * max_period / (2 * math.pi)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class SchNetEncoder(nn.Module):
    """Atom features from SchNet interactions on a radius graph (invariant: distances only).

    ``node_cond`` (n_nodes, hidden), when given, is added to the atom embedding, which is
    how the time, radius and latent conditions enter the score networks.
    """

    def __init__(self, hidden: int = 64, interactions: int = 3, cutoff: float = 4.0,
                 gaussians: int = 32, filters: int | None = None):
        super().__init__()
        self.cutoff = cutoff
        self.embedding = nn.Embedding(MAX_Z + 1, hidden)
        self.distance = GaussianSmearing(0.0, cutoff, gaussians)
        self.blocks = nn.ModuleList(InteractionBlock(hidden, gaussians, filters or hidden, cutoff)
                                    for _ in range(interactions))
        self.norm = nn.LayerNorm(hidden)

    def edges(self, pos: torch.Tensor, ptr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Radius-graph edges and their lengths."""
        edge_index = radius_edges(pos, ptr, self.cutoff)
        length = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1)
        return edge_index, length

    def forward(self, z: torch.Tensor, pos: torch.Tensor, ptr: torch.Tensor,
                node_cond: torch.Tensor | None = None, graph: tuple | None = None) -> torch.Tensor:
        h = self.embedding(z)
        if node_cond is not None:
            h = h + node_cond
        edge_index, length = graph if graph is not None else self.edges(pos, ptr)
        attr = self.distance(length)
        for block in self.blocks:
            h = h + block(h, edge_index, length, attr)
        return self.norm(h)


def mean_pool(h: torch.Tensor, batch: torch.Tensor, n_graphs: int) -> torch.Tensor:
    """Mean of node features per graph."""
    return scatter(h, batch, dim=0, dim_size=n_graphs, reduce="mean")


def gaussian_latent(mu: torch.Tensor, logvar: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A VAE latent: reparameterised draw (or the mean when ``sample`` is False) and the
    KL divergence to N(0, I), averaged over graphs. ``logvar`` is clamped for stability."""
    logvar = logvar.clamp(-10, 10)
    lat = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
    kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu ** 2 - logvar.exp(), -1))
    return lat, kl


class CellConditioner(nn.Module):
    """Condition vector of Task 1: the unit cell (lattice parameters, composition through
    the atom embedding, volume per atom) and the radius embedding."""

    def __init__(self, hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(MAX_Z + 1, hidden)
        self.net = mlp(hidden + 8 + hidden, hidden, hidden)
        self.hidden = hidden

    def forward(self, cell_z: torch.Tensor, cell_batch: torch.Tensor, cellpar: torch.Tensor,
                vol_per_atom: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        n = len(cellpar)
        comp = mean_pool(self.embedding(cell_z), cell_batch, n)
        lengths = cellpar[:, :3] / 10.0
        angles = torch.cos(torch.deg2rad(cellpar[:, 3:]))
        geo = torch.cat([lengths, angles, vol_per_atom.view(-1, 1) / 10.0, radius.view(-1, 1) / 30.0], -1)
        return self.net(torch.cat([comp, geo, sinusoidal(radius, self.hidden)], -1))
