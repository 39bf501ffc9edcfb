import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import c2np
import c2np.errors
from c2np.carve import carve
from c2np.solvers.baselines import task1_predictions, task2_predictions
from c2np.solvers.lattice_recovery import RecoveryError, recover_lattice
from c2np.solvers.robustness import perturb
from c2np.solvers.runner import run_baseline
from c2np.symmetry import space_group, standardize
from c2np.tasks.targets import task1_samples


@pytest.fixture(scope="module")
def ds(small_store):
    return c2np.open_dataset(small_store)


def test_analytic_task1_is_perfect(ds):
    res = run_baseline("analytic", 1, "ood", ds)
    assert res["metrics"]["rmsd"] < 1e-10 and res["metrics"]["hausdorff"] < 1e-10
    assert res["metrics"]["atom_count_error"] == 0 and "solver_seconds" in res


def test_analytic_task2_recovers_every_id_configuration_sampled(ds):
    res = run_baseline("analytic", 2, "id", ds, sample=5)
    assert res["sample"] == {"per_material_radius": 5, "seed": 0} and res["n_samples"] == 15
    assert res["metrics"]["joint_accuracy"] == 1.0 and res["analytic_solved_fraction"] == 1.0


def test_recovery_is_rotation_invariant_and_handles_triclinic(triclinic_cell):
    particle = carve(triclinic_cell, 11.0)
    target = standardize(triclinic_cell).cell.cellpar()
    for seed in range(3):
        rot = Rotation.random(rng=np.random.default_rng(seed)).as_matrix()
        moved = particle.copy()
        moved.positions = particle.positions @ rot.T + seed
        r = recover_lattice(moved)
        assert r.spacegroup == space_group(triclinic_cell).number
        np.testing.assert_allclose(r.cellpar, target, rtol=1e-6, atol=1e-6)


def test_recovery_refuses_too_small_particles(triclinic_cell):
    with pytest.raises(RecoveryError):
        recover_lattice(carve(triclinic_cell, 2.5))


def test_template_and_mean_baselines(ds):
    samples = task1_samples(ds, "id")  # R = 10; training radii 8 and 9 in the small store
    preds = task1_predictions(ds, samples, "template")
    assert all(a.info["radius"] == 9 for a in preds.values())
    frame, _ = task2_predictions(ds, ds.split("ood").index.iloc[:50][["config_id", "material", "radius"]], "mean")
    assert frame[["a", "b", "c"]].nunique().max() == 1
    res = run_baseline("mean", 2, "ood", ds)
    assert res["metrics"]["joint_accuracy"] < 1.0
    with pytest.raises(c2np.errors.C2NPError):
        task1_predictions(ds, samples, "mean")


def test_perturb_is_seeded():
    from ase import Atoms

    atoms = Atoms("H1000", positions=np.random.default_rng(0).uniform(0, 30, (1000, 3)))
    a, b = perturb(atoms, 0.1, 0.1, seed=3), perturb(atoms, 0.1, 0.1, seed=3)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert 850 < len(a) < 950
    assert np.allclose(perturb(atoms, 0.0, 0.0, 1).positions, atoms.positions)
