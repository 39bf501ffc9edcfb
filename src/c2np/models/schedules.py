"""Every noise/interpolation schedule of the learned baselines, in one place.

Time runs over t in [0, 1] (0 = data, 1 = noise or base distribution) unless a
function says otherwise. Constants are named after the papers' notation and come
from each family's TOML config; SPEC.md's Tables 3-4 name the families' choices
(DiffCSP and FlowMM beta in [0.01, 2], ADiT and Task 2 cubic beta(t), MatterGen's
linear beta(t), FlowMM's cosine schedule).
"""

from __future__ import annotations

import math

import torch


def beta_polynomial(t: torch.Tensor, beta_min: float, beta_max: float, power: float = 1.0) -> torch.Tensor:
    """beta(t) = beta_min + (beta_max - beta_min) t^power (power 1: linear; 3: cubic)."""
    return beta_min + (beta_max - beta_min) * t ** power


def vp_log_alpha_bar(t: torch.Tensor, beta_min: float, beta_max: float, power: float = 1.0) -> torch.Tensor:
    """log alpha_bar(t) = -int_0^t beta(s) ds of the VP-SDE with a polynomial beta(t)."""
    return -(beta_min * t + (beta_max - beta_min) * t ** (power + 1) / (power + 1))


def vp_marginal(t: torch.Tensor, beta_min: float, beta_max: float,
                power: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean coefficient sqrt(alpha_bar), std sqrt(1 - alpha_bar)) of x_t | x_0 under the VP-SDE."""
    log_ab = vp_log_alpha_bar(t, beta_min, beta_max, power)
    return torch.exp(0.5 * log_ab), torch.sqrt(-torch.expm1(log_ab)).clamp_min(1e-5)


def ddpm_betas(steps: int, beta_start: float, beta_end: float, kind: str = "linear") -> torch.Tensor:
    """Discrete DDPM betas: ``linear`` (Ho et al. 2020) or ``cosine`` (Nichol & Dhariwal 2021)."""
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, steps)
    if kind == "cosine":
        s = 0.008
        x = torch.linspace(0, steps, steps + 1) / steps
        ab = torch.cos((x + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - ab[1:] / ab[:-1]).clamp(1e-5, 0.999)
    raise ValueError(f"unknown DDPM schedule {kind!r}; use linear or cosine")


def ve_sigma(t: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Geometric VE-SDE noise scale sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
    return sigma_min * (sigma_max / sigma_min) ** t


def cosine_interpolant(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, d alpha_t / dt) of the cosine path x_t = (1 - alpha_t) x_0 + alpha_t x_1,
    alpha_t = 1 - cos(pi t / 2): slow near the data, fast near the base."""
    return 1 - torch.cos(0.5 * math.pi * t), 0.5 * math.pi * torch.sin(0.5 * math.pi * t)


def linear_interpolant(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, d alpha_t / dt) of the straight path (rectified flow / OT-CFM)."""
    return t, torch.ones_like(t)


# -- MatterGen and ADiT ---------------------------------------------------------------

def gaussian_path(t: torch.Tensor, kind: str, beta_min: float = 0.1, beta_max: float = 20.0,
                  power: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_t, s_t) of a Gaussian probability path x_t = a_t x_0 + s_t eps.

    ``linear``: a_t = 1 - t, s_t = t (ADiT's flow-matching interpolant, time reversed to
    this module's convention). ``vp``: the VP-SDE marginal with the polynomial beta(t) of
    ``power`` (3: the cubic beta(t) of the paper's Table 4). A clean-data prediction x0 and
    x_t give eps = (x_t - a_t x0) / s_t, so one deterministic sampler step
    x_t' = a_t' x0 + s_t' eps serves both paths (DDIM; for ``linear`` it is the Euler step
    of the flow ODE).
    """
    if kind == "linear":
        return 1 - t, t
    if kind == "vp":
        return vp_marginal(t, beta_min, beta_max, power)
    raise ValueError(f"unknown path {kind!r}; use linear or vp")


# -- DiffCSP ----------------------------------------------------------------------------

def ddpm_posterior(betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alphas, alphas_bar, posterior std) of discrete DDPM betas, step k = 0..T-1.

    ``alphas_bar[k] = prod_{i <= k} (1 - beta_i)``; the posterior std of the ancestral
    step k -> k-1 is sqrt(beta_k (1 - alphas_bar[k-1]) / (1 - alphas_bar[k])), and 0 at
    k = 0 (the last step adds no noise), as in DiffCSP's ``BetaScheduler``.
    """
    alphas = 1.0 - betas
    alphas_bar = torch.cumprod(alphas, 0)
    previous = torch.cat([alphas_bar.new_ones(1), alphas_bar[:-1]])
    std = torch.sqrt(betas * (1 - previous) / (1 - alphas_bar))
    std[0] = 0.0
    return alphas, alphas_bar, std
