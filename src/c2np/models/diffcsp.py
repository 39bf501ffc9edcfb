"""DiffCSP family (Jiao et al., NeurIPS 2023; jiaor17/DiffCSP), adapted to finite particles.

Task 1 is DiffCSP's crystal-structure-prediction mode with the lattice kept fixed (its
``keep_lattice`` path): the conditioning cell is given, only the coordinates are
diffused. DiffCSP diffuses fractional coordinates with wrapped-normal VE noise (sigma
0.005 -> 0.5 of a cell, geometric) and trains a CSPNet to predict the normalised score;
a particle has no periodicity, so here the VE noise acts on Cartesian coordinates
(sigma_min -> sigma_max in Angstrom, geometric, default 0.01 -> 2 A: half of a typical
4 A cell, DiffCSP's 0.5), the network is :class:`~c2np.models.cspnet.Task1CSPNet`, it
predicts -eps (the score times sigma, DiffCSP's normalised target for a Gaussian) and
sampling is DiffCSP's predictor-corrector: a Langevin corrector step then a VE
reverse-diffusion predictor step per noise level. The prior is the uniform ball plus
sigma_max noise, the VE marginal of a carved particle (whose atoms fill the ball
uniformly) at sigma_max. Size and species come from the shared head of
:class:`~c2np.models.task1_base.Task1Generator`.

Task 2: DiffCSP's lattice diffusion (DDPM, cosine betas, 1000 steps, eps prediction,
ancestral "reverse" sampling) on the six standardised lattice parameters, conditioned on
the rotation-invariant SchNet encoding of the particle; the prediction is the mean of
``samples`` seeded draws, and a space-group head reads the same encoding.
"""

from __future__ import annotations

import torch
from torch import nn

from c2np.models.batches import Task1Batch
from c2np.models.components import mlp, sinusoidal
from c2np.models.cspnet import Task1CSPNet
from c2np.models.generation import into_sphere, to_device
from c2np.models.schedules import ddpm_betas, ddpm_posterior, ve_sigma
from c2np.models.task1_base import SampleStart, Task1Generator
from c2np.models.task2_base import LatticeGenerator


class DiffCSPTask1(Task1Generator):
    """VE score diffusion of the coordinates with a CSPNet, predictor-corrector sampling."""

    def __init__(self, hidden: int = 128, layers: int = 4, edge_freq: int = 16, cutoff: float = 7.0,
                 max_neighbors: int = 20, gaussians: int = 16, sigma_min: float = 0.01,
                 sigma_max: float = 2.0, sample_steps: int = 200, corrector_step: float = 0.4,
                 **kw):
        kw.pop("latent", None)
        super().__init__(hidden=hidden, latent=0, **kw)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.sample_steps, self.corrector_step = sample_steps, corrector_step
        self.denoiser = Task1CSPNet(hidden, layers=layers, edge_freq=edge_freq, cutoff=cutoff,
                                    max_neighbors=max_neighbors, gaussians=gaussians)

    def predict_noise(self, batch: Task1Batch, pos: torch.Tensor, cond: torch.Tensor,
                      t: torch.Tensor) -> torch.Tensor:
        """The network's estimate of -eps (score x sigma) at noise time ``t`` (G,) in [0, 1]."""
        return self.denoiser(batch, pos, self.site_condition(batch, pos), cond, t)

    def coordinate_loss(self, batch, cond, lat):
        t = torch.rand(batch.n_graphs, device=batch.pos.device)
        sigma = ve_sigma(t, self.sigma_min, self.sigma_max)[batch.batch].view(-1, 1)
        noise = torch.randn_like(batch.pos)
        out = self.predict_noise(batch, batch.pos + sigma * noise, cond, t)
        return {"coords": torch.mean((out + noise) ** 2)}

    def sample_positions(self, start: SampleStart) -> torch.Tensor:
        sample, gen = start.batch, start.generator
        device = sample.pos.device

        def noise() -> torch.Tensor:
            return to_device(torch.randn(sample.pos.shape, generator=gen), device)

        times = torch.linspace(1.0, 0.0, self.sample_steps + 1)
        levels = ve_sigma(times, self.sigma_min, self.sigma_max)
        levels[-1] = 0.0
        x = sample.pos + self.sigma_max * noise()
        for i in range(self.sample_steps):
            sigma, nxt = float(levels[i]), float(levels[i + 1])
            t = torch.full((sample.n_graphs,), float(times[i]), device=device)
            # corrector: one Langevin step at this level (DiffCSP: step_lr (sigma / sigma_1)^2)
            step = self.corrector_step * sigma ** 2
            x = x + step * self.predict_noise(sample, x, start.cond, t) / sigma + (2 * step) ** 0.5 * noise()
            # predictor: the VE reverse-diffusion step sigma -> nxt
            score = self.predict_noise(sample, x, start.cond, t) / sigma
            x = x + (sigma ** 2 - nxt ** 2) * score
            if nxt > 0:
                x = x + (nxt ** 2 * (sigma ** 2 - nxt ** 2) / sigma ** 2) ** 0.5 * noise()
        return into_sphere(x, sample.radius[sample.batch].view(-1, 1))


class DiffCSPTask2(LatticeGenerator):
    """DDPM over the standardised lattice conditioned on the particle, ancestral sampling."""

    def __init__(self, hidden: int = 64, timesteps: int = 1000, beta_schedule: str = "cosine",
                 beta_start: float = 1e-4, beta_end: float = 0.02, denoiser_layers: int = 3, **kw):
        super().__init__(hidden=hidden, **kw)
        betas = ddpm_betas(timesteps, beta_start, beta_end, beta_schedule)
        alphas, alphas_bar, std = ddpm_posterior(betas)
        self.timesteps = timesteps
        self.register_buffer("betas", betas)
        self.register_buffer("alphas", alphas)
        self.register_buffer("alphas_bar", alphas_bar)
        self.register_buffer("posterior_std", std)
        self.denoiser = mlp(6 + 2 * hidden, hidden, 6, layers=denoiser_layers)

    def predict_noise(self, x: torch.Tensor, k: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """eps estimate for lattices ``x`` (G, 6) at steps ``k`` (G,) given encodings ``h``."""
        time = sinusoidal(k.float() / self.timesteps, self.hidden)
        return self.denoiser(torch.cat([x, time, h], -1))

    def lattice_loss(self, x0, h):
        k = torch.randint(self.timesteps, (len(x0),), device=x0.device)
        ab = self.alphas_bar[k].view(-1, 1)
        noise = torch.randn_like(x0)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        return nn.functional.mse_loss(self.predict_noise(xt, k, h), noise)

    def sample_lattice(self, h, generator):
        x = torch.randn(len(h), 6, generator=generator).to(h.device)
        for k in range(self.timesteps - 1, -1, -1):
            eps = self.predict_noise(x, torch.full((len(h),), k, device=h.device), h)
            eps = self.denoised_noise(x, eps, self.alphas_bar[k].sqrt(), (1 - self.alphas_bar[k]).sqrt())
            coef = self.betas[k] / (1 - self.alphas_bar[k]).sqrt()
            x = (x - coef * eps) / self.alphas[k].sqrt()
            if k > 0:
                x = x + self.posterior_std[k] * torch.randn(x.shape, generator=generator).to(h.device)
        return x
