"""PyTorch and PyTorch Geometric views of both tasks (needs ``pip install c2np[torch]``).

Samples are built lazily from the store (rotation on access), so a ``DataLoader`` with
workers and ``pin_memory=True`` streams the 171k configurations without holding them.
Variable-size particles (up to ~18k atoms) are batched the PyG way: nodes concatenated,
a ``batch`` vector saying which graph each atom belongs to. ``radius_graph`` builds
edges with scipy's KD-tree, so torch_cluster (no wheels for our torch) is not needed.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch.utils.data import Dataset as TorchDataset

from c2np.store.dataset import Dataset
from c2np.tasks.targets import LATTICE_COLUMNS, task1_samples, task2_targets


def radius_graph(pos: torch.Tensor, r: float, batch: torch.Tensor | None = None,
                 max_num_neighbors: int | None = None) -> torch.Tensor:
    """Directed edges (2, E) between atoms of the same graph closer than ``r``.

    Memory grows with the number of edges, not atoms squared. Edges are sorted by
    (source, target), so the result is deterministic.
    """
    pos_np = pos.detach().cpu().numpy().astype(np.float64)
    batch_np = (np.zeros(len(pos_np), np.int64) if batch is None
                else batch.detach().cpu().numpy())
    edges = []
    for g in np.unique(batch_np):
        nodes = np.flatnonzero(batch_np == g)
        pairs = cKDTree(pos_np[nodes]).query_pairs(r, output_type="ndarray")
        both = np.concatenate([pairs, pairs[:, ::-1]])
        if max_num_neighbors is not None and len(both):
            both = both[np.lexsort((both[:, 1], both[:, 0]))]
            rank = np.arange(len(both)) - np.searchsorted(both[:, 0], both[:, 0])
            both = both[rank < max_num_neighbors]
        edges.append(nodes[both])
    out = np.concatenate(edges) if edges else np.empty((0, 2), np.int64)
    out = out[np.lexsort((out[:, 1], out[:, 0]))]
    return torch.as_tensor(out.T.copy(), dtype=torch.long, device=pos.device)


class Task1Dataset(TorchDataset):
    """Task 1 samples: the unit cell and R as input, the canonical particle as target."""

    def __init__(self, ds: Dataset, split: str):
        self.ds = ds
        self.samples = task1_samples(ds, split)
        self._cells = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        row = self.samples.iloc[int(i)]
        m = row["material"]
        if m not in self._cells:
            self._cells[m] = self.ds.unit_cell(m)
        cell = self._cells[m]
        target = self.ds.canonical(m, int(row["radius"]))
        return {"config_id": int(row["config_id"]), "material": m, "radius": float(row["radius"]),
                "cell": torch.as_tensor(np.asarray(cell.cell[:]), dtype=torch.float32),
                "cell_numbers": torch.as_tensor(cell.numbers, dtype=torch.long),
                "cell_frac": torch.as_tensor(cell.get_scaled_positions(), dtype=torch.float32),
                "numbers": torch.as_tensor(target.numbers, dtype=torch.long),
                "pos": torch.as_tensor(target.positions, dtype=torch.float32)}


class Task2Dataset(TorchDataset):
    """Task 2 samples: the rotated particle as input, lattice and space group as target."""

    def __init__(self, ds: Dataset, split: str):
        self.ds = ds
        self.targets = task2_targets(ds, split)
        self._by_id = ds.split(split)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict:
        row = self.targets.iloc[int(i)]
        atoms = self._by_id[int(i)]
        assert atoms.info["config_id"] == int(row["config_id"])  # same order by construction
        return {"config_id": int(row["config_id"]), "material": row["material"],
                "radius": float(row["radius"]),
                "numbers": torch.as_tensor(atoms.numbers, dtype=torch.long),
                "pos": torch.as_tensor(atoms.positions, dtype=torch.float32),
                "lattice": torch.as_tensor(row[LATTICE_COLUMNS].to_numpy(float), dtype=torch.float32),
                "spacegroup": int(row["spacegroup"])}


def to_pyg(sample: dict, cutoff: float | None = None):
    """A PyG ``Data`` (z, pos, and targets as graph attributes); edges if ``cutoff``."""
    from torch_geometric.data import Data

    data = Data(z=sample["numbers"], pos=sample["pos"], config_id=sample["config_id"],
                radius=torch.tensor([sample["radius"]]))
    if "lattice" in sample:
        data.lattice = sample["lattice"].view(1, 6)
        data.spacegroup = torch.tensor([sample["spacegroup"]])
    if cutoff is not None:
        data.edge_index = radius_graph(sample["pos"], cutoff)
    return data


def pyg_collate(samples: list[dict], cutoff: float | None = None):
    """Collate function for ``DataLoader``: a PyG ``Batch`` of variable-size particles."""
    from torch_geometric.data import Batch

    return Batch.from_data_list([to_pyg(s, cutoff) for s in samples])
