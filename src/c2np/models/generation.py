"""What the Task 1 generators share: noise levels, how many atoms of which species to
place, the uniform start inside the sphere, and annealed Langevin dynamics.

How a particle's size and species are produced (both families): a head predicts log N
and the species fractions from the condition (unit cell + R) and the latent; N is the
rounded exp(log N) and the species counts follow by largest remainder, so the
multiset is a deterministic function of the prediction. Species are placed on the
starting points in a seeded random order, and the score network, which sees every
atom's species, moves them into place.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def sigmas(sigma_max: float, sigma_min: float, n: int) -> torch.Tensor:
    """Geometric noise levels, largest first."""
    return torch.exp(torch.linspace(np.log(sigma_max), np.log(sigma_min), n))


def species_counts(n_atoms: int, species: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Atomic numbers of ``n_atoms`` atoms split by ``frac`` (largest remainder, stable)."""
    keep = species > 0
    species, frac = species[keep], np.clip(frac[keep], 0, None)
    frac = frac / frac.sum() if frac.sum() > 0 else np.full(len(species), 1 / len(species))
    raw = n_atoms * frac
    counts = np.floor(raw).astype(int)
    rest = n_atoms - counts.sum()
    counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
    return np.repeat(species, counts)


def uniform_ball(n: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` points uniform in a ball of ``radius`` (the known support of a carved particle)."""
    v = torch.randn(n, 3, generator=generator)
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    r = radius * torch.rand(n, 1, generator=generator) ** (1 / 3)
    return v * r


def annealed_langevin(score: Callable[[torch.Tensor, float], torch.Tensor], pos: torch.Tensor,
                      radius: torch.Tensor, batch: torch.Tensor, levels: torch.Tensor,
                      steps: int, step_size: float, generator: torch.Generator) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019) from ``pos``; atoms that leave the
    sphere are put back on it, because carving defines that support exactly."""
    sigma_min = float(levels[-1])
    rmax = radius[batch].view(-1, 1)
    for k, sigma in enumerate(levels.tolist()):
        alpha = step_size * (sigma / sigma_min) ** 2
        for t in range(steps):
            s = score(pos, sigma)
            last = k == len(levels) - 1 and t == steps - 1
            noise = to_device(torch.randn(pos.shape, generator=generator), pos.device)
            pos = pos + alpha * s + (0.0 if last else (2 * alpha) ** 0.5) * noise
            pos = into_sphere(pos, rmax)
    return pos


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x.to(device)`` without a host wait: the samplers draw their noise from a seeded CPU
    generator (the same numbers on every machine), and a copy to a GPU from pageable memory
    blocks the host until the device has run everything queued before it; from
    page-locked memory it is only queued. The same values either way."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def into_sphere(pos: torch.Tensor, rmax: torch.Tensor) -> torch.Tensor:
    """Atoms farther than ``rmax`` (n, 1) from the centre are put on the sphere: a carved
    particle lies inside it by construction."""
    norm = pos.norm(dim=1, keepdim=True)
    return torch.where(norm > rmax, pos * rmax / norm.clamp_min(1e-12), pos)


def equivariant_vectors(weights: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Per-atom vectors sum_j w_ij (x_i - x_j) / |x_i - x_j|: rotate with the particle."""
    src, tgt = edge_index
    diff = pos[tgt] - pos[src]
    unit = diff / diff.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    out = torch.zeros_like(pos)
    return out.index_add_(0, tgt, weights.view(-1, 1) * unit)
