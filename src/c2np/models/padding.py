"""Static shapes for a Task 1 training step (``train.pad_buckets``): every batch padded
up to one of a few sizes, so that the step's tensors have the same shapes for every
batch of a bucket.

Why: a plain step has data-dependent shapes (atoms, edges, cell atoms, pairs) and waits
for the device twice per radius graph to learn its edge count. With fixed shapes and no
wait, ``torch.compile(model.loss, dynamic=False)`` compiles one graph per bucket and CUDA
graphs (``mode="reduce-overhead"``) can replay the whole step without Python launching
its kernels one by one.

How, exactly (the loss and its gradients are the unpadded ones, tests/test_padding.py):

- atoms are padded to the next size of a geometric ladder (``per_octave`` sizes per
  doubling) at least ``MIN_PADDING_ATOMS`` above the real count; the padding atoms sit
  at the origin of one extra graph slot (the last of ``graphs``), have no radius-graph
  edges and are masked out of every mean (``atom_mask``), so no real atom or graph sees
  them;
- graphs, cell atoms, cell pairs and species columns are padded to fixed widths from
  the training set (:func:`pad_spec`); empty graph slots get benign values (identity
  lattice, R = 10 A) and are masked out of the per-graph means (``graph_mask``);
- each radius graph is built into a buffer of ``edges_per_atom`` x padded atoms
  (``radius_edges_static``): the unused slots are self-loops on the padding atoms in
  turn (``graph.filler_edges``). A graph that does not fit makes the loss NaN (never a
  silent, inexact step); the capacities come from the training set with a margin
  (:func:`pad_spec`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from c2np.models.batches import Task1Batch

#: Radius-graph capacity per padded atom. Measured on the bundled train split
#: (benchmarks/pad_buckets.py: one epoch of CDVAE Task 1 batches, cutoff 4 A, clean and
#: perturbed at a noise level drawn per graph): at most 31.4 edges and 192.9 cell-list
#: candidate pairs per padded atom of a batch; about 12 % margin on top.
EDGES_PER_ATOM = 35.0
CANDIDATES_PER_ATOM = 216.0
#: Padding atoms a padded batch has at least: the radius graphs' filler edges take them in
#: turn (``graph.filler_edges``), so that no atom's row receives more than a few thousand
#: of the message sums' atomic adds. A quarter of a percent of a 25,000-atom batch.
MIN_PADDING_ATOMS = 64


@dataclass(frozen=True)
class PadSpec:
    """The padded shapes of a Task 1 training batch."""

    graphs: int  # graph slots: the largest batch + 1 (the last slot holds the padding atoms)
    cell_atoms: int  # cell atom slots, more than any batch's cell atoms
    cell_pairs: int  # cell pair slots
    species: int  # species columns
    per_octave: int = 2  # atom bucket sizes per doubling
    edges_per_atom: float = EDGES_PER_ATOM
    candidates_per_atom: float = CANDIDATES_PER_ATOM

    def atoms(self, n: int) -> int:
        """The bucket of a batch of ``n`` atoms (:func:`atom_slots`)."""
        return atom_slots(n, self.per_octave)

    def capacities(self, atoms: int) -> tuple[int, int]:
        """(candidate pairs, edges) of each radius graph of a bucket of ``atoms``."""
        return (256 * math.ceil(atoms * self.candidates_per_atom / 256),
                256 * math.ceil(atoms * self.edges_per_atom / 256))


def ladder(n: int, per_octave: int, quantum: int) -> int:
    """The smallest size of the geometric ladder (``per_octave`` sizes per doubling, each
    rounded up to a multiple of ``quantum``, at least ``quantum``) that holds ``n``: at
    most a factor 2 ** (1 / per_octave) above ``n``, plus the rounding."""
    k = math.floor(math.log2(max(n, quantum)) * per_octave)
    while True:
        size = quantum * math.ceil(2 ** (k / per_octave) / quantum)
        if size >= n:
            return size
        k += 1


def atom_slots(n: int, per_octave: int) -> int:
    """The atom slots of a padded batch of ``n`` atoms: the smallest ladder size
    (``per_octave`` sizes per doubling, rounded up to a multiple of 64, at least 64) that
    leaves at least :data:`MIN_PADDING_ATOMS` padding atoms."""
    return ladder(n + MIN_PADDING_ATOMS, per_octave, 64)


def edge_slots(n_edges: int, per_octave: int) -> int:
    """The edge slots of a captured step's radius graphs holding ``n_edges`` edges
    (``host_work.prepare_padded``): a ladder size, ``per_octave`` per doubling, rounded up
    to a multiple of 256."""
    return ladder(n_edges, per_octave, 256)


def pad_spec(records, batch_size: int, per_octave: int = 2, edges_per_atom: float = EDGES_PER_ATOM,
             candidates_per_atom: float = CANDIDATES_PER_ATOM) -> PadSpec:
    """The fixed widths of ``records``' batches of at most ``batch_size`` graphs (cells are
    tens of atoms, so padding every batch to the largest cells costs little)."""
    cells = max(len(r.cell_numbers) for r in records)
    species = max(len(np.unique(r.cell_numbers)) for r in records)
    return PadSpec(graphs=batch_size + 1, cell_atoms=batch_size * cells + 1,
                   cell_pairs=batch_size * cells * (cells - 1) + 1, species=species,
                   per_octave=per_octave, edges_per_atom=edges_per_atom,
                   candidates_per_atom=candidates_per_atom)


def _pad(t: torch.Tensor, size: int, value) -> torch.Tensor:
    """``t`` extended along its first axis to ``size`` with ``value``."""
    if size < len(t):
        raise ValueError(f"cannot pad {len(t)} rows to {size}")
    fill = torch.full((size - len(t), *t.shape[1:]), value, dtype=t.dtype) if not torch.is_tensor(value) \
        else value.expand(size - len(t), *t.shape[1:]).to(t.dtype)
    return torch.cat([t, fill])


def pad_task1(batch: Task1Batch, spec: PadSpec) -> Task1Batch:
    """``batch`` (on the CPU, no host-prepared graphs) padded to ``spec``'s shapes."""
    if batch.edge_index is not None or batch.score_edges is not None:
        raise ValueError("padding takes plain batches: host-prepared graphs are not padded (train.host_work)")
    g, n, m = batch.n_graphs, len(batch.pos), len(batch.cell_z)
    if g >= spec.graphs or m >= spec.cell_atoms or batch.species.shape[1] > spec.species:
        raise ValueError(f"batch of {g} graphs, {m} cell atoms, {batch.species.shape[1]} species does not fit "
                         f"{spec}")
    atoms = spec.atoms(n)
    ghost = spec.graphs - 1
    species_pad = (0, spec.species - batch.species.shape[1])

    def widen(t):
        return torch.nn.functional.pad(t, species_pad)

    eye = torch.eye(3).view(1, 3, 3)
    changes = {
        "z": _pad(batch.z, atoms, 0), "pos": _pad(batch.pos, atoms, 0.0), "batch": _pad(batch.batch, atoms, ghost),
        "ptr": torch.cat([batch.ptr, torch.full((spec.graphs - g - 1,), n), torch.tensor([atoms])]),
        "cell_z": _pad(batch.cell_z, spec.cell_atoms, 0), "cell_pos": _pad(batch.cell_pos, spec.cell_atoms, 0.0),
        "cell_batch": _pad(batch.cell_batch, spec.cell_atoms, ghost),
        # padding pairs join the last (padding) cell atom to itself
        "cell_pairs": _pad(batch.cell_pairs.T, spec.cell_pairs, spec.cell_atoms - 1).T.contiguous(),
        "lattice": _pad(batch.lattice, spec.graphs, eye), "lattice_inv": _pad(batch.lattice_inv, spec.graphs, eye),
        "origin": _pad(batch.origin, spec.graphs, 0.0), "radius": _pad(batch.radius, spec.graphs, 10.0),
        "species": _pad(widen(batch.species), spec.graphs, 0),
        "cell_frac": _pad(widen(batch.cell_frac), spec.graphs, 0.0),
        "target_frac": _pad(widen(batch.target_frac), spec.graphs, 0.0),
        "log_n": _pad(batch.log_n, spec.graphs, 0.0),
        "atom_mask": _pad(torch.ones(n), atoms, 0.0), "graph_mask": _pad(torch.ones(g), spec.graphs, 0.0),
        "graph_capacity": spec.capacities(atoms), "real_graphs": g, "real_atoms": n,
    }
    if batch.noise is not None:  # host-prepared draws (tests, the benchmark's fixed batch)
        changes |= {"noise": _pad(batch.noise, atoms, 0.0), "noise_level": _pad(batch.noise_level, spec.graphs, 0)}
    return dataclasses.replace(batch, **changes)


class PaddedCollate:
    """A collate function followed by :func:`pad_task1` (picklable, for DataLoader workers)."""

    def __init__(self, collate, spec: PadSpec):
        self.collate, self.spec = collate, spec

    def __call__(self, items) -> Task1Batch:
        return pad_task1(self.collate(items), self.spec)
