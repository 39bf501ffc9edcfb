import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from c2np.config import BuildConfig
from c2np.rotations import (configuration_quaternions, geodesic_distance, greedy_grid,
                            grid_size, train_grid)

CFG = BuildConfig()


def spec_sampler(theta, seed, margin=0.0, reference=None, offset=(0, 0, 0)):
    """SPEC.md's algorithm written out literally: one draw at a time."""
    rng = np.random.default_rng(seed)
    off = Rotation.from_euler("xyz", offset, degrees=True)
    n = math.ceil(2 / (1 - math.cos(math.radians(theta))))
    acc = []
    while len(acc) < n:
        q = Rotation.random(rng=rng).as_quat()
        if q[3] < 0:
            q = -q
        q = (off * Rotation.from_quat(q)).as_quat()
        if q[3] < 0:
            q = -q
        if any(abs(np.dot(q, p)) > math.cos(math.radians(theta) / 2) for p in acc):
            continue
        if reference is not None and any(abs(np.dot(q, p)) > math.cos(math.radians(margin) / 2)
                                         for p in reference):
            continue
        acc.append(q)
    return np.array(acc)


def test_grid_sizes_match_spec():
    assert (grid_size(15), grid_size(12), grid_size(9)) == (59, 92, 163)


def test_train_grid_equals_literal_spec_algorithm():
    np.testing.assert_array_equal(train_grid(CFG), spec_sampler(15.0, 1337))


@pytest.mark.parametrize("split,radius", [("id", 10), ("id", 26), ("ood", 6), ("ood", 30)])
def test_eval_grids_equal_literal_spec_algorithm(split, radius):
    g = CFG.grids[split]
    ours = configuration_quaternions(CFG, radius)[1:]
    ref = spec_sampler(g.theta, int(1000 + radius + g.theta), g.margin, train_grid(CFG), g.offset)
    np.testing.assert_array_equal(ours, ref)


def _min_pairwise(q):
    d = geodesic_distance(q[:, None, :], q[None, :, :])
    d[np.diag_indices(len(q))] = np.inf
    return d.min()


@pytest.mark.parametrize("radius", CFG.radii)
def test_every_grid_is_separated_and_respects_margin(radius):
    split = CFG.split_of(radius)
    spec = CFG.grids[split]
    quats = configuration_quaternions(CFG, radius)
    assert len(quats) == {"train": 60, "id": 93, "ood": 164}[split]
    np.testing.assert_array_equal(quats[0], [0, 0, 0, 1])
    grid = quats[1:]
    assert np.all(grid[:, 3] >= 0)
    np.testing.assert_allclose(np.linalg.norm(grid, axis=1), 1.0, atol=1e-12)
    assert _min_pairwise(grid) >= spec.theta - 1e-9
    if split != "train":
        to_train = geodesic_distance(grid[:, None, :], train_grid(CFG)[None, :, :])
        assert to_train.min() >= spec.margin - 1e-9


def test_grid_is_deterministic_and_seed_dependent():
    a = greedy_grid(12.0, 7)
    np.testing.assert_array_equal(a, greedy_grid(12.0, 7))
    assert not np.allclose(a, greedy_grid(12.0, 8))


def test_impossible_grid_raises():
    with pytest.raises(RuntimeError, match="only"):
        greedy_grid(170.0, 1, n=50, max_draws=2048)


def test_id_and_ood_seeds_follow_the_radius():
    assert CFG.grids["id"].seed_for(10) == 1022
    assert CFG.grids["ood"].seed_for(30) == 1039
    assert CFG.grids["train"].seed_for(8) == CFG.grids["train"].seed_for(25) == 1337
