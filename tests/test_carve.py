import numpy as np
import pytest
from ase import Atoms

from c2np.carve import carve, centre_position, check_fits, supercell_clearance
from c2np.errors import CarveError
from c2np.materials.catalogue import load_materials


def brute_force(cell: Atoms, radius, supercell=(20, 20, 20), centre=(0.5, 0.5, 0.5), tol=1e-6):
    big = cell.repeat(supercell)
    x0 = centre_position(cell, supercell, centre)
    d = np.linalg.norm(big.positions - x0, axis=1)
    keep = d <= radius + tol
    return big.numbers[keep], big.positions[keep] - x0


@pytest.mark.parametrize("name", ["KMgH3", "LiBeH3", "LiAlH3", "ZrCdH3", "CsCaH3"])
@pytest.mark.parametrize("radius", [6, 11])
def test_carve_equals_brute_force_tiling(name, radius):
    (m,) = load_materials(names=[name])
    numbers, positions = brute_force(m.cell, radius)
    p = carve(m.cell, radius, name=name)
    np.testing.assert_array_equal(p.numbers, numbers)
    np.testing.assert_allclose(p.positions, positions, atol=1e-9)


@pytest.mark.parametrize("centre", [(0.5, 0.5, 0.5), (0.43, 0.51, 0.6)])
def test_triclinic_cell_and_off_centre(triclinic_cell, centre):
    numbers, positions = brute_force(triclinic_cell, 9.0, centre=centre)
    p = carve(triclinic_cell, 9.0, centre=centre)
    assert len(p) == len(numbers) > 50
    np.testing.assert_array_equal(p.numbers, numbers)
    np.testing.assert_allclose(p.positions, positions, atol=1e-9)
    assert np.linalg.norm(p.positions, axis=1).max() <= 9.0 + 1e-6


def test_atoms_exactly_on_the_sphere_are_kept():
    cell = Atoms("Po", cell=np.eye(3) * 3.0, pbc=True)  # sites at multiples of 3 A
    p = carve(cell, 6.0)
    dist = np.linalg.norm(p.positions, axis=1)
    assert np.isclose(dist, 6.0).sum() == 6  # (+-6,0,0) and permutations
    assert len(p) == len(brute_force(cell, 6.0)[0])


def test_refuses_sphere_that_does_not_fit():
    cell = Atoms("Po", cell=np.eye(3) * 3.2, pbc=True)  # 20 * 3.2 = 64 < 2 * 30 + 5
    with pytest.raises(CarveError, match=r"tiny.*R=30"):
        carve(cell, 30, name="tiny")
    carve(cell, 29, name="tiny")  # 64 >= 58 + 5
    assert supercell_clearance(cell, (20, 20, 20), (0.5, 0.5, 0.5)) == pytest.approx(32.0)


def test_clearance_uses_perpendicular_widths_for_skewed_cells():
    # Edge lengths 5 A but a 60-degree shear: the perpendicular width is 5 sin 60.
    cell = Atoms("Po", cell=[[5, 0, 0], [2.5, 5 * np.sqrt(3) / 2, 0], [0, 0, 5]], pbc=True)
    width = 20 * 5 * np.sqrt(3) / 2
    assert supercell_clearance(cell, (20, 20, 20), (0.5, 0.5, 0.5)) == pytest.approx(width / 2)
    with pytest.raises(CarveError):
        check_fits(cell, width / 2 - 1.0, (20, 20, 20), (0.5, 0.5, 0.5), 5.0)


@pytest.mark.parametrize("radius", [0, -3, float("nan")])
def test_rejects_bad_radius(radius):
    cell = Atoms("Po", cell=np.eye(3) * 4.0, pbc=True)
    with pytest.raises(CarveError, match="radius"):
        carve(cell, radius)
