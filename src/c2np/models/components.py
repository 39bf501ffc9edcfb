"""Shared building blocks of SPEC.md's baselines: a learnable atom embedding, a SchNet
encoder (PyTorch Geometric's interaction blocks), MLPs with LayerNorm + SiLU, and
sinusoidal embeddings of the diffusion time and of the radius (Task 1)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch_geometric.nn.models.schnet import GaussianSmearing, InteractionBlock
from torch_geometric.utils import scatter

from c2np.models.graph import NeighbourList, radius_edges_static, radius_graph, undirected_pairs

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
        self.neighbours: NeighbourList | None = None  # set while sampling (graph.reused_neighbours)
        self.embedding = nn.Embedding(MAX_Z + 1, hidden)
        self.distance = GaussianSmearing(0.0, cutoff, gaussians)
        self.blocks = nn.ModuleList(InteractionBlock(hidden, gaussians, filters or hidden, cutoff)
                                    for _ in range(interactions))
        self.norm = nn.LayerNorm(hidden)
        #: dtype of the edge pipeline in :meth:`interact` (``train.bf16_edges``); None: fp32
        self.edge_dtype: torch.dtype | None = None
        #: :meth:`interact`'s messages from the fused Triton kernels (``train.compile = "triton"``)
        self.fused_cfconv = False
        #: the graphs given to :meth:`interact` are symmetric (``graph.is_symmetric``): those of
        #: :meth:`edges` are (radius graphs without a neighbour cap: every pair both ways with
        #: equal lengths), and every model here passes those; the fused kernels' backward then
        #: skips the atomics at the sources (``cfconv(..., symmetric=True)``). Set it False
        #: before passing other graphs (capped at the nearest neighbours, one-way): the
        #: gradient of ``h`` would otherwise be wrong
        self.symmetric_graphs = True
        #: :meth:`interact` computes each filter once per unordered pair of a symmetric graph
        #: (``graph.undirected_pairs``), not once per direction: the same values to float
        #: rounding, half the filter network's rows. On with ``train.compile = "loss"``
        #: (``compile_loss``); off in eager steps, whose host time the pairing's sort adds to
        self.pair_filters = False

    def edges(self, pos: torch.Tensor, ptr: torch.Tensor, edge_index: torch.Tensor | None = None,
              padded=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Radius-graph edges and their lengths; ``edge_index``, when given, is the graph
        prepared on the host (``c2np.models.host_work``) and only the lengths are computed.
        ``padded``: a padded batch (``c2np.models.padding``), whose graph goes into its
        fixed-capacity buffer; an overflowing buffer makes every length NaN."""
        if edge_index is None and padded is not None and padded.atom_mask is not None:
            edge_index, overflow = radius_edges_static(pos, ptr, self.cutoff, padded.atom_mask,
                                                       *padded.graph_capacity)
            length = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1)
            return edge_index, torch.where(overflow, torch.nan, length)
        if edge_index is None:
            edge_index = radius_graph(pos, ptr, self.cutoff, self.neighbours)
        length = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1)
        return edge_index, length

    def forward(self, z: torch.Tensor, pos: torch.Tensor, ptr: torch.Tensor,
                node_cond: torch.Tensor | None = None, graph: tuple | None = None,
                attr: torch.Tensor | None = None) -> torch.Tensor:
        """``attr``: ``self.distance`` of the graph's lengths, when the caller has it already."""
        h = self.embedding(z)
        if node_cond is not None:
            h = h + node_cond
        edge_index, length = graph if graph is not None else self.edges(pos, ptr)
        attr = self.distance(length) if attr is None else attr
        pairs = None
        if self.pair_filters and self.symmetric_graphs and not self.fused_cfconv:
            pairs = undirected_pairs(edge_index, len(h))
        return self.norm(self.interact(h, edge_index[0], edge_index[1], length, attr, pairs))

    def interact(self, h: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor, length: torch.Tensor,
                 attr: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``h + block(h, ...)`` for every PyG ``InteractionBlock`` of ``self.blocks``, with
        the blocks' own weights and the same values (to float rounding), in fewer kernels
        and fewer (edges x filters) tensors: this is most of a training step's GPU time.

        - the cosine cutoff envelope is computed once, not once per block;
        - the shift of the filter's shifted softplus is folded into the second layer's bias;
        - the continuous-filter message is ``index_select`` -> multiply -> ``index_add_``
          instead of PyG's ``propagate`` (a ``scatter_add_`` with an index expanded to
          (E, filters), whose backward is a ``gather`` of that size).

        ``train.compile = "edges"`` compiles this method (``compile_interactions``).
        With ``edge_dtype`` (``train.bf16_edges``) the per-edge chain (envelope, filter
        network, gathered features, their product) runs in that dtype, the scatter-add
        accumulates in fp32 and the node updates stay fp32.

        With ``fused_cfconv`` (``train.compile = "triton"``) each block's filter network,
        gather, product and scatter run as one Triton kernel each way
        (``c2np.models.cfconv_triton``), fp32, without any (edges x filters) tensor;
        ``edge_dtype`` is then ignored. A call whose ``attr`` or ``length`` requires a
        gradient (differentiable positions) takes the eager path: the kernels have none
        for them. With ``symmetric_graphs`` (the default: the graphs of :meth:`edges`) the
        kernels' backward takes the gradient of ``x`` from a message sum over the targets.

        ``pairs`` (``graph.undirected_pairs`` of a symmetric graph; ``pair_filters``): the
        filters (envelope included) are computed for one edge of each unordered pair and
        gathered for both directions, half the filter network's rows; the same values and
        gradients to float rounding (the filter gradients of both directions are summed
        before the network's backward).
        """
        low = self.edge_dtype
        envelope = (0.5 * (torch.cos(length * math.pi / self.cutoff) + 1.0)).view(-1, 1)
        fused = self.fused_cfconv and not (attr.requires_grad or length.requires_grad)
        if fused:
            from c2np.models.cfconv_triton import cfconv
        elif low is not None:
            attr, envelope = attr.to(low), envelope.to(low)
        if pairs is not None and not fused:
            attr, envelope = attr.index_select(0, pairs[0]), envelope.index_select(0, pairs[0])
        for block in self.blocks:
            # ShiftedSoftplus(x) = softplus(x) - log 2: the shift goes into the next layer's
            # bias (W (s - c) + b = W s + (b - c W 1)), one (E, filters) pass fewer each way
            first, conv, second = block.mlp[0], block.conv, block.mlp[2]
            bias = second.bias - block.mlp[1].shift * second.weight.sum(1)
            x = conv.lin1(h)
            if fused:
                msg = cfconv(x, src, tgt, attr, envelope, first.weight, first.bias, second.weight, bias,
                             symmetric=self.symmetric_graphs)
            elif low is None:
                w = F.linear(F.softplus(first(attr)), second.weight, bias) * envelope
                w = w if pairs is None else w.index_select(0, pairs[1])
                msg = torch.zeros_like(x).index_add_(0, tgt, x.index_select(0, src) * w)
            else:
                act = F.softplus(F.linear(attr, first.weight.to(low), first.bias.to(low)))
                w = F.linear(act, second.weight.to(low), bias.to(low)) * envelope
                w = w if pairs is None else w.index_select(0, pairs[1])
                msg = torch.zeros_like(x).index_add_(0, tgt, (x.to(low).index_select(0, src) * w).float())
            h = h + block.lin(block.act(conv.lin2(msg)))
        return h


def schnet_encoders(model: nn.Module) -> list[SchNetEncoder]:
    """Every :class:`SchNetEncoder` of ``model``: where the speed settings (``edge_dtype``,
    ``fused_cfconv``, ``pair_filters``, ``symmetric_graphs``, a compiled ``interact``) go."""
    return [m for m in model.modules() if isinstance(m, SchNetEncoder)]


def mean_pool(h: torch.Tensor, batch: torch.Tensor, n_graphs: int) -> torch.Tensor:
    """Mean of node features per graph."""
    return scatter(h, batch, dim=0, dim_size=n_graphs, reduce="mean")


def edge_mlp(net: nn.Sequential, h: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor,
             attr: torch.Tensor) -> torch.Tensor:
    """``net(cat([h[src], h[tgt], attr], -1))`` for an :func:`mlp` ``net``, without the
    (edges, 2 hidden + gaussians) concatenation: the first layer is split by input block,
    so ``h`` is projected once per node and the projections are gathered per edge. Same
    weights, same values to float rounding; one (edges x width) product fewer forward and
    backward."""
    first, width = net[0], h.shape[1]
    w = first.weight
    pre = (F.linear(h, w[:, :width]).index_select(0, src)
           + F.linear(h, w[:, width:2 * width]).index_select(0, tgt)
           + F.linear(attr, w[:, 2 * width:], first.bias))
    return net[1:](pre)


def gaussian_latent(mu: torch.Tensor, logvar: torch.Tensor, sample: bool,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A VAE latent: reparameterised draw (or the mean when ``sample`` is False) and the
    KL divergence to N(0, I), averaged over graphs (the real ones of a padded batch:
    ``mask``). ``logvar`` is clamped for stability."""
    logvar = logvar.clamp(-10, 10)
    lat = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
    kl = -0.5 * torch.sum(1 + logvar - mu ** 2 - logvar.exp(), -1)
    return lat, masked_mean(kl, mask)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x.mean()`` over the real entries of a padded batch (``c2np.models.padding``):
    ``mask`` (same length, 1 real / 0 padding), or ``None`` for an unpadded batch."""
    return x.mean() if mask is None else (x * mask).sum() / mask.sum()


def fourier_features(frac: torch.Tensor, n_freq: int) -> torch.Tensor:
    """(..., 3) fractional coordinates -> (..., 6 n_freq) sin/cos(2 pi k f), k = 1..n_freq.

    Periodic in every fractional coordinate, so a position and its lattice translates get
    the same features: this is how a network on a finite particle knows where an atom sits
    relative to the crystal it was cut from (DiffCSP's Fourier features of fractional
    coordinates, without the periodic graph).
    """
    k = torch.arange(1, n_freq + 1, device=frac.device, dtype=frac.dtype)
    args = 2 * math.pi * frac.unsqueeze(-1) * k  # (..., 3, K)
    return torch.cat([torch.sin(args), torch.cos(args)], -1).flatten(-2)


def lattice_features(lattice: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """(G, 3, 3) lattice rows -> (G, 7): lengths / 10 A, cos angles, volume per atom / 10 A^3."""
    lengths = lattice.norm(dim=-1)
    unit = lattice / lengths.unsqueeze(-1)
    cos = torch.stack([(unit[:, 1] * unit[:, 2]).sum(-1), (unit[:, 0] * unit[:, 2]).sum(-1),
                       (unit[:, 0] * unit[:, 1]).sum(-1)], -1)
    vol = torch.linalg.det(lattice).abs() / n_atoms
    return torch.cat([lengths / 10.0, cos, vol.view(-1, 1) / 10.0], -1)


class UnitCellEncoder(nn.Module):
    """Condition vector of Task 1: the whole unit cell (lattice, species and fractional
    positions of every basis atom) and the radius.

    Each basis atom starts from its species embedding plus Fourier features of its
    fractional position; ``layers`` rounds of message passing over all atom pairs of the
    cell (cells hold tens of atoms, so all pairs are cheap) use the Fourier features of the
    fractional difference and the minimum-image distance, so the encoder sees the
    arrangement of the basis and not only the composition. The pooled atoms, the lattice
    features and the radius embedding give one vector per graph. Invariant to the order of
    the basis atoms; origin-dependent on purpose, because the particle is carved about a
    fixed point of the cell.
    """

    def __init__(self, hidden: int, n_freq: int = 4, layers: int = 2, gaussians: int = 16,
                 cutoff: float = 8.0):
        super().__init__()
        self.hidden, self.n_freq = hidden, n_freq
        self.embedding = nn.Embedding(MAX_Z + 1, hidden)
        self.position = mlp(6 * n_freq, hidden, hidden)
        self.distance = GaussianSmearing(0.0, cutoff, gaussians)
        self.messages = nn.ModuleList(mlp(2 * hidden + 6 * n_freq + gaussians, hidden, hidden)
                                      for _ in range(layers))
        self.updates = nn.ModuleList(mlp(2 * hidden, hidden, hidden) for _ in range(layers))
        self.out = mlp(2 * hidden + 7 + 1 + hidden, hidden, hidden)

    @staticmethod
    def pairs(cell_batch: torch.Tensor) -> torch.Tensor:
        """All ordered pairs (i != j) of atoms of the same cell, (2, sum m_g (m_g - 1))."""
        counts = torch.bincount(cell_batch)
        starts = torch.cumsum(counts, 0) - counts
        rep = counts[cell_batch]  # partners of each atom, itself included
        src = torch.repeat_interleave(torch.arange(len(cell_batch), device=cell_batch.device), rep)
        offset = torch.arange(len(src), device=src.device) - torch.repeat_interleave(
            torch.cumsum(rep, 0) - rep, rep)
        tgt = starts[cell_batch[src]] + offset
        keep = src != tgt
        return torch.stack([src[keep], tgt[keep]])

    # Eager even inside a compiled loss (train.compile = "loss" or "static"): Inductor fused
    # the max pool's input differently in the forward and in the backward, whose gradient
    # picks the maxima by equality with the forward's result, so no element matched and every
    # gradient of this encoder came out NaN (torch 2.13, CPU; the loss itself was right). Its
    # cells hold tens of atoms: eager costs the step a few dozen small kernels.
    @torch.compiler.disable
    def forward(self, cell_z: torch.Tensor, cell_pos: torch.Tensor, cell_batch: torch.Tensor,
                lattice: torch.Tensor, radius: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        """``pairs``: :meth:`pairs` of ``cell_batch`` when prepared on the host."""
        n_graphs = len(lattice)
        h = self.embedding(cell_z) + self.position(fourier_features(cell_pos, self.n_freq))
        src, tgt = self.pairs(cell_batch) if pairs is None else pairs
        dfrac = cell_pos[tgt] - cell_pos[src]
        wrapped = dfrac - torch.round(dfrac)
        dist = torch.einsum("ei,eij->ej", wrapped, lattice[cell_batch[src]]).norm(dim=-1)
        edge = torch.cat([fourier_features(dfrac, self.n_freq), self.distance(dist)], -1)
        for message, update in zip(self.messages, self.updates):
            # index_select, not h[src]: same values; its backward is an index_add, not
            # advanced indexing's accumulating index_put (a slow sort-based GPU kernel)
            pair = torch.cat([h.index_select(0, src), h.index_select(0, tgt), edge], -1)
            m = scatter(message(pair), tgt, dim=0, dim_size=len(h), reduce="mean")
            h = h + update(torch.cat([h, m], -1))
        pooled = torch.cat([mean_pool(h, cell_batch, n_graphs),
                            scatter(h, cell_batch, dim=0, dim_size=n_graphs, reduce="max")], -1)
        # a scatter, not bincount: bincount sizes its output from the data, a host wait on a GPU
        n_atoms = torch.zeros(n_graphs, dtype=lattice.dtype, device=lattice.device).index_add_(
            0, cell_batch, torch.ones_like(cell_batch, dtype=lattice.dtype)).clamp_min(1)
        geo = torch.cat([lattice_features(lattice, n_atoms), radius.view(-1, 1) / 30.0], -1)
        return self.out(torch.cat([pooled, geo, sinusoidal(radius, self.hidden)], -1))


def site_fractions(pos: torch.Tensor, batch: torch.Tensor, lattice: torch.Tensor,
                   origin: torch.Tensor, inv: torch.Tensor | None = None) -> torch.Tensor:
    """Fractional coordinates, in the conditioning cell, of particle positions.

    Particles are stored relative to the carving centre x0; ``origin`` is x0 in fractional
    coordinates of the cell (mod 1), so ``pos @ L^-1 + origin`` places every atom in the
    crystal it was cut from. Positions are in the cell's frame (Task 1 generates the
    unrotated particle). ``inv``: the inverse lattices when prepared on the host.
    """
    inv = torch.linalg.inv(lattice) if inv is None else inv  # (G, 3, 3)
    return torch.einsum("ni,nij->nj", pos, inv[batch]) + origin[batch]
