import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

from c2np.carve import carve
from c2np.materials.catalogue import load_materials
from c2np.metrics.alignment import _assign_block, align, starting_rotations
from c2np.metrics.lattice import Tolerances, task2_metrics
from c2np.metrics.structure import hausdorff, hull_volume, rdf, rdf_error, task1_metrics


@pytest.fixture(scope="module")
def particles():
    mats = {m.name: m for m in load_materials(names=["KMgH3", "LiBeH3", "LiAlH3", "CsCaH3"])}
    return {(n, r): carve(m.cell, r, name=n) for n, m in mats.items() for r in (6, 8)}


def rigidly_moved(p, seed, noise=0.0):
    rng = np.random.default_rng(seed)
    rot = Rotation.random(rng=rng).as_matrix()
    perm = rng.permutation(len(p))
    pos = (p.positions @ rot.T + rng.normal(0, 3, 3))[perm] + rng.normal(0, noise, (len(p), 3))
    return pos, p.numbers[perm]


def test_perfect_prediction_scores_perfect(particles):
    p = particles[("LiBeH3", 8)]
    m = task1_metrics(p.positions, p.numbers, p.positions, p.numbers)
    assert m["rmsd"] < 1e-10 and m["hausdorff"] < 1e-10
    assert m["hull_volume_error"] == m["rdf_error"] == m["lev_error"] == m["atom_count_error"] == 0
    assert m["volume_ratio"] == pytest.approx(1.0)


@pytest.mark.parametrize("key", [("KMgH3", 8), ("LiBeH3", 8), ("LiAlH3", 8), ("CsCaH3", 6)])
def test_rigid_motion_and_permutation_give_zero(particles, key):
    p = particles[key]
    pos, z = rigidly_moved(p, seed=len(p))
    m = task1_metrics(pos, z, p.positions, p.numbers)
    assert m["rmsd"] < 1e-8 and m["hausdorff"] < 1e-8 and m["assignment_exact"]
    assert m["hull_volume_error"] < 1e-9 and m["rdf_error"] < 1e-9


def test_one_atom_moved_gives_hausdorff_d(particles):
    p = particles[("KMgH3", 8)]
    pos = p.positions.copy()
    i = int(np.argmin(np.linalg.norm(pos, axis=1)))  # an interior atom: the hull is unchanged
    d = 0.4
    pos[i] += [d, 0, 0]
    m = task1_metrics(pos, p.numbers, p.positions, p.numbers)
    n = len(pos)
    assert m["hausdorff"] == pytest.approx(d, abs=0.01)
    # The refit can only lower the RMSD of the unmoved fit, d / sqrt(n), and by little.
    assert 0.97 * d / np.sqrt(n) <= m["rmsd"] <= d / np.sqrt(n) + 1e-12
    assert m["hull_volume_error"] < 1e-9


def test_missing_atoms_are_scored_by_a_rule(particles):
    p = particles[("LiBeH3", 8)]
    keep = np.arange(len(p)) >= 10
    m = task1_metrics(p.positions[keep], p.numbers[keep], p.positions, p.numbers)
    assert m["atom_count_error"] == pytest.approx(10 / len(p))
    assert m["matched_fraction"] == pytest.approx(keep.mean())
    # Matched atoms sit exactly on their references; the 10 missing ones count at the
    # distance to the nearest predicted atom, so RMSD sees them too.
    assert 0.1 < m["rmsd"] < 1.0
    assert m["hausdorff"] > 0.5


def test_species_are_respected(particles):
    p = particles[("KMgH3", 6)]
    z = p.numbers.copy()
    z[z == 19] = 12  # every K relabelled Mg: same geometry, wrong species
    m = task1_metrics(p.positions, z, p.positions, p.numbers)
    assert m["rmsd"] > 0.5 or m["matched_fraction"] < 1.0


def _brute_force_case(p, seed):
    pos, z = rigidly_moved(p, seed, noise=0.08)
    fast = align(pos, z, p.positions, p.numbers)
    # Every start refined with dense Hungarian assignment + Kabsch, no screening.
    brute = align(pos, z, p.positions, p.numbers, n_starts=None, dense_limit=10**9)
    assert fast.rmsd == pytest.approx(brute.rmsd, abs=1e-9)
    assert fast.rmsd < 0.2  # 0.08 A noise per coordinate: about 0.14 A
    assert len(starting_rotations(pos, p.positions)) > 4000


@pytest.mark.parametrize("key,seed", [(("KMgH3", 6), 0), (("LiBeH3", 6), 1), (("LiAlH3", 6), 2)])
def test_alignment_equals_brute_force(particles, key, seed):
    """Screened, sparse search == dense Hungarian + Kabsch from every start (about 10 s each)."""
    _brute_force_case(particles[key], seed)


@pytest.mark.slow
@pytest.mark.parametrize("key,seed", [(("CsCaH3", 8), 3), (("LiAlH3", 8), 4), (("LiBeH3", 8), 5)])
def test_alignment_equals_brute_force_larger(particles, key, seed):
    assert len(particles[key]) <= 350
    _brute_force_case(particles[key], seed)


def test_assignment_shortcuts_are_exact():
    rng = np.random.default_rng(0)
    for noise in (0.01, 0.6):
        a = rng.uniform(0, 10, (200, 3))
        b = (a + rng.normal(0, noise, a.shape))[rng.permutation(200)]
        dense_cost = cdist(a, b, "sqeuclidean")[linear_sum_assignment(cdist(a, b, "sqeuclidean"))].sum()
        ia, ib, exact = _assign_block(a, b, dense_limit=10**9)
        assert exact and ((a[ia] - b[ib]) ** 2).sum() == pytest.approx(dense_cost)
        ia, ib, exact = _assign_block(a, b, dense_limit=0)  # forced sparse when not a bijection
        cost = ((a[ia] - b[ib]) ** 2).sum()
        assert cost >= dense_cost - 1e-9
        if exact:  # nearest neighbours formed a bijection: provably optimal
            assert cost == pytest.approx(dense_cost)


def test_hull_rdf_hausdorff_on_hand_made_sets():
    cube = np.array([[x, y, z] for x in (0, 2) for y in (0, 2) for z in (0, 2)], float)
    assert hull_volume(cube) == pytest.approx(8.0)
    assert hull_volume(cube[:3]) == 0.0
    assert hausdorff(cube, cube + [0, 0, 0.25]) == pytest.approx(0.25)
    g = rdf(cube)
    assert rdf_error(g, g) == 0 and rdf_error(rdf(cube * 1.1), g) > 0.5


def test_lattice_off_by_one_percent():
    ref = np.array([[5.0, 6.0, 7.0, 90.0, 90.0, 90.0]])
    pred = ref.copy()
    pred[0, 0] *= 1.01
    m = task2_metrics(pred, ref, [62], [62])
    assert m["lattice_rmse"] == pytest.approx(np.sqrt(0.05 ** 2 / 6))
    assert m["length_rmse"] == pytest.approx(np.sqrt(0.05 ** 2 / 3)) and m["angle_rmse"] == 0
    assert m["joint_accuracy"] == 1.0
    assert task2_metrics(pred, ref, [62], [62], Tolerances(length_rtol=0.005))["joint_accuracy"] == 0.0
    assert task2_metrics(pred, ref, [63], [62])["joint_accuracy"] == 0.0
    pred[0, 4] += 1.5
    assert task2_metrics(pred, ref, [62], [62])["joint_accuracy"] == 0.0
