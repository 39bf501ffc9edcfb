"""The tensors a model sees: one dataclass per task, built by ``c2np.training.data``.

The fields after the targets are optional host work (``c2np.models.host_work``): graphs
and noise draws prepared in the DataLoader workers so that a training step on the
device never waits on the host. ``None`` means the model computes them itself.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class _Moveable:
    def to(self, device, non_blocking: bool = False) -> "_Moveable":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return type(self)(**{k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v
                             for k, v in values.items()})

    def pin_memory(self) -> "_Moveable":
        """Page-locked copies of the tensors; ``DataLoader(pin_memory=True)`` calls this (it
        cannot see into a dataclass otherwise). A ``non_blocking`` copy to a GPU overlaps
        with the step only from pinned memory; from pageable memory it makes the host wait."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return type(self)(**{k: v.pin_memory() if torch.is_tensor(v) else v for k, v in values.items()})

    @property
    def n_graphs(self) -> int:
        return len(self.ptr) - 1


@dataclass
class ParticleBatch(_Moveable):
    """Particles of a batch, PyG style: nodes concatenated, ``batch`` and ``ptr`` index graphs."""

    z: torch.Tensor  # (n,) atomic numbers
    pos: torch.Tensor  # (n, 3) Angstrom, centred
    batch: torch.Tensor  # (n,) graph of each atom
    ptr: torch.Tensor  # (G + 1,) graph boundaries


@dataclass
class Task1Batch(ParticleBatch):
    """Task 1: condition (unit cell, R) and, in training, the target particle."""

    cell_z: torch.Tensor  # (m,) atoms of the unit cells
    cell_pos: torch.Tensor  # (m, 3) their fractional positions
    cell_batch: torch.Tensor  # (m,)
    lattice: torch.Tensor  # (G, 3, 3) lattice vectors as rows (Angstrom), the particle's frame
    origin: torch.Tensor  # (G, 3) carving centre x0 in fractional coordinates, mod 1
    radius: torch.Tensor  # (G,)
    species: torch.Tensor  # (G, S) atomic numbers of the cell's species, 0 = padding
    cell_frac: torch.Tensor  # (G, S) fraction of each species in the cell
    target_frac: torch.Tensor  # (G, S) fraction of each species in the particle
    log_n: torch.Tensor  # (G,) log of the particle's atom count
    cell_pairs: torch.Tensor | None = None  # (2, P) all ordered atom pairs of each cell
    lattice_inv: torch.Tensor | None = None  # (G, 3, 3) inverse of ``lattice`` (None when ``lattice`` is replaced)
    edge_index: torch.Tensor | None = None  # (2, E) radius graph of ``pos``
    graph_cutoff: float | None = None  # the cutoff ``edge_index`` was built with
    noise_level: torch.Tensor | None = None  # (G,) index into the model's noise levels
    noise: torch.Tensor | None = None  # (n, 3) standard normal perturbation of ``pos``
    score_edges: torch.Tensor | None = None  # (2, E') radius graph of the perturbed ``pos``
    score_cutoff: float | None = None  # the cutoff ``score_edges`` was built with
    # static shapes (``c2np.models.padding``): None for an unpadded batch
    atom_mask: torch.Tensor | None = None  # (n,) 1 for a real atom, 0 for padding
    graph_mask: torch.Tensor | None = None  # (G,) 1 for a real graph, 0 for an empty slot
    graph_capacity: tuple[int, int] | None = None  # (candidate pairs, edges) of each radius graph
    real_graphs: int | None = None  # the real graphs' count (logging weights)
    real_atoms: int | None = None  # the real atoms' count (the first ``real_atoms`` rows of ``pos``)


@dataclass
class Task2Batch(ParticleBatch):
    """Task 2: the (rotated) particle and, in training, its lattice and space group."""

    lattice: torch.Tensor  # (G, 6)
    spacegroup: torch.Tensor  # (G,) space-group numbers
    edge_index: torch.Tensor | None = None  # (2, E) radius graph of ``pos``
    graph_cutoff: float | None = None  # the cutoff ``edge_index`` was built with
