"""MatterGen family (Zeni et al., Nature 2025; microsoft/mattergen), adapted to finite
particles.

Task 1: a joint diffusion over the positions and the species of every atom.
- Positions: a VE-SDE on Cartesian coordinates, sigma(t) = sigma_min (sigma_max / sigma_min)^t
  with sigma_max proportional to R (MatterGen scales its coordinate noise with the system
  size, via the number of atoms; a particle's size is R). Sampling starts from the
  forward process's own marginal at t = 1 for a particle of uniform density: uniform in
  the sphere plus N(0, sigma_max^2).
- Species: D3PM with an absorbing (mask) state, as MatterGen's ``atom_type_diffusion:
  mask``: at time t each atom is masked with probability t; the network predicts the
  species of masked atoms over the conditioning cell's species.
- Denoiser: an equivariant message-passing network (PaiNN: scalar and vector features)
  on a radius graph with a capped neighbour count, in place of GemNet-T, whose triplets
  at 18k atoms and 50 neighbours would number about 45 M. It outputs an equivariant
  noise prediction per atom and species logits.
- Condition: cell + R enters every block through a zero-initialised adapter (MatterGen's
  fine-tuning adapters), plus per-atom site features; it is dropped with probability
  ``p_uncond`` in training, which gives classifier-free guidance at sampling.
- Sampling: predictor-corrector, an ancestral VE predictor plus a Langevin corrector with
  a signal-to-noise step, and D3PM unmasking at the same steps.

Task 2: a VP-SDE on the six standardised lattice parameters (linear beta(t), as
MatterGen's lattice SDE) with an MLP denoiser on (x_t, t, particle encoding) whose output
layer is zero-initialised (the paper's Table 4), predictor-corrector sampling, the mean
of seeded draws as the prediction, and a space-group head.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn
from torch_geometric.nn.models.schnet import GaussianSmearing

from c2np.models.batches import Task1Batch
from c2np.models.components import MAX_Z, mlp, sinusoidal
from c2np.models.generation import to_device
from c2np.models.graph import NeighbourList, nearest_edges, radius_graph
from c2np.models.schedules import beta_polynomial, ve_sigma, vp_marginal
from c2np.models.task1_base import SampleStart, Task1Generator
from c2np.models.task2_base import LatticeGenerator

#: atomic number 0 is D3PM's absorbing "mask" species (no element has it)
MASK = 0


def capped_edges(pos: torch.Tensor, ptr: torch.Tensor, cutoff: float, k: int,
                 neighbours: NeighbourList | None = None) -> torch.Tensor:
    """Radius-graph edges keeping at most the ``k`` nearest sources of every target atom
    (MatterGen's ``max_neighbors``): memory and work stay linear in the atoms whatever
    the density of the (noisy) particle. ``neighbours``: the sampler's reused list."""
    edges = radius_graph(pos, ptr, cutoff, neighbours)
    if edges.shape[1] == 0:
        return edges
    length = (pos[edges[0]] - pos[edges[1]]).norm(dim=-1)
    # a crystal has many neighbours at equal distances: rounded to 1e-4 A they tie exactly,
    # and ties go by atom index, so a rotated particle keeps the same neighbours
    return edges[:, nearest_edges(edges, torch.round(length * 1e4), len(pos), k)]


def capped_langevin_step(x: torch.Tensor, score: torch.Tensor, noise: torch.Tensor, norm, batch: torch.Tensor,
                         snr: float, cap: torch.Tensor) -> torch.Tensor:
    """One Langevin corrector step x + e score + sqrt(2 e) noise with MatterGen's step size:
    e = 2 (snr |noise| / |score|)^2 per graph (``norm``: per-graph norms), at most ``cap``
    (G,), and ``cap`` where the score is zero."""
    score_norm = norm(score)
    step = torch.minimum(2 * (snr * norm(noise) / score_norm.clamp_min(1e-12)) ** 2, cap)
    step = torch.where(score_norm > 0, step, cap)[batch].unsqueeze(-1)
    return x + step * score + torch.sqrt(2 * step) * noise


class PaiNNBlock(nn.Module):
    """One PaiNN interaction + update (Schuett et al. 2021): invariant scalars, equivariant
    vectors, messages weighted by radial features of each edge."""

    def __init__(self, hidden: int, n_rbf: int, norm: float):
        super().__init__()
        self.hidden, self.norm = hidden, norm
        self.phi = mlp(hidden, hidden, 3 * hidden)
        self.radial = nn.Linear(n_rbf, 3 * hidden)
        self.u = nn.Linear(hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, hidden, bias=False)
        self.update = mlp(2 * hidden, hidden, 3 * hidden)
        self.layer_norm = nn.LayerNorm(hidden)

    def forward(self, s, vec, edges, unit, rbf, envelope):
        src, tgt = edges
        h = self.hidden
        x = self.phi(s)[src] * self.radial(rbf) * envelope.unsqueeze(-1) / self.norm
        ds, dvv, dvs = x.split(h, -1)
        # index_add_ wants equal dtypes; under autocast the messages may be half precision
        s = s + torch.zeros_like(s).index_add_(0, tgt, ds.to(s.dtype))
        dv = vec[src] * dvv.unsqueeze(1) + unit.unsqueeze(-1) * dvs.unsqueeze(1)
        vec = vec + torch.zeros_like(vec).index_add_(0, tgt, dv.to(vec.dtype))
        uv, vv = self.u(vec), self.v(vec)
        a = self.update(torch.cat([s, torch.sqrt((vv ** 2).sum(1) + 1e-8)], -1))
        avv, asv, ass = a.split(h, -1)
        vec = vec + avv.unsqueeze(1) * uv
        s = self.layer_norm(s + asv * (uv * vv).sum(1) + ass)
        return s, vec


class MatterGenTask1(Task1Generator):
    """Joint VE-SDE (positions) + masked D3PM (species) with an equivariant denoiser."""

    def __init__(self, hidden: int = 128, blocks: int = 4, cutoff: float = 7.0,
                 max_neighbors: int = 32, gaussians: int = 32, sigma_min: float = 0.01,
                 sigma_max_per_r: float = 1.0, eps_t: float = 1e-3, p_uncond: float = 0.2,
                 type_weight: float = 1.0, steps: int = 100, corrector_steps: int = 1,
                 snr: float = 0.4, guidance: float = 2.0, corrector_max_step: float = 0.04,
                 centre_vector: bool = False, **kw):
        super().__init__(hidden=hidden, latent=0, **kw)
        self.cutoff, self.max_neighbors = cutoff, max_neighbors
        self.neighbours: NeighbourList | None = None  # set while sampling (graph.reused_neighbours)
        self.sigma_min, self.sigma_max_per_r, self.eps_t = sigma_min, sigma_max_per_r, eps_t
        self.p_uncond, self.type_weight = p_uncond, type_weight
        self.steps, self.corrector_steps, self.snr, self.guidance = steps, corrector_steps, snr, guidance
        # MatterGen's Langevin corrector never multiplies the score by more than its
        # max_step_size (1, with sigma_max = 5 in its units): without the cap an atom with no
        # neighbour in reach gets a zero noise prediction, the step grows as 1/|score|^2 and
        # the particle flies apart. Here the cap is the same fraction of sigma_max^2.
        self.corrector_max_step = corrector_max_step
        self.atom_embedding = nn.Embedding(MAX_Z + 1, hidden)  # row MASK = the absorbing state
        self.time_embedding = mlp(hidden, hidden, hidden)
        self.null_condition = nn.Parameter(torch.zeros(hidden))
        self.adapters = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(blocks))
        for adapter in self.adapters:  # MatterGen's adapters start as the identity
            nn.init.zeros_(adapter.weight)
            nn.init.zeros_(adapter.bias)
        self.rbf = GaussianSmearing(0.0, cutoff, gaussians)
        self.blocks = nn.ModuleList(PaiNNBlock(hidden, gaussians, math.sqrt(max_neighbors))
                                    for _ in range(blocks))
        self.noise_out = nn.Linear(hidden, 1, bias=False)
        self.type_out = mlp(hidden, hidden, MAX_Z + 1)
        # A crystal's atoms always have neighbours; a noisy particle's outliers have none within
        # the cutoff, so their vector features, and with them their noise prediction, are zero
        # and nothing ever pulls them back (measured: 38-46 % of a converged model's atoms ended
        # on the sphere). The particle's centre is the task's one fixed point: every atom starts
        # with its position over R as a vector feature, gated per channel by its scalars.
        # Off (None) in checkpoints trained before; the configs turn it on.
        self.centre_gate = nn.Linear(hidden, hidden) if centre_vector else None

    def sigma(self, t: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """Per-graph VE noise scale at time t, sigma_max = ``sigma_max_per_r`` * R."""
        return ve_sigma(t, self.sigma_min, self.sigma_max_per_r * radius)

    def denoise(self, batch: Task1Batch, pos: torch.Tensor, z: torch.Tensor, t: torch.Tensor,
                cond: torch.Tensor, keep: torch.Tensor,
                edges: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise prediction (n, 3) and species logits (n, S) over the cell's species slots.

        ``cond`` (G, hidden) is the cell + R condition, ``keep`` (G,) says per graph whether
        it is used (False: the unconditional model of classifier-free guidance). ``edges``:
        the capped radius graph of ``pos`` when the caller has it.
        """
        if edges is None:
            edges = capped_edges(pos, batch.ptr, self.cutoff, self.max_neighbors, self.neighbours)
        return self.network(batch, pos, z, t, cond, keep, edges)

    def network(self, batch: Task1Batch, pos: torch.Tensor, z: torch.Tensor, t: torch.Tensor,
                cond: torch.Tensor, keep: torch.Tensor, edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`denoise` on a given graph: no data-dependent shapes, so that ``c2np predict
        --compile`` compiles it once for every batch."""
        keep_f = keep.to(pos.dtype)
        graph_cond = torch.where(keep.view(-1, 1), cond, self.null_condition.expand_as(cond))
        site = self.site_condition(batch, pos) * keep_f[batch.batch].unsqueeze(-1)
        s = self.atom_embedding(z) + site + self.time_embedding(sinusoidal(t, self.hidden, 1.0))[batch.batch]
        if self.centre_gate is None:
            vec = s.new_zeros(len(s), 3, self.hidden)
        else:
            # over R, not sigma(t): bounded (a few units) at every t; the gate sees t in s
            scaled = pos / batch.radius[batch.batch].unsqueeze(-1)
            vec = scaled.unsqueeze(-1) * self.centre_gate(s).unsqueeze(1)
        diff = pos[edges[1]] - pos[edges[0]]
        length = diff.norm(dim=-1)
        unit = diff / length.clamp_min(1e-6).unsqueeze(-1)
        envelope = 0.5 * (torch.cos(math.pi * length / self.cutoff) + 1.0)
        rbf = self.rbf(length)
        for adapter, block in zip(self.adapters, self.blocks):
            s = s + adapter(graph_cond)[batch.batch]
            s, vec = block(s, vec, edges, unit, rbf, envelope)
        eps = self.noise_out(vec).squeeze(-1)
        slots = batch.species[batch.batch]  # (n, S) atomic numbers of the graph's species
        logits = self.type_out(s).gather(1, slots).masked_fill(slots == 0, -1e9)
        return eps, logits

    def coordinate_loss(self, batch, cond, lat):
        graphs, device = batch.n_graphs, batch.pos.device
        t = self.eps_t + (1 - self.eps_t) * torch.rand(graphs, device=device)
        sigma = self.sigma(t, batch.radius)[batch.batch].unsqueeze(-1)
        noise = torch.randn_like(batch.pos)
        masked = torch.rand(len(batch.z), device=device) < t[batch.batch]
        keep = torch.rand(graphs, device=device) >= self.p_uncond
        eps, logits = self.denoise(batch, batch.pos + sigma * noise, batch.z.masked_fill(masked, MASK),
                                   t, cond, keep)
        positions = torch.mean(torch.sum((eps - noise) ** 2, -1))
        # D3PM (absorbing state): cross-entropy of the species of the masked atoms
        slot = (batch.species[batch.batch] == batch.z.unsqueeze(-1)).float().argmax(-1)
        ce = nn.functional.cross_entropy(logits, slot, reduction="none")
        types = (ce * masked).sum() / masked.sum().clamp_min(1)
        # the base adds "coords" to the total: MatterGen's loss is a sum over both fields
        return {"coords": positions + self.type_weight * types, "positions": positions, "types": types}

    def guided(self, batch, pos, z, t, cond):
        """Classifier-free guidance: uncond + w (cond - uncond) on the noise prediction and
        on the species log-probabilities; w = 1 is the conditional model alone."""
        graphs = batch.n_graphs
        yes = torch.ones(graphs, dtype=torch.bool, device=pos.device)
        # one graph for both calls: they see the same positions
        edges = capped_edges(pos, batch.ptr, self.cutoff, self.max_neighbors, self.neighbours)
        eps_c, logits_c = self.denoise(batch, pos, z, t, cond, yes, edges)
        if self.guidance == 1.0:
            return eps_c, logits_c
        eps_u, logits_u = self.denoise(batch, pos, z, t, cond, ~yes, edges)
        w = self.guidance
        lp_c, lp_u = torch.log_softmax(logits_c, -1), torch.log_softmax(logits_u, -1)
        return eps_u + w * (eps_c - eps_u), (lp_u + w * (lp_c - lp_u)).masked_fill(logits_c < -1e8, -1e9)

    def sample_positions(self, start: SampleStart) -> torch.Tensor:
        """Predictor-corrector sampling; replaces ``start.batch.z`` with the D3PM species."""
        sample, gen, cond = start.batch, start.generator, start.cond
        device, n = sample.pos.device, len(sample.z)

        def normal() -> torch.Tensor:
            return to_device(torch.randn(n, 3, generator=gen), device)

        def uniform() -> torch.Tensor:
            return to_device(torch.rand(n, generator=gen), device)

        # once, not per step: bincount sizes its output from the data (a host wait)
        atoms = torch.bincount(sample.batch, minlength=sample.n_graphs).clamp_min(1)

        def per_graph_norm(x: torch.Tensor) -> torch.Tensor:
            sq = torch.zeros(sample.n_graphs, device=device).index_add_(0, sample.batch, (x ** 2).sum(-1))
            return torch.sqrt(sq / atoms)

        times = torch.linspace(1.0, self.eps_t, self.steps + 1).tolist()
        sigma_max_g = self.sigma(torch.ones_like(sample.radius), sample.radius)
        sigma_max = sigma_max_g[sample.batch].unsqueeze(-1)
        x = sample.pos + sigma_max * normal()  # the forward marginal at t = 1 of a uniform particle
        z = torch.full_like(sample.z, MASK)
        for i, (t_now, t_next) in enumerate(pairwise(times)):
            last = i == self.steps - 1
            t = torch.full((sample.n_graphs,), t_now, device=device)
            sig = self.sigma(t, sample.radius)[sample.batch].unsqueeze(-1)
            sig_next = self.sigma(torch.full_like(t, t_next), sample.radius)[sample.batch].unsqueeze(-1)
            eps, logits = self.guided(sample, x, z, t, cond)
            # ancestral VE predictor (Song et al. 2021, reverse diffusion of SMLD)
            var = sig ** 2 - sig_next ** 2
            x = x - var / sig * eps
            if not last:
                x = x + torch.sqrt(sig_next ** 2 * var / sig ** 2) * normal()
            # D3PM absorbing state: a masked atom is revealed with probability (t - t') / t
            reveal = (z == MASK) & ((uniform() < (t_now - t_next) / t_now) | last)
            gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=gen).clamp(1e-10, 1 - 1e-10)))
            draw = sample.species[sample.batch].gather(1, (logits + to_device(gumbel, device)).argmax(-1, keepdim=True))
            z = torch.where(reveal, draw.squeeze(-1), z)
            if last:
                break
            t = torch.full_like(t, t_next)
            for _ in range(self.corrector_steps):  # Langevin corrector at the new noise level
                eps, _ = self.guided(sample, x, z, t, cond)
                x = capped_langevin_step(x, -eps / sig_next, normal(), per_graph_norm, sample.batch,
                                         self.snr, self.corrector_max_step * sigma_max_g ** 2)
        sample.z = z
        # carving defines the support: atoms outside the sphere go back onto it
        rmax = sample.radius[sample.batch].view(-1, 1)
        norm = x.norm(dim=1, keepdim=True)
        return torch.where(norm > rmax, x * rmax / norm.clamp_min(1e-12), x)


class MatterGenTask2(LatticeGenerator):
    """VP-SDE on the standardised lattice, zero-initialised denoiser head, PC sampling."""

    def __init__(self, hidden: int = 64, beta_min: float = 0.1, beta_max: float = 20.0,
                 eps_t: float = 1e-3, steps: int = 100, corrector_steps: int = 1, snr: float = 0.2,
                 **kw):
        super().__init__(hidden=hidden, **kw)
        self.beta_min, self.beta_max, self.eps_t = beta_min, beta_max, eps_t
        self.steps, self.corrector_steps, self.snr = steps, corrector_steps, snr
        self.denoiser = mlp(6 + 2 * hidden, hidden, hidden, layers=3)
        self.head = nn.Linear(hidden, 6)
        nn.init.zeros_(self.head.weight)  # the paper's Table 4: a zero-initialised head
        nn.init.zeros_(self.head.bias)

    def noise(self, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Predicted noise (G, 6) of x_t."""
        temb = sinusoidal(t, self.hidden, 1.0)
        return self.head(nn.functional.silu(self.denoiser(torch.cat([x, temb, h], -1))))

    def lattice_loss(self, x0, h):
        t = self.eps_t + (1 - self.eps_t) * torch.rand(len(x0), device=x0.device)
        a, s = vp_marginal(t, self.beta_min, self.beta_max)
        noise = torch.randn_like(x0)
        return torch.mean((self.noise(a.view(-1, 1) * x0 + s.view(-1, 1) * noise, t, h) - noise) ** 2)

    def sample_lattice(self, h, generator):
        device = h.device

        def normal() -> torch.Tensor:
            return torch.randn(len(h), 6, generator=generator).to(device)

        times = torch.linspace(1.0, self.eps_t, self.steps + 1).tolist()
        x = normal()
        for i, (t_now, t_next) in enumerate(pairwise(times)):
            t = torch.full((len(h),), t_now, device=device)
            dt = t_now - t_next
            beta = beta_polynomial(t, self.beta_min, self.beta_max).view(-1, 1)
            a, std = (v.view(-1, 1) for v in vp_marginal(t, self.beta_min, self.beta_max))
            score = -self.denoised_noise(x, self.noise(x, t, h), a, std) / std
            # Euler-Maruyama step of the reverse VP-SDE (predictor)
            x = x + (0.5 * beta * x + beta * score) * dt
            if i == self.steps - 1:
                break
            x = x + torch.sqrt(beta * dt) * normal()
            t = torch.full_like(t, t_next)
            a, std = (v.view(-1, 1) for v in vp_marginal(t, self.beta_min, self.beta_max))
            for _ in range(self.corrector_steps):  # Langevin corrector
                score = -self.denoised_noise(x, self.noise(x, t, h), a, std) / std
                z = normal()
                step = 2 * (self.snr * z.norm(dim=-1, keepdim=True)
                            / score.norm(dim=-1, keepdim=True).clamp_min(1e-12)) ** 2
                x = x + step * score + torch.sqrt(2 * step) * z
        return x
