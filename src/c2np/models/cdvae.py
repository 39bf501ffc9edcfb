"""CDVAE family (Xie et al. 2022), adapted to finite particles.

Task 1: a conditional VAE. A SchNet encoder of the target particle gives the posterior
over a d_lat = 4 latent; heads on (latent, cell + R) predict the size and composition;
a denoising score network (SchNet on the noisy particle's radius graph, conditioned on
latent, cell, R and noise level) predicts each atom's score as a sum of edge weights
times unit vectors, trained by denoising score matching on the coordinates.

Task 2: SchNet encoder -> latent (d_lat = 4) -> lattice and space-group heads
("latent inference").
"""

from __future__ import annotations

import dataclasses

import torch

from c2np.models.batches import Task1Batch, Task2Batch
from c2np.models.components import SchNetEncoder, edge_mlp, masked_mean, mean_pool, mlp
from c2np.models.generation import equivariant_vectors
from c2np.models.host_work import HostPlan, prepared_edges, prepared_score_edges
from c2np.models.task1_base import LangevinGenerator
from c2np.models.task2_base import LatticePredictor


class CDVAETask1(LangevinGenerator):
    """Conditional VAE + denoising score network over coordinates."""

    pads = True

    def __init__(self, hidden: int = 64, interactions: int = 3, cutoff: float = 4.0,
                 gaussians: int = 32, latent: int = 4, **kw):
        super().__init__(hidden=hidden, latent=latent, **kw)
        self.encoder = SchNetEncoder(hidden, interactions, cutoff, gaussians)
        self.posterior = mlp(2 * hidden, hidden, 2 * latent)
        self.score_net = SchNetEncoder(hidden, interactions, cutoff, gaussians)
        self.edge_out = mlp(2 * hidden + gaussians, hidden, 1)

    def host_plan(self) -> HostPlan:
        return dataclasses.replace(super().host_plan(), graph_cutoff=self.encoder.cutoff)

    def encode(self, batch: Task1Batch, cond: torch.Tensor):
        graph = self.encoder.edges(batch.pos, batch.ptr, prepared_edges(batch, self.encoder.cutoff), batch)
        h = mean_pool(self.encoder(batch.z, batch.pos, batch.ptr, graph=graph), batch.batch, batch.n_graphs)
        return self.posterior(torch.cat([h, cond], -1)).chunk(2, -1)

    def score(self, batch: Task1Batch, pos, node_cond, sigma_node, edges: torch.Tensor | None = None):
        """``edges``: the radius graph of ``pos`` when prepared on the host."""
        graph = self.score_net.edges(pos, batch.ptr, edges, batch)
        node_cond = node_cond + self.site_condition(batch, pos)
        (src, tgt), length = graph
        attr = self.score_net.distance(length)
        h = self.score_net(batch.z, pos, batch.ptr, node_cond, graph, attr)
        # edge_mlp: edge_out(cat([h[src], h[tgt], attr])) without the concatenation
        w = edge_mlp(self.edge_out, h, src, tgt, attr)
        return equivariant_vectors(w, pos, graph[0]) / sigma_node

    def score_loss(self, batch: Task1Batch, node_cond, sigma_node, noise):
        noisy = batch.pos + sigma_node * noise
        s = self.score(batch, noisy, node_cond, sigma_node, prepared_score_edges(batch, self.score_net.cutoff))
        # the score of the Gaussian perturbation is -noise / sigma; weight sigma^2
        return masked_mean(torch.sum((sigma_node * s + noise) ** 2, -1), batch.atom_mask)


class CDVAETask2(LatticePredictor):
    """SchNet encoder and latent-inference heads (lattice regression, space group)."""

    def __init__(self, hidden: int = 64, latent: int = 4, n_classes: int = 16, **kw):
        super().__init__(hidden=hidden, latent=latent, n_classes=n_classes, **kw)
        self.lattice_head = mlp(latent, hidden, 6)
        self.class_head = mlp(latent, hidden, n_classes)

    def forward(self, batch: Task2Batch, sample: bool | None = None):
        lat, kl = self.encode(batch, self.training if sample is None else sample)
        return self.lattice_head(lat), self.class_head(lat), kl



