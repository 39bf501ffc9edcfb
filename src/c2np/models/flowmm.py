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
the sphere are put on it, as in every Task 1 sampler here.

The drift (objective version 3 of FlowMM Task 1, ``drift = "uniform_ball"``): on the torus
the uniform base and the data's uniform-ish coordinates leave the marginal velocity no
global part. In a ball they do: x_t mixes two independent points of the ball, so the
cloud contracts towards the centre and expands again (its radius of gyration 16.2 -> 11.6
-> 16.3 A at R = 21), and the velocity of an interior atom points along x / |x|. The
network sees |x| / R but no direction to the centre, so it cannot give that part; trained
without it (version 2), it answered with local output that pulled neighbours together and
collapsed particles from R = 17 on (docs/models.md, "FlowMM"). So the velocity is
parametrised as :func:`uniform_ball_drift`, the exact E[(x_base - x_data) / R | x_t] when
the data are uniform in the ball as well, plus the network's residual: the same
flow-matching loss, the network regressing what a lattice adds to a uniform particle.

Size and species come from the shared head of
:class:`~c2np.models.task1_base.Task1Generator`.

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
#: What the Task 1 velocity adds to the network's output: nothing (objective versions 1-2)
#: or the exact drift of uniform-ball data (version 3; :func:`uniform_ball_drift`).
DRIFTS = ("none", "uniform_ball")


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


def uniform_ball_drift(x: torch.Tensor, kappa: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """E[(x_base - x_data) / R | x_t = x] for x_data and x_base independent and uniform in the
    ball of radius R, x_t = (1 - kappa) x_data + kappa x_base; ``x`` (n, 3), ``kappa`` and
    ``radius`` (n,) or (n, 1). Exact, in closed form.

    Given x_t, x_data is uniform on the lens of the ball |d| <= R and the ball
    |d - x / (1 - kappa)| <= kappa R / (1 - kappa) (where x_base is in the ball too), and
    E[x_base - x_data | x_t] = (x - E[x_data | x_t]) / kappa. The lens is symmetric about the
    line through x, so its centroid lies on it: slices across the line are discs, of the
    second ball up to the plane where the two spheres cross and of the first beyond it, and
    their moments are polynomials. A point no lens holds (outside both balls, as a sampled
    atom may be) takes the nearest point of the first ball.
    """
    dtype = x.dtype
    x = x.double()
    k = kappa.reshape(-1).double().clamp(1e-6, 1 - 1e-6)
    big = radius.reshape(-1).double()
    rx = x.norm(dim=-1)
    c = rx / (1 - k)                       # centre of the second ball, along x / |x|
    r = k * big / (1 - k)                  # its radius
    lo = torch.maximum(-big, c - r)
    hi = torch.minimum(big, c + r)
    # where the two spheres cross; for c -> 0 the second ball holds the first or lies in it
    cross = (big ** 2 - r ** 2 + c ** 2) / (2 * c).clamp_min(1e-12)
    z1 = cross.clamp(lo, hi)

    def second(a, b):  # moments 0 and 1 of the discs of the second ball over z in [a, b]
        a, b = a - c, b - c
        m0 = r ** 2 * (b - a) - (b ** 3 - a ** 3) / 3
        return m0, (r ** 2 * (b ** 2 - a ** 2) / 2 - (b ** 4 - a ** 4) / 4) + c * m0

    def first(a, b):  # the same for the first ball
        return (big ** 2 * (b - a) - (b ** 3 - a ** 3) / 3,
                big ** 2 * (b ** 2 - a ** 2) / 2 - (b ** 4 - a ** 4) / 4)

    s0, s1 = second(lo, z1)
    f0, f1 = first(z1, hi)
    m0, m1 = s0 + f0, s1 + f1
    ok = (hi > lo) & (m0 > 0)
    centroid = torch.where(ok, m1 / m0.clamp_min(1e-300), c.clamp(max=big))
    unit = x / rx.clamp_min(1e-12).unsqueeze(-1)
    drift = (x - unit * centroid.unsqueeze(-1)) / (k * big).unsqueeze(-1)
    return drift.to(dtype)


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
                 ema_decay: float = 0.999, drift: str = "none", **kw):
        kw.pop("latent", None)
        super().__init__(hidden=hidden, latent=0, **kw)
        if drift not in DRIFTS:
            raise ValueError(f"unknown drift {drift!r}; use {' or '.join(DRIFTS)}")
        self.drift = drift
        self.interpolant = _interpolant(interpolant)
        self.sample_steps = sample_steps
        self.anneal_slope, self.anneal_offset = anneal_slope, anneal_offset
        self.velocity = Task1CSPNet(hidden, layers=layers, edge_freq=edge_freq, cutoff=cutoff,
                                    max_neighbors=max_neighbors, gaussians=gaussians, lattice_dots=True)
        self.init_average(ema_decay)

    def displacement(self, batch: Task1Batch, pos: torch.Tensor, cond: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """The estimate of (x_base - x_data) / R at time ``t`` (G,), divided by R so that the
        target is of order one for every particle size: the network's output, plus the
        uniform-ball drift when ``drift = "uniform_ball"`` (the module docstring says why)."""
        out = self.velocity(batch, pos, self.site_condition(batch, pos), cond, t)
        if self.drift == "uniform_ball":
            kappa, _ = self.interpolant(t)
            out = out + uniform_ball_drift(pos, kappa[batch.batch], batch.radius[batch.batch])
        return out

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

    def sample_positions(self, start: SampleStart, on_step=None) -> torch.Tensor:
        """Euler steps of the ODE from the base; ``on_step(i, t, x)``, if given, sees the
        state before every step (``benchmarks/flowmm_trajectory.py`` measures it)."""
        sample = start.batch
        device = sample.pos.device
        times = torch.linspace(1.0, 0.0, self.sample_steps + 1)
        x = sample.pos
        radius = sample.radius[sample.batch].view(-1, 1)
        for i in range(self.sample_steps):
            if on_step is not None:
                on_step(i, times[i], x)
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
