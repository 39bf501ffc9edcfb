"""FlowMM family (Miller et al., ICML 2024; facebookresearch/flowmm), adapted to finite particles.

FlowMM is Riemannian flow matching: fractional coordinates live on the flat torus, the
base is uniform on it, the conditional path is the geodesic from an independently drawn
base point to the data, a CSPNet predicts the velocity, sampling integrates the ODE with
Euler steps, and the weights are averaged (EMA, 0.999).

Task 1 (the conditioning cell is fixed, FlowMM's crystal-structure-prediction mode):
without periodicity the torus becomes R^3 and the geodesic a straight line, so this is
conditional flow matching in Cartesian coordinates. The base is uniform in the ball of
radius R (the support of a carved particle, as the torus is FlowMM's), base points are
paired with atoms independently (as in FlowMM), the path is
x_t = (1 - kappa_t) x_data + kappa_t x_base with kappa from the cosine schedule of the
paper's Table 3 (``interpolant = "linear"`` is FlowMM's own geodesic), and the network,
:class:`~c2np.models.cspnet.Task1CSPNet` with FlowMM's edge-to-lattice features,
predicts (x_base - x_data) / R; the velocity is kappa'_t R times that. FlowMM removes the mean
of the coordinate velocity because a torus has no origin; a particle has one (the
carving centre, where its sphere sits), so nothing is removed; atoms that end outside
the sphere are put on it, as in every Task 1 sampler here. Size and species come
from the shared head of :class:`~c2np.models.task1_base.Task1Generator`.

Task 2: flow matching on the six standardised lattice parameters from a Gaussian base
fitted to the training lattices (the standardisation, FlowMM's "normal base"),
conditioned on the rotation-invariant SchNet encoding of the particle, integrated as a
deterministic ODE; the prediction is the mean of ``samples`` seeded draws, and a
space-group head reads the same encoding.

Time runs as in :mod:`c2np.models.schedules` (t = 0 data, t = 1 base); FlowMM's time is
1 - t.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from c2np.models.batches import Task1Batch, Task2Batch
from c2np.models.components import mlp, sinusoidal
from c2np.models.cspnet import Task1CSPNet
from c2np.models.generation import into_sphere
from c2np.models.schedules import cosine_interpolant, linear_interpolant
from c2np.models.task1_base import SampleStart, Task1Generator
from c2np.models.task2_base import LatticeGenerator

INTERPOLANTS = {"cosine": cosine_interpolant, "linear": linear_interpolant}


def _interpolant(name: str):
    if name not in INTERPOLANTS:
        raise ValueError(f"unknown interpolant {name!r}; use {' or '.join(INTERPOLANTS)}")
    return INTERPOLANTS[name]


class WeightAverage:
    """Exponential moving average of a module's parameters (FlowMM's EMA), kept in
    buffers so that checkpoints carry it.

    The average is updated in ``loss`` while training (the parameters then hold the
    previous optimiser step's values, so the average lags one step, which is harmless and
    needs no hook in the training loop); sampling runs under :meth:`averaged_weights`.
    """

    def init_average(self: nn.Module, decay: float) -> None:
        self.ema_decay = decay
        self._averaged = [name for name, _ in self.named_parameters()]
        for i, (_, p) in enumerate(self.named_parameters()):
            self.register_buffer(f"ema_{i}", p.detach().clone())
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def _pairs(self: nn.Module):
        params = dict(self.named_parameters())
        return [(params[name], getattr(self, f"ema_{i}")) for i, name in enumerate(self._averaged)]

    def update_average(self: nn.Module) -> None:
        """One EMA step, only in a training forward pass (not in validation or sampling)."""
        if self.ema_decay <= 0 or not (self.training and torch.is_grad_enabled()):
            return
        n = int(self.ema_updates)
        decay = min(self.ema_decay, (1 + n) / (10 + n))  # short warm-up, as is usual for EMA
        with torch.no_grad():
            for p, avg in self._pairs():
                avg.lerp_(p.detach(), 1 - decay)
            self.ema_updates += 1

    @contextmanager
    def averaged_weights(self: nn.Module):
        if self.ema_decay <= 0:
            yield
            return
        pairs = self._pairs()
        saved = [p.detach().clone() for p, _ in pairs]
        with torch.no_grad():
            for p, avg in pairs:
                p.copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for (p, _), old in zip(pairs, saved):
                    p.copy_(old)


def _uniform_ball(radius: torch.Tensor) -> torch.Tensor:
    """One point uniform in the ball of ``radius`` (n,) per entry, on its device (training
    draws; sampling starts from the seeded points of ``Task1Generator.start_sampling``)."""
    v = torch.randn(len(radius), 3, device=radius.device)
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return v * (radius * torch.rand(len(radius), device=radius.device) ** (1 / 3)).view(-1, 1)


class FlowMMTask1(WeightAverage, Task1Generator):
    """Conditional flow matching of the coordinates from the uniform ball, Euler ODE."""

    def __init__(self, hidden: int = 128, layers: int = 4, edge_freq: int = 16, cutoff: float = 7.0,
                 max_neighbors: int = 20, gaussians: int = 16, interpolant: str = "cosine",
                 sample_steps: int = 200, anneal_slope: float = 0.0, anneal_offset: float = 0.0,
                 ema_decay: float = 0.999, **kw):
        kw.pop("latent", None)
        super().__init__(hidden=hidden, latent=0, **kw)
        self.interpolant = _interpolant(interpolant)
        self.sample_steps = sample_steps
        self.anneal_slope, self.anneal_offset = anneal_slope, anneal_offset
        self.velocity = Task1CSPNet(hidden, layers=layers, edge_freq=edge_freq, cutoff=cutoff,
                                    max_neighbors=max_neighbors, gaussians=gaussians, lattice_dots=True)
        self.init_average(ema_decay)

    def displacement(self, batch: Task1Batch, pos: torch.Tensor, cond: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """The network's estimate of (x_base - x_data) / R at time ``t`` (G,): divided by R
        so that the target is of order one for every particle size."""
        return self.velocity(batch, pos, self.site_condition(batch, pos), cond, t)

    def coordinate_loss(self, batch, cond, lat):
        self.update_average()
        t = torch.rand(batch.n_graphs, device=batch.pos.device)
        kappa, _ = self.interpolant(t)
        base = _uniform_ball(batch.radius[batch.batch])
        k = kappa[batch.batch].view(-1, 1)
        xt = (1 - k) * batch.pos + k * base
        out = self.displacement(batch, xt, cond, t)
        target = (base - batch.pos) / batch.radius[batch.batch].view(-1, 1)
        return {"coords": torch.mean((out - target) ** 2)}

    def sample_positions(self, start: SampleStart) -> torch.Tensor:
        sample = start.batch
        device = sample.pos.device
        times = torch.linspace(1.0, 0.0, self.sample_steps + 1)
        x = sample.pos
        radius = sample.radius[sample.batch].view(-1, 1)
        for i in range(self.sample_steps):
            t = torch.full((sample.n_graphs,), float(times[i]), device=device)
            _, speed = self.interpolant(times[i])
            # FlowMM's inference annealing: velocity x (1 + slope relu(t_flowmm - offset))
            anneal = 1.0 + self.anneal_slope * max(0.0, 1.0 - float(times[i]) - self.anneal_offset)
            dt = float(times[i + 1] - times[i])
            x = x + dt * anneal * float(speed) * radius * self.displacement(sample, x, start.cond, t)
        return into_sphere(x, radius)

    @torch.no_grad()
    def generate(self, batch: Task1Batch, seed: int, **kw):
        with self.averaged_weights():
            return super().generate(batch, seed, **kw)


class FlowMMTask2(WeightAverage, LatticeGenerator):
    """Flow matching of the standardised lattice from a fitted Gaussian, Euler ODE."""

    def __init__(self, hidden: int = 64, interpolant: str = "linear", sample_steps: int = 100,
                 velocity_layers: int = 3, ema_decay: float = 0.999, **kw):
        super().__init__(hidden=hidden, **kw)
        self.interpolant = _interpolant(interpolant)
        self.sample_steps = sample_steps
        self.velocity = mlp(6 + 2 * hidden, hidden, 6, layers=velocity_layers)
        self.init_average(ema_decay)

    def displacement(self, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Estimate of x_base - x_data for lattices ``x`` (G, 6) at times ``t`` (G,)."""
        return self.velocity(torch.cat([x, sinusoidal(t, self.hidden), h], -1))

    def lattice_loss(self, x0, h):
        self.update_average()
        t = torch.rand(len(x0), device=x0.device)
        kappa, _ = self.interpolant(t)
        base = torch.randn_like(x0)
        xt = (1 - kappa.view(-1, 1)) * x0 + kappa.view(-1, 1) * base
        return nn.functional.mse_loss(self.displacement(xt, t, h), base - x0)

    def sample_lattice(self, h, generator):
        x = torch.randn(len(h), 6, generator=generator).to(h.device)
        times = torch.linspace(1.0, 0.0, self.sample_steps + 1)
        for i in range(self.sample_steps):
            _, speed = self.interpolant(times[i])
            t = torch.full((len(h),), float(times[i]), device=h.device)
            x = x + float(times[i + 1] - times[i]) * float(speed) * self.displacement(x, t, h)
        return x

    @torch.no_grad()
    def predict(self, batch: Task2Batch, seed: int = 0):
        with self.averaged_weights():
            return super().predict(batch, seed)
