"""Task 1 generators (unit cell + R -> particle): what the families share.

The condition is the whole unit cell (lattice, species and fractional positions of the
basis) and R, encoded once per graph by :class:`UnitCellEncoder`; every atom's network
input also carries :meth:`Task1Generator.site_condition`, Fourier features of its
fractional position in that cell, so that a network can place atoms on the crystal's
sites.

:class:`Task1Generator` is family-neutral: the condition, an optional Gaussian latent
(``latent = 0`` means none), the size/composition head (log N and species fractions),
the loss skeleton and the start of sampling (how many atoms of which species, first
positions uniform in the sphere). A family supplies ``coordinate_loss`` (its training
objective on the coordinates) and ``sample_positions`` (its sampler).
:class:`LangevinGenerator` is the score-based family base (CDVAE, SyMat): noise levels,
denoising score matching and annealed Langevin dynamics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from c2np.models.batches import Task1Batch
from c2np.models.components import (
    MAX_Z,
    UnitCellEncoder,
    fourier_features,
    gaussian_latent,
    masked_mean,
    mlp,
    site_fractions,
    sinusoidal,
)
from c2np.models.generation import annealed_langevin, sigmas, species_counts, uniform_ball
from c2np.models.graph import DEFAULT_SKIN, reused_neighbours
from c2np.models.host_work import HostPlan


@dataclass
class SampleStart:
    """The start of sampling: a batch holding the generated atoms (species fixed, first
    positions uniform in the sphere), the per-graph condition and latent, and the seeded
    generator that the sampler must keep drawing from."""

    batch: Task1Batch
    cond: torch.Tensor
    lat: torch.Tensor
    generator: torch.Generator


class Task1Generator(nn.Module):
    """Condition encoder, size/composition head, loss skeleton and the start of sampling."""

    task = 1
    #: whether :meth:`loss` takes padded batches (``c2np.models.padding``, ``train.pad_buckets``)
    pads = False

    def __init__(self, hidden: int = 64, latent: int = 0, beta_kl: float = 0.01,
                 max_atoms: int = 20000, n_freq: int = 4, **_):
        super().__init__()
        self.hidden, self.latent, self.beta_kl = hidden, latent, beta_kl
        self.max_atoms, self.n_freq = max_atoms, n_freq
        self.conditioner = UnitCellEncoder(hidden, n_freq)
        self.site_embedding = mlp(6 * n_freq, hidden, hidden)
        self.size_head = mlp(hidden + latent, hidden, 1 + hidden)
        self.species_embedding = nn.Embedding(MAX_Z + 1, hidden)

    # -- pieces the families provide --------------------------------------------------
    def encode(self, batch: Task1Batch, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mu, logvar) of the latent from the target; needed when ``latent > 0``."""
        raise NotImplementedError

    def coordinate_loss(self, batch: Task1Batch, cond: torch.Tensor,
                        lat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The family's objective on the coordinates; must hold the key ``"coords"``."""
        raise NotImplementedError

    def sample_positions(self, start: SampleStart) -> torch.Tensor:
        """Final positions (n, 3) of the atoms of ``start.batch``. A family that generates the
        species itself (MatterGen's D3PM, ADiT's decoder) also replaces ``start.batch.z``;
        :meth:`generate` reads the species from there after sampling."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------
    def cell_condition(self, batch: Task1Batch) -> torch.Tensor:
        """Per-graph condition vector of the whole unit cell and R."""
        return self.conditioner(batch.cell_z, batch.cell_pos, batch.cell_batch, batch.lattice,
                                batch.radius, batch.cell_pairs)

    def host_plan(self) -> HostPlan:
        """What the DataLoader workers can prepare for this model's loss (``host_work``):
        nothing beyond what every batch carries, unless a family adds its graphs."""
        return HostPlan()

    def site_condition(self, batch: Task1Batch, pos: torch.Tensor) -> torch.Tensor:
        """(n, hidden) embedding of each atom's fractional position in the conditioning cell;
        families add it to the node features wherever they read positions."""
        frac = site_fractions(pos, batch.batch, batch.lattice, batch.origin, batch.lattice_inv)
        return self.site_embedding(fourier_features(frac, self.n_freq))

    def size_and_species(self, batch: Task1Batch, cond: torch.Tensor, lat: torch.Tensor):
        """Predicted log N (G,) and species logits (G, S) over the cell's species."""
        out = self.size_head(torch.cat([cond, lat], -1))
        log_n = out[:, 0] + 3.0 * torch.log(batch.radius)  # atoms grow as R^3: learn the rest
        emb = self.species_embedding(batch.species)  # (G, S, h)
        logits = torch.einsum("gh,gsh->gs", out[:, 1:], emb) / self.hidden ** 0.5
        logits = logits + torch.log(batch.cell_frac.clamp_min(1e-6))
        return log_n, logits.masked_fill(batch.species == 0, -1e9)

    def posterior_latent(self, batch: Task1Batch, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training latent (reparameterised draw) and its KL; empty and 0 without a latent."""
        if self.latent == 0:
            return cond.new_zeros(len(cond), 0), cond.new_zeros(())
        return gaussian_latent(*self.encode(batch, cond), sample=True, mask=batch.graph_mask)

    def loss(self, batch: Task1Batch) -> dict[str, torch.Tensor]:
        cond = self.cell_condition(batch)
        lat, kl = self.posterior_latent(batch, cond)
        log_n, logits = self.size_and_species(batch, cond, lat)
        # means over the real graphs of a padded batch (graph_mask; None: every graph)
        size = masked_mean((log_n - batch.log_n) ** 2, batch.graph_mask)
        # KL divergence, not the cross-entropy (objective version 2, c2np.config.OBJECTIVE_VERSIONS):
        # the same gradients without the target's entropy, a floor of about 0.95 nats that no
        # model can go below and that loosened the relative stopping rule (docs/models.md)
        logp = torch.log_softmax(logits, -1).masked_fill(batch.species == 0, 0.0)
        comp = masked_mean(torch.sum(torch.xlogy(batch.target_frac, batch.target_frac)
                                     - batch.target_frac * logp, -1), batch.graph_mask)
        coords = self.coordinate_loss(batch, cond, lat)
        total = coords["coords"] + size + comp + self.beta_kl * kl
        return {"loss": total, **coords, "size": size, "composition": comp, "kl": kl}

    @torch.no_grad()
    def start_sampling(self, batch: Task1Batch, seed: int) -> SampleStart:
        """Draw the latent, the atom count and species of every graph, and first positions
        uniform in the sphere (the known support of a carved particle)."""
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
        # host work prepared for the target particle does not describe the generated atoms
        sample = dataclasses.replace(batch, z=torch.cat(zs).to(device), pos=torch.cat(pos).to(device),
                                     batch=graph_of, ptr=ptr, edge_index=None, graph_cutoff=None,
                                     noise_level=None, noise=None, score_edges=None, score_cutoff=None)
        return SampleStart(sample, cond, lat, gen)

    @torch.no_grad()
    def generate(self, batch: Task1Batch, seed: int,
                 skin: float | None = DEFAULT_SKIN) -> list[tuple[np.ndarray, np.ndarray]]:
        """One particle per graph of ``batch`` (its condition fields; targets unused).

        ``skin`` (Angstrom): the sampler's radius graphs come from neighbour lists kept
        across its steps (:class:`~c2np.models.graph.NeighbourList`; the same edges as a
        graph built afresh, so the same particles); None builds every graph afresh.
        """
        start = self.start_sampling(batch, seed)
        with reused_neighbours(self, skin):
            x = self.sample_positions(start)
        bounds = start.batch.ptr.tolist()
        return [(start.batch.z[a:b].cpu().numpy(), x[a:b].cpu().numpy().astype(np.float64))
                for a, b in zip(bounds[:-1], bounds[1:])]


class LangevinGenerator(Task1Generator):
    """Score-based Task 1 family base: geometric noise levels, denoising score matching on
    the coordinates (``score_loss``) and annealed Langevin sampling with ``score``."""

    def __init__(self, hidden: int = 64, latent: int = 4, sigma_max: float = 1.5,
                 sigma_min: float = 0.02, n_sigmas: int = 20, langevin_steps: int = 5,
                 step_size: float = 1e-4, **kw):
        super().__init__(hidden=hidden, latent=latent, **kw)
        self.langevin_steps, self.step_size = langevin_steps, step_size
        self.register_buffer("levels", sigmas(sigma_max, sigma_min, n_sigmas))
        self.node_cond = mlp(2 * hidden + latent, hidden, hidden)

    def score(self, batch: Task1Batch, pos: torch.Tensor, node_cond: torch.Tensor,
              sigma_node: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_loss(self, batch: Task1Batch, node_cond: torch.Tensor, sigma_node: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def conditions(self, batch: Task1Batch, lat: torch.Tensor, sigma_graph: torch.Tensor,
                   cond: torch.Tensor | None = None) -> torch.Tensor:
        """Per-node condition: cell + R (``cond``, computed when not given), latent, noise level."""
        cond = self.cell_condition(batch) if cond is None else cond
        level = sinusoidal(torch.log(sigma_graph) - torch.log(self.levels[-1]), self.hidden, 10.0)
        return self.node_cond(torch.cat([cond, lat, level], -1)).index_select(0, batch.batch)

    def host_plan(self) -> HostPlan:
        # the noise draws and the perturbed particle's graph (host_work's noise stream)
        return dataclasses.replace(super().host_plan(), levels=tuple(self.levels.tolist()),
                                   score_cutoff=self.score_net.cutoff)

    def coordinate_loss(self, batch, cond, lat):
        host = batch.noise is not None and len(batch.noise) == len(batch.pos)
        k = batch.noise_level if host else torch.randint(len(self.levels), (batch.n_graphs,),
                                                         device=batch.pos.device)
        sigma_graph = self.levels[k]
        node_cond = self.conditions(batch, lat, sigma_graph, cond)
        sigma_node = sigma_graph[batch.batch].view(-1, 1)
        noise = batch.noise if host else torch.randn_like(batch.pos)
        return {"coords": self.score_loss(batch, node_cond, sigma_node, noise)}

    def sample_positions(self, start: SampleStart) -> torch.Tensor:
        sample, graphs = start.batch, start.batch.n_graphs

        def score(x: torch.Tensor, sigma: float) -> torch.Tensor:
            s_graph = torch.full((graphs,), sigma, device=x.device)
            node_cond = self.conditions(sample, start.lat, s_graph, start.cond)
            return self.score(sample, x, node_cond, s_graph[sample.batch].view(-1, 1))

        return annealed_langevin(score, sample.pos, sample.radius, sample.batch, self.levels,
                                 self.langevin_steps, self.step_size, start.generator)
