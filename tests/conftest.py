"""Shared fixtures: a small store built once per session, and hand-made cells."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ase import Atoms

from c2np.config import BuildConfig
from c2np.materials.catalogue import load_materials
from c2np.store.build import build_store

SMALL_MATERIALS = ["KMgH3", "LiBeH3", "LiAlH3"]  # cubic, orthorhombic, rhombohedral


def pytest_collection_modifyitems(config, items):
    if os.environ.get("C2NP_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set C2NP_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_config() -> BuildConfig:
    """Five radii covering all three splits."""
    return BuildConfig(radii=(6, 8, 9, 10, 30), id_radii=(10,), ood_radii=(6, 30))


@pytest.fixture(scope="session")
def small_materials():
    return load_materials(names=SMALL_MATERIALS)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, small_config, small_materials) -> Path:
    store = tmp_path_factory.mktemp("store") / "s"
    build_store(store, small_config, small_materials, jobs=1, progress=False)
    return store


@pytest.fixture
def triclinic_cell() -> Atoms:
    """A low-symmetry two-species cell with all angles away from 90 degrees."""
    return Atoms("NaCl2", cell=[[4.1, 0.0, 0.0], [0.9, 4.4, 0.0], [0.7, 1.1, 4.8]],
                 scaled_positions=[[0.0, 0.0, 0.0], [0.31, 0.47, 0.52], [0.77, 0.12, 0.28]], pbc=True)


@pytest.fixture(scope="session")
def records(small_store):
    """The (material, R) records of the small store's train split at R = 8, as the model
    tests feed them to every family (imported here lazily: they need PyTorch)."""
    from c2np.store.dataset import open_dataset
    from c2np.training.data import load_records

    return load_records(open_dataset(small_store), "train", radii=[8])
