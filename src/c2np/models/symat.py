"""SyMat family (Luo et al. 2023; papers/symat-review.txt), adapted to finite particles.

Task 1: a VAE over the atom-type set (the particle's species fractions and log size,
conditioned on cell + R) gives the composition and size; coordinates come from a
score-based diffusion whose score is built from edge distances: the network scores
each distance d_ij, and the chain rule turns those scalars into atom scores
sum_j s_ij (x_i - x_j) / d_ij, invariant features in, equivariant score out. Training
matches the distance scores to the perturbation of each edge length.

Task 2: a VAE over the lattice: SchNet encoder -> latent -> separate decoders for the
lengths (in log space) and the angles, plus the atom-type set as an auxiliary
reconstruction and a space-group head.
"""

from __future__ import annotations

import torch

from c2np.models.batches import Task1Batch, Task2Batch
from c2np.models.components import MAX_Z, SchNetEncoder, mlp
from c2np.models.generation import equivariant_vectors
from c2np.models.host_work import prepared_score_edges
from c2np.models.task1_base import LangevinGenerator
from c2np.models.task2_base import LatticePredictor


class SyMatTask1(LangevinGenerator):
    """Atom-type-set VAE + distance-score diffusion over coordinates."""

    def __init__(self, hidden: int = 64, interactions: int = 3, cutoff: float = 4.0,
                 gaussians: int = 32, latent: int = 8, **kw):
        super().__init__(hidden=hidden, latent=latent, **kw)
        self.type_encoder = mlp(hidden + hidden + 1, hidden, 2 * latent)
        self.score_net = SchNetEncoder(hidden, interactions, cutoff, gaussians)
        self.edge_out = mlp(2 * hidden + gaussians, hidden, 1)

    def encode(self, batch: Task1Batch, cond: torch.Tensor):
        # the type set as a bag: fraction-weighted species embeddings, plus the size
        bag = torch.einsum("gs,gsh->gh", batch.target_frac, self.species_embedding(batch.species))
        size = (batch.log_n - 3.0 * torch.log(batch.radius)).view(-1, 1)
        return self.type_encoder(torch.cat([bag, cond, size], -1)).chunk(2, -1)

    def edge_scores(self, batch: Task1Batch, pos, node_cond, sigma_node, edges: torch.Tensor | None = None):
        """Scores of the radius-graph edges of ``pos`` (``edges``: that graph, prepared on the host)."""
        graph = self.score_net.edges(pos, batch.ptr, edges)
        node_cond = node_cond + self.site_condition(batch, pos)
        h = self.score_net(batch.z, pos, batch.ptr, node_cond, graph)
        (src, tgt), length = graph
        h_src, h_tgt = h.index_select(0, src), h.index_select(0, tgt)  # backward: index_add (see cdvae)
        s = self.edge_out(torch.cat([h_src + h_tgt, h_src * h_tgt,
                                     self.score_net.distance(length)], -1)).view(-1)
        return s / sigma_node[tgt].view(-1), graph

    def score(self, batch: Task1Batch, pos, node_cond, sigma_node):
        s, graph = self.edge_scores(batch, pos, node_cond, sigma_node)
        # d log p / d x_i = sum_j (d log p / d d_ij) (x_i - x_j) / d_ij
        return equivariant_vectors(s, pos, graph[0])

    def score_loss(self, batch: Task1Batch, node_cond, sigma_node, noise):
        noisy = batch.pos + sigma_node * noise
        s, ((src, tgt), length) = self.edge_scores(batch, noisy, node_cond, sigma_node,
                                                   prepared_score_edges(batch, self.score_net.cutoff))
        clean = (batch.pos[tgt] - batch.pos[src]).norm(dim=-1)
        sigma_e = sigma_node[tgt].view(-1)
        target = -(length - clean) / sigma_e ** 2
        return torch.mean((sigma_e * (s - target)) ** 2)


class SyMatTask2(LatticePredictor):
    """Lattice VAE: lengths and angles decoded separately, atom-type set as auxiliary."""

    def __init__(self, hidden: int = 64, latent: int = 16, n_classes: int = 16, **kw):
        super().__init__(hidden=hidden, latent=latent, n_classes=n_classes, **kw)
        self.lengths = mlp(latent, hidden, 3)
        self.angles = mlp(latent, hidden, 3)
        self.types = mlp(latent, hidden, MAX_Z + 1)
        self.class_head = mlp(latent, hidden, n_classes)

    def forward(self, batch: Task2Batch, sample: bool | None = None):
        lat, kl = self.encode(batch, self.training if sample is None else sample)
        # lengths are predicted as log-ratios to the training mean: positive by construction
        lengths = self.lattice_mean[:3] * torch.exp(0.1 * self.lengths(lat))
        lattice = torch.cat([(lengths - self.lattice_mean[:3]) / self.lattice_std[:3],
                             self.angles(lat)], -1)
        counts = torch.zeros(batch.n_graphs, MAX_Z + 1, device=lat.device)
        counts.index_put_((batch.batch, batch.z), torch.ones_like(batch.z, dtype=torch.float),
                          accumulate=True)
        frac = counts / counts.sum(-1, keepdim=True)
        types = -torch.mean(torch.sum(frac * torch.log_softmax(self.types(lat), -1), -1))
        return lattice, self.class_head(lat), types + kl
