"""Task 2 predictors (particle -> lattice + space group): target scaling and class maps.

Lattice targets are standardised with the training set's mean and std and the space
groups seen in training become the classes; both are buffers, so a checkpoint carries
them. Every Task 2 model encodes the particle with SchNet into a Gaussian latent
(``encode``); a subclass supplies ``forward(batch) -> (lattice (G, 6), class logits (G, K),
aux loss)``.
"""

from __future__ import annotations

import torch
from torch import nn

from c2np.models.batches import Task2Batch
from c2np.models.components import SchNetEncoder, gaussian_latent, mean_pool, mlp


class LatticePredictor(nn.Module):
    """Shared target handling of the Task 2 models."""

    task = 2

    def __init__(self, hidden: int = 64, interactions: int = 3, cutoff: float = 4.0,
                 gaussians: int = 32, latent: int = 4, beta_kl: float = 0.01, n_classes: int = 16, **_):
        super().__init__()
        self.beta_kl = beta_kl
        self.encoder = SchNetEncoder(hidden, interactions, cutoff, gaussians)
        self.posterior = mlp(hidden, hidden, 2 * latent)
        self.register_buffer("lattice_mean", torch.zeros(6))
        self.register_buffer("lattice_std", torch.ones(6))
        self.register_buffer("classes", torch.arange(1, n_classes + 1))
        self.register_buffer("n_used", torch.tensor(n_classes))  # classes seen in training

    def encode(self, batch: Task2Batch, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent of each particle and the KL term already weighted by ``beta_kl``."""
        h = mean_pool(self.encoder(batch.z, batch.pos, batch.ptr), batch.batch, batch.n_graphs)
        lat, kl = gaussian_latent(*self.posterior(h).chunk(2, -1), sample)
        return lat, self.beta_kl * kl

    def fit_targets(self, lattice: torch.Tensor, spacegroups: torch.Tensor) -> None:
        """Set the scaling and the classes from the training targets."""
        self.lattice_mean.copy_(lattice.mean(0))
        self.lattice_std.copy_(lattice.std(0).clamp_min(1e-3))  # cubic-only sets: angles fixed
        classes = torch.unique(spacegroups)
        if len(classes) > len(self.classes):
            raise ValueError(f"{len(classes)} space groups but the head has {len(self.classes)} classes")
        self.classes[: len(classes)] = classes
        self.n_used.fill_(len(classes))

    def class_index(self, spacegroup: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.classes[: self._used()], spacegroup)

    def _used(self) -> int:
        return int(self.n_used)

    def loss(self, batch: Task2Batch) -> dict[str, torch.Tensor]:
        lattice, logits, aux = self(batch)
        target = (batch.lattice - self.lattice_mean) / self.lattice_std
        reg = torch.mean((lattice - target) ** 2)
        cls = nn.functional.cross_entropy(logits[:, : self._used()], self.class_index(batch.spacegroup))
        return {"loss": reg + cls + aux, "lattice": reg, "spacegroup": cls, "aux": aux}

    @torch.no_grad()
    def predict(self, batch: Task2Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Lattice parameters (G, 6) in Angstrom/degrees and space-group numbers (G,)."""
        lattice, logits, _ = self(batch, sample=False)
        lat = lattice * self.lattice_std + self.lattice_mean
        # keep to what a lattice can be (the harness rejects lengths <= 0, angles outside (0, 180))
        lat = torch.cat([lat[:, :3].clamp_min(0.1), lat[:, 3:].clamp(1.0, 179.0)], -1)
        return lat, self.classes[: self._used()][logits[:, : self._used()].argmax(-1)]
