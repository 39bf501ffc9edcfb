"""Task 2 predictors (particle -> lattice + space group): target scaling and class maps.

Lattice targets are standardised with the training set's mean and std and the space
groups seen in training become the classes; both are buffers, so a checkpoint carries
them. Every Task 2 model encodes the particle with a rotation-invariant SchNet.

Two kinds of subclass:
- :class:`LatticePredictor` subclasses (CDVAE, SyMat) put a Gaussian latent on the
  pooled encoding (``encode``) and supply ``forward(batch) -> (lattice (G, 6), class
  logits (G, K), aux loss)``: a regression of the standardised lattice.
- :class:`LatticeGenerator` subclasses (DiffCSP, FlowMM, MatterGen, ADiT) model
  p(lattice | particle) generatively in the standardised lattice space: they supply the
  training objective ``lattice_loss`` and the sampler ``sample_lattice``; the prediction
  is the mean of ``samples`` seeded draws (a point estimate for the harness), and a
  space-group head on the same encoding gives the class.
"""

from __future__ import annotations

import torch
from torch import nn

from c2np.models.batches import Task2Batch
from c2np.models.components import SchNetEncoder, gaussian_latent, mean_pool, mlp
from c2np.models.host_work import HostPlan, prepared_edges


class LatticePredictor(nn.Module):
    """Shared target handling of the Task 2 models."""

    task = 2

    def __init__(self, hidden: int = 64, interactions: int = 3, cutoff: float = 4.0,
                 gaussians: int = 32, latent: int = 4, beta_kl: float = 0.01, n_classes: int = 16, **_):
        super().__init__()
        self.beta_kl = beta_kl
        self.encoder = SchNetEncoder(hidden, interactions, cutoff, gaussians)
        # generative families have no VAE latent: no unused parameters (DDP would stall on them)
        self.posterior = mlp(hidden, hidden, 2 * latent) if latent > 0 else None
        self.register_buffer("lattice_mean", torch.zeros(6))
        self.register_buffer("lattice_std", torch.ones(6))
        self.register_buffer("classes", torch.arange(1, n_classes + 1))
        self.register_buffer("n_used", torch.tensor(n_classes))  # classes seen in training

    def host_plan(self) -> HostPlan:
        """What the DataLoader workers can prepare for this model's loss (``host_work``):
        the particle's radius graph, for the families that encode with :meth:`embed`."""
        own = type(self).embed is LatticePredictor.embed
        return HostPlan(graph_cutoff=self.encoder.cutoff if own else None)

    def embed(self, batch: Task2Batch) -> torch.Tensor:
        """(G, hidden) rotation-invariant encoding of each particle (mean-pooled SchNet)."""
        graph = self.encoder.edges(batch.pos, batch.ptr, prepared_edges(batch, self.encoder.cutoff))
        return mean_pool(self.encoder(batch.z, batch.pos, batch.ptr, graph=graph), batch.batch, batch.n_graphs)

    def encode(self, batch: Task2Batch, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent of each particle and the KL term already weighted by ``beta_kl``."""
        lat, kl = gaussian_latent(*self.posterior(self.embed(batch)).chunk(2, -1), sample)
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
        self._n_used_host = len(classes)

    def class_index(self, spacegroup: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.classes[: self._used()], spacegroup)

    def _used(self) -> int:
        # a host copy of the n_used buffer: reading the buffer on a GPU waits for the device
        # every step; refreshed after fit_targets and loading a state dict
        if getattr(self, "_n_used_host", None) is None:
            self._n_used_host = int(self.n_used)
        return self._n_used_host

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._n_used_host = None

    def loss(self, batch: Task2Batch) -> dict[str, torch.Tensor]:
        lattice, logits, aux = self(batch)
        target = (batch.lattice - self.lattice_mean) / self.lattice_std
        reg = torch.mean((lattice - target) ** 2)
        cls = self.class_loss(logits, batch.spacegroup)
        return {"loss": reg + cls + aux, "lattice": reg, "spacegroup": cls, "aux": aux}

    def class_loss(self, logits: torch.Tensor, spacegroup: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits[:, : self._used()], self.class_index(spacegroup))

    def decode(self, lattice: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised lattice and class logits -> lattice (Angstrom, degrees) and space groups."""
        lat = lattice * self.lattice_std + self.lattice_mean
        # keep to what a lattice can be (the harness rejects lengths outside (0, 10000] A and
        # angles outside (0, 180)); an untrained or diverged sampler can leave that range
        lat = torch.cat([lat[:, :3].clamp(0.1, 1000.0), lat[:, 3:].clamp(1.0, 179.0)], -1)
        return lat, self.classes[: self._used()][logits[:, : self._used()].argmax(-1)]

    @torch.no_grad()
    def predict(self, batch: Task2Batch, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Lattice parameters (G, 6) in Angstrom/degrees and space-group numbers (G,).
        ``seed`` drives the sampler of generative subclasses; a regression ignores it."""
        lattice, logits, _ = self(batch, sample=False)
        return self.decode(lattice, logits)


class LatticeGenerator(LatticePredictor):
    """Generative Task 2 base: p(standardised lattice | particle encoding) + space-group head."""

    def __init__(self, hidden: int = 64, samples: int = 8, n_classes: int = 16, clip_x0: bool = True, **kw):
        kw.pop("latent", None)
        super().__init__(hidden=hidden, latent=0, n_classes=n_classes, **kw)
        self.hidden, self.samples, self.clip_x0 = hidden, samples, clip_x0
        self.class_head = mlp(hidden, hidden, n_classes)
        # range of the standardised training targets, for clip_x0 (no clipping until fitted)
        self.register_buffer("target_lo", torch.full((6,), -torch.inf))
        self.register_buffer("target_hi", torch.full((6,), torch.inf))

    def fit_targets(self, lattice: torch.Tensor, spacegroups: torch.Tensor) -> None:
        super().fit_targets(lattice, spacegroups)
        z = (lattice - self.lattice_mean) / self.lattice_std
        self.target_lo.copy_(z.min(0).values)
        self.target_hi.copy_(z.max(0).values)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before clip_x0 have no target range: load them unclipped
        for name in ("target_lo", "target_hi"):
            state_dict.setdefault(prefix + name, getattr(self, name).clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def denoised_noise(self, x: torch.Tensor, eps: torch.Tensor, a: torch.Tensor | float,
                       s: torch.Tensor | float) -> torch.Tensor:
        """The noise estimate ``eps`` of ``x = a x0 + s eps``, made consistent with a clean
        estimate x0 = (x - s eps) / a clipped to the training targets' range (DDPM's
        ``clip_denoised``, Ho et al. 2020). Near the noise end a is tiny (the cosine
        schedule's last beta is 0.999, so the first reverse step multiplies by
        1/sqrt(0.001) = 32), and an imperfect eps sends the draw far outside anything the
        network has seen, from where it never returns: measured on an H200, 24-epoch
        DiffCSP Task 2 gave a length RMSE of 729 A. Clipping keeps
        every reverse step on the data's support; ``clip_x0 = false`` restores the plain
        sampler."""
        if not self.clip_x0:
            return eps
        x0 = ((x - s * eps) / a).clamp(self.target_lo, self.target_hi)
        return (x - a * x0) / s

    def lattice_loss(self, x0: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The family's objective for standardised lattices ``x0`` (G, 6) given encodings ``h``."""
        raise NotImplementedError

    def sample_lattice(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One standardised lattice (G, 6) per encoding, drawn with ``generator`` (CPU)."""
        raise NotImplementedError

    def loss(self, batch: Task2Batch) -> dict[str, torch.Tensor]:
        h = self.embed(batch)
        target = (batch.lattice - self.lattice_mean) / self.lattice_std
        gen = self.lattice_loss(target, h)
        cls = self.class_loss(self.class_head(h), batch.spacegroup)
        return {"loss": gen + cls, "lattice": gen, "spacegroup": cls}

    @torch.no_grad()
    def predict(self, batch: Task2Batch, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(batch)
        gen = torch.Generator().manual_seed(int(seed))
        # all draws in one sampler run: a 1000-step sampler then costs one loop per batch
        draws = self.sample_lattice(h.repeat(self.samples, 1), gen).view(self.samples, len(h), -1)
        return self.decode(draws.mean(0), self.class_head(h))
