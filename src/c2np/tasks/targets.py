"""What each task asks for, read from a store.

* **Task 1** (unit cell + R -> particle): one sample per (material, R) of a split. The
  input holds no orientation, so the sample is identified by the ``config_id`` of the
  unrotated configuration (``rotation_id == 0``) and the target is the canonical
  particle, centred at x0. Metrics align the prediction optimally, so its frame is free.
* **Task 2** (particle -> lattice + space group): one sample per configuration of a
  split (the rotated particle); the target is the conventional standard cell of spglib
  (``c2np.symmetry.standardize``) of the material: a, b, c in Angstrom, alpha, beta,
  gamma in degrees, and the space-group number, read at the label policy's tolerance
  ``LABEL_SYMPREC`` (0.1 A; every bundled label is the same from 0.001 to 0.1 A).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from c2np.store.dataset import Dataset
from c2np.symmetry import LABEL_SYMPREC, space_group, standardize

LATTICE_COLUMNS = ["a", "b", "c", "alpha", "beta", "gamma"]


def task1_samples(ds: Dataset, split: str) -> pd.DataFrame:
    """Task 1 samples of ``split``: config_id, material, radius (one per (material, R))."""
    idx = ds.split(split).index
    rows = idx[idx["rotation_id"] == 0]
    return rows[["config_id", "material", "radius"]].reset_index(drop=True)


def lattice_targets(ds: Dataset) -> pd.DataFrame:
    """Per material: conventional standard lattice parameters and space-group number."""
    rows = []
    for name in ds.material_names():
        cell = ds.unit_cell(name)
        std = standardize(cell, LABEL_SYMPREC)
        rows.append([name, *std.cell.cellpar(), space_group(cell, LABEL_SYMPREC).number])
    return pd.DataFrame(rows, columns=["material", *LATTICE_COLUMNS, "spacegroup"])


def task2_targets(ds: Dataset, split: str) -> pd.DataFrame:
    """Task 2 targets of ``split``: config_id, material, radius and the lattice columns."""
    idx = ds.split(split).index[["config_id", "material", "radius"]]
    out = idx.merge(lattice_targets(ds), on="material", how="left")
    out["spacegroup"] = out["spacegroup"].astype(np.int64)
    return out.reset_index(drop=True)
