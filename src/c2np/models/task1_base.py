"""Task 1 generators (unit cell + R -> particle): what the families share.

The condition is the whole unit cell (lattice, species and fractional positions of the
basis) and R, encoded once per graph by :class:`UnitCellEncoder`; every atom's network
input also carries :meth:`Task1Generator.site_condition`, Fourier features of its
fractional position in that cell, so that a score network can place atoms on the
crystal's sites. A subclass supplies the latent (``encode``: posterior from the target; the prior is
N(0, I)), the per-atom score (``score``) and its training loss (``score_loss``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from c2np.models.batches import Task1Batch
from c2np.models.components import (
    MAX_Z,
    UnitCellEncoder,
    fourier_features,
    gaussian_latent,
    mlp,
    site_fractions,
    sinusoidal,
)
from c2np.models.generation import annealed_langevin, sigmas, species_counts, uniform_ball


class Task1Generator(nn.Module):
    """Condition encoder, size/composition head, noise levels and sampling."""

    task = 1

    def __init__(self, hidden: int = 64, latent: int = 4, sigma_max: float = 1.5,
                 sigma_min: float = 0.02, n_sigmas: int = 20, langevin_steps: int = 5,
                 step_size: float = 1e-4, beta_kl: float = 0.01, max_atoms: int = 20000,
                 n_freq: int = 4, **_):
        super().__init__()
        self.hidden, self.latent, self.beta_kl = hidden, latent, beta_kl
        self.langevin_steps, self.step_size, self.max_atoms = langevin_steps, step_size, max_atoms
        self.register_buffer("levels", sigmas(sigma_max, sigma_min, n_sigmas))
        self.n_freq = n_freq
        self.conditioner = UnitCellEncoder(hidden, n_freq)
        self.site_embedding = mlp(6 * n_freq, hidden, hidden)
        self.size_head = mlp(hidden + latent, hidden, 1 + hidden)
        self.species_embedding = nn.Embedding(MAX_Z + 1, hidden)
        self.node_cond = mlp(2 * hidden + latent, hidden, hidden)

    # -- pieces the families provide --------------------------------------------------
    def encode(self, batch: Task1Batch, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def score(self, batch: Task1Batch, pos: torch.Tensor, node_cond: torch.Tensor,
              sigma_node: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_loss(self, batch: Task1Batch, node_cond: torch.Tensor, sigma_node: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------
    def size_and_species(self, batch: Task1Batch, cond: torch.Tensor, lat: torch.Tensor):
        """Predicted log N (G,) and species logits (G, S) over the cell's species."""
        out = self.size_head(torch.cat([cond, lat], -1))
        log_n = out[:, 0] + 3.0 * torch.log(batch.radius)  # atoms grow as R^3: learn the rest
        emb = self.species_embedding(batch.species)  # (G, S, h)
        logits = torch.einsum("gh,gsh->gs", out[:, 1:], emb) / self.hidden ** 0.5
        logits = logits + torch.log(batch.cell_frac.clamp_min(1e-6))
        return log_n, logits.masked_fill(batch.species == 0, -1e9)

    def cell_condition(self, batch: Task1Batch) -> torch.Tensor:
        """Per-graph condition vector of the whole unit cell and R."""
        return self.conditioner(batch.cell_z, batch.cell_pos, batch.cell_batch, batch.lattice,
                                batch.radius)

    def site_condition(self, batch: Task1Batch, pos: torch.Tensor) -> torch.Tensor:
        """(n, hidden) embedding of each atom's fractional position in the conditioning cell;
        families add it to the node condition wherever they read positions."""
        frac = site_fractions(pos, batch.batch, batch.lattice, batch.origin)
        return self.site_embedding(fourier_features(frac, self.n_freq))

    def conditions(self, batch: Task1Batch, lat: torch.Tensor, sigma_graph: torch.Tensor,
                   cond: torch.Tensor | None = None) -> torch.Tensor:
        """Per-node condition: cell + R (``cond``, computed when not given), latent, noise level."""
        cond = self.cell_condition(batch) if cond is None else cond
        level = sinusoidal(torch.log(sigma_graph) - torch.log(self.levels[-1]), self.hidden, 10.0)
        return self.node_cond(torch.cat([cond, lat, level], -1))[batch.batch]

    def loss(self, batch: Task1Batch) -> dict[str, torch.Tensor]:
        cond = self.cell_condition(batch)
        lat, kl = gaussian_latent(*self.encode(batch, cond), sample=True)
        log_n, logits = self.size_and_species(batch, cond, lat)
        size = torch.mean((log_n - batch.log_n) ** 2)
        comp = -torch.mean(torch.sum(batch.target_frac * torch.log_softmax(logits, -1)
                                     .masked_fill(batch.species == 0, 0.0), -1))
        k = torch.randint(len(self.levels), (batch.n_graphs,), device=batch.pos.device)
        sigma_graph = self.levels[k]
        node_cond = self.conditions(batch, lat, sigma_graph, cond)
        sigma_node = sigma_graph[batch.batch].view(-1, 1)
        score = self.score_loss(batch, node_cond, sigma_node, torch.randn_like(batch.pos))
        total = score + size + comp + self.beta_kl * kl
        return {"loss": total, "score": score, "size": size, "composition": comp, "kl": kl}

    @torch.no_grad()
    def generate(self, batch: Task1Batch, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """One particle per graph of ``batch`` (its condition fields; targets unused)."""
        gen = torch.Generator().manual_seed(int(seed))
        device = batch.lattice.device
        cond = self.cell_condition(batch)
        lat = torch.randn(batch.n_graphs, self.latent, generator=gen).to(device)
        log_n, logits = self.size_and_species(batch, cond, lat)
        frac = torch.softmax(logits, -1).cpu().numpy()
        zs, pos, sizes = [], [], []
        for g in range(batch.n_graphs):
            n = int(np.clip(np.rint(np.exp(float(log_n[g]))), 1, self.max_atoms))
            z = species_counts(n, batch.species[g].cpu().numpy(), frac[g])
            z = z[torch.randperm(n, generator=gen).numpy()]
            zs.append(torch.as_tensor(z))
            pos.append(uniform_ball(n, float(batch.radius[g]), gen))
            sizes.append(n)
        ptr = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), device=device)
        graph_of = torch.repeat_interleave(torch.arange(batch.n_graphs, device=device),
                                           torch.tensor(sizes, device=device))
        sample = Task1Batch(**{**batch.__dict__, "z": torch.cat(zs).to(device),
                               "pos": torch.cat(pos).to(device), "batch": graph_of, "ptr": ptr})

        def score(x: torch.Tensor, sigma: float) -> torch.Tensor:
            s_graph = torch.full((batch.n_graphs,), sigma, device=device)
            node_cond = self.conditions(sample, lat, s_graph, cond)
            return self.score(sample, x, node_cond, s_graph[graph_of].view(-1, 1))

        x = annealed_langevin(score, sample.pos, batch.radius, graph_of, self.levels,
                              self.langevin_steps, self.step_size, gen)
        bounds = ptr.tolist()
        return [(sample.z[a:b].cpu().numpy(), x[a:b].cpu().numpy().astype(np.float64))
                for a, b in zip(bounds[:-1], bounds[1:])]
