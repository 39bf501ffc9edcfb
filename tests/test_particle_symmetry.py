import numpy as np
from scipy.spatial.transform import Rotation

from c2np.carve import carve
from c2np.materials.catalogue import load_materials
from c2np.particle_symmetry import duplicate_of, maps_onto_itself, particle_symmetry_group
from c2np.symmetry import proper_rotations_cartesian


def test_cubic_particle_has_the_full_rotation_group():
    (m,) = load_materials(names=["KMgH3"])  # Pm-3m: particle centred on a site of m-3m symmetry
    p = carve(m.cell, 10, name=m.name)
    group = particle_symmetry_group(p, proper_rotations_cartesian(m.cell), 0.01)
    assert len(group) == 24
    quarter_turn = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    assert maps_onto_itself(p.positions, p.numbers, quarter_turn, 0.01)
    tilt = Rotation.from_euler("z", 7, degrees=True).as_matrix()
    assert not maps_onto_itself(p.positions, p.numbers, tilt, 0.01)


def test_species_matter_for_self_mapping():
    (m,) = load_materials(names=["KMgH3"])
    p = carve(m.cell, 8, name=m.name)
    # A half-turn about (1,1,0)/sqrt2 maps the lattice onto itself; swap species to break it.
    g = Rotation.from_rotvec(np.pi * np.array([1, 1, 0]) / np.sqrt(2)).as_matrix()
    assert maps_onto_itself(p.positions, p.numbers, g, 0.01)
    numbers = p.numbers.copy()
    far = np.argmax(np.linalg.norm(p.positions, axis=1))
    numbers[far] = 1 if numbers[far] != 1 else 12
    assert not maps_onto_itself(p.positions, numbers, g, 0.01)


def test_duplicates_found_when_rotations_differ_by_a_symmetry():
    group = Rotation.from_euler("z", [[0], [90], [180], [270]], degrees=True).as_matrix()
    base = Rotation.from_euler("xyz", [10, 20, 30], degrees=True)
    other = Rotation.from_euler("xyz", [50, -10, 5], degrees=True)
    rots = np.stack([np.eye(3), base.as_matrix(), other.as_matrix(),
                     (base * Rotation.from_euler("z", 90, degrees=True)).as_matrix(),
                     Rotation.from_euler("z", 180, degrees=True).as_matrix()])
    np.testing.assert_array_equal(duplicate_of(rots, group, 10.0, 0.01), [-1, -1, -1, 1, 0])
    # A rotation 1 degree off a symmetry moves atoms 10 A out by 0.17 A: not a duplicate.
    near = Rotation.from_euler("z", 181, degrees=True).as_matrix()
    np.testing.assert_array_equal(duplicate_of(np.stack([np.eye(3), near]), group, 10.0, 0.01), [-1, -1])
