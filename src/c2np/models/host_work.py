"""Host work of a training step: what does not depend on the weights, done on the CPU in
the DataLoader workers (the collate function) instead of inside the step on the device.

A step that builds its own radius graph on a GPU waits for the device three times per
graph (the cell list's candidate count and the boolean selection of the edges inside the
cutoff); each wait empties the GPU's queue, so the next kernels start only after Python
catches up. None of it depends on the weights: the clean particle's graph, the noise
draws of denoising score matching and the graph of the perturbed particle can all be
made before the step. :func:`prepare` makes them on the CPU: the same edges in the same
order as the model's ``radius_edges`` (``radius_edges_host``, a KD-tree), so the loss of
a batch at a given noise is the same. (The cells' atom pairs and inverse lattices come
with every Task 1 batch from ``collate_task1``, with or without a plan.)

What a model wants is its :class:`HostPlan` (``model.host_plan()``); a model reads a
prepared field only when it was built with its own cutoff, and computes it itself when
the field is ``None``.

Noise draws: with a plan that has ``levels``, each graph's noise level and each atom's
standard-normal perturbation come from ``numpy.random.default_rng(key)`` for a per-sample
``key`` (see ``c2np.training.data``), not from the global torch generator on the device.
That random stream differs from the model's own draws; it is reproducible and does not
depend on the number of DataLoader workers or devices.

:func:`prepare_in_step` does the same work on the device at the start of a step, with
the model's own kind of draws (the global torch generator): what ``train.compile =
"loss"`` needs without ``train.host_work``, so that the compiled loss has no
data-dependent shape and the radius graphs stay on the GPU.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from c2np.models.batches import ParticleBatch
from c2np.models.graph import (
    filler_edges,
    radius_edges,
    radius_edges_host,
    radius_edges_sets,
)
from c2np.models.padding import edge_slots


@dataclass(frozen=True)
class HostPlan:
    """What :func:`prepare` puts into a batch for one model."""

    graph_cutoff: float | None = None  # radius graph of the clean particle (the encoders')
    levels: tuple[float, ...] | None = None  # noise levels (the model's float32 buffer)
    score_cutoff: float | None = None  # radius graph of the perturbed particle (score networks)

    @property
    def empty(self) -> bool:
        return self == HostPlan()


def prepare(batch: ParticleBatch, plan: HostPlan, keys: Sequence[Sequence[int]]) -> ParticleBatch:
    """``batch`` (on the CPU) with the fields of ``plan`` filled; ``keys`` seed the noise
    draws of each graph (one key per graph, used only when ``plan.levels`` is set)."""
    changes: dict = {}
    if plan.graph_cutoff is not None:
        changes |= {"edge_index": radius_edges_host(batch.pos, batch.ptr, plan.graph_cutoff),
                    "graph_cutoff": plan.graph_cutoff}
    if plan.levels is not None:
        sizes = batch.ptr.diff().tolist()
        if len(keys) != len(sizes):
            raise ValueError(f"{len(keys)} noise keys for {len(sizes)} graphs")
        level, noise = [], []
        for key, n in zip(keys, sizes):
            rng = np.random.default_rng(list(key))
            level.append(int(rng.integers(len(plan.levels))))
            noise.append(rng.standard_normal((n, 3), dtype=np.float32))
        noise_level = torch.tensor(level, dtype=torch.long)
        eps = torch.from_numpy(np.concatenate(noise)) if noise else torch.empty(0, 3)
        noisy = _perturbed(batch, plan, noise_level, eps)
        changes |= {"noise_level": noise_level, "noise": eps, "score_cutoff": plan.score_cutoff,
                    "score_edges": radius_edges_host(noisy, batch.ptr, plan.score_cutoff)}
    return dataclasses.replace(batch, **changes) if changes else batch


def prepare_in_step(batch: ParticleBatch, plan: HostPlan) -> ParticleBatch:
    """``batch`` (on its device) with the fields of ``plan`` that it lacks filled on that
    device: the radius graphs from ``radius_edges`` (the model's own graphs), each graph's
    noise level from ``torch.randint`` and the perturbation from ``torch.randn`` on the
    global generator. Host-prepared fields and padded batches (whose graphs go into
    fixed-capacity buffers inside the loss) are left as they are.

    The model would make the same things inside its loss; made here, before the loss, the
    loss has no data-dependent shape (``train.compile = "loss"``). The draws are those of
    the model's distribution in another order (the noise before the latent), so a seeded
    loss is reproducible but not the eager loss's number at the same seed."""
    if getattr(batch, "atom_mask", None) is not None:
        return batch
    changes: dict = {}
    if plan.graph_cutoff is not None and prepared_edges(batch, plan.graph_cutoff) is None:
        changes |= {"edge_index": radius_edges(batch.pos, batch.ptr, plan.graph_cutoff),
                    "graph_cutoff": plan.graph_cutoff}
    if plan.levels is None:
        return dataclasses.replace(batch, **changes) if changes else batch
    noise_level, eps = _drawn(batch, plan, changes)
    if plan.score_cutoff is not None and prepared_score_edges(batch, plan.score_cutoff) is None:
        changes |= {"score_cutoff": plan.score_cutoff,
                    "score_edges": radius_edges(_perturbed(batch, plan, noise_level, eps), batch.ptr,
                                                plan.score_cutoff)}
    return dataclasses.replace(batch, **changes) if changes else batch


def prepare_padded(batch: ParticleBatch, plan: HostPlan, edges_per_octave: int = 4,
                   generator: torch.Generator | None = None) -> ParticleBatch:
    """A padded batch (``c2np.models.padding``, on its device) with ``plan``'s fields made
    on that device, every shape a function of a few ladder sizes: what a step replayed as
    a CUDA graph (``c2np.training.captured``) needs.

    The noise draws cover every atom slot (``torch.randint``, ``torch.randn`` on
    ``generator``, the global one when None; the padding atoms' draws are masked out of the
    loss); host-prepared draws are kept. Both radius graphs are
    :func:`~c2np.models.graph.radius_edges` of the real atoms (the first ``real_atoms``;
    the model's own edges in its order, so the loss is the unpadded batch's at the same
    draws), made by one cell list when their cutoffs agree (``radius_edges_sets``), then
    padded to one capacity, the ladder size (``edges_per_octave`` sizes per doubling,
    multiples of 256) that holds the larger of the two: the extra slots are self-loops on
    the padding atoms in turn (:func:`~c2np.models.graph.filler_edges`), as in
    ``radius_edges_static``. Building the graphs waits for the device twice (the
    candidates' and the edges' counts)."""
    n, g = batch.real_atoms, batch.real_graphs
    if n is None or g is None:
        raise ValueError("prepare_padded takes a padded batch (c2np.models.padding.pad_task1)")
    device, slots = batch.pos.device, len(batch.pos)
    changes: dict = {}
    noise_level, eps = _drawn(batch, plan, changes, generator) if plan.levels is not None else (None, None)
    ptr = batch.ptr[:g + 1]
    wanted = {}  # field -> (positions of the real atoms, cutoff)
    if plan.graph_cutoff is not None:
        wanted["edge_index"] = batch.pos[:n], plan.graph_cutoff
        changes["graph_cutoff"] = plan.graph_cutoff
    if plan.levels is not None and plan.score_cutoff is not None:
        wanted["score_edges"] = _perturbed(batch, plan, noise_level, eps)[:n], plan.score_cutoff
        changes["score_cutoff"] = plan.score_cutoff
    if len({cutoff for _, cutoff in wanted.values()}) == 1:
        cutoff = next(iter(wanted.values()))[1]
        graphs = dict(zip(wanted, radius_edges_sets([p for p, _ in wanted.values()], ptr, cutoff)))
    else:
        graphs = {name: radius_edges(p, ptr, cutoff) for name, (p, cutoff) in wanted.items()}
    if graphs:
        slots_e = edge_slots(max(e.shape[1] for e in graphs.values()), edges_per_octave)
        for name, edges in graphs.items():
            filler = filler_edges(slots_e - edges.shape[1], slots, slots - n, device)
            changes[name] = torch.cat([edges, filler], 1)
    return dataclasses.replace(batch, **changes) if changes else batch


def _drawn(batch: ParticleBatch, plan: HostPlan, changes: dict,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's noise levels and perturbations: its own when it carries one per atom
    (host-prepared), else drawn on its device from ``generator`` (None: the global one)
    and added to ``changes``."""
    if batch.noise is not None and len(batch.noise) == len(batch.pos):
        return batch.noise_level, batch.noise
    device = batch.pos.device
    noise_level = torch.randint(len(plan.levels), (batch.n_graphs,), device=device, generator=generator)
    eps = torch.randn(len(batch.pos), 3, device=device, generator=generator)
    changes |= {"noise_level": noise_level, "noise": eps}
    return noise_level, eps


def _perturbed(batch: ParticleBatch, plan: HostPlan, noise_level: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The perturbed particle whose graph the score network sees: the same float32
    operations as ``LangevinGenerator.coordinate_loss`` and ``score_loss``, on ``eps``'s device."""
    return batch.pos + _levels(plan.levels, eps.device)[noise_level][batch.batch].view(-1, 1) * eps


@functools.cache
def _levels(levels: tuple[float, ...], device: torch.device) -> torch.Tensor:
    # one copy per device: made afresh at every step, a blocking copy from pageable memory
    # would make a GPU step wait for the device
    return torch.tensor(levels, dtype=torch.float32, device=device)


def prepared_edges(batch: ParticleBatch, cutoff: float) -> torch.Tensor | None:
    """The batch's clean-particle graph if it was built with ``cutoff``, else ``None``."""
    return batch.edge_index if getattr(batch, "graph_cutoff", None) == cutoff else None


def prepared_score_edges(batch: ParticleBatch, cutoff: float) -> torch.Tensor | None:
    """The perturbed-particle graph if the batch carries one built with ``cutoff``."""
    return batch.score_edges if getattr(batch, "score_cutoff", None) == cutoff else None
