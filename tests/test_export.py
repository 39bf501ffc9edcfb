import numpy as np
import pytest
from ase.io import read

import c2np
from c2np.export import atom_lines, export_extxyz, export_xyz, reference_comment


def test_atom_lines_format():
    text = atom_lines(np.array([1, 12]), np.array([[0.0, -1.5, 2.25], [1e-9, 3.0, -0.000000004]]))
    assert text == "H 0.00000000 -1.50000000 2.25000000\nMg 0.00000000 3.00000000 -0.00000000\n"


def test_reference_comment_lines():
    assert reference_comment(12, 0, np.array([0, 0, 0, 1.0])) == "Original structure at R12"
    q = np.array([0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)])  # 45 degrees about z
    assert reference_comment(7, 3, q) == "Rotated structure: x=0.0, y=0.0, z=45.0 at R7"


def test_xyz_reference_layout(tmp_path, small_store):
    ds = c2np.open_dataset(small_store).filter(materials=["LiBeH3"], radii=[10])
    n = export_xyz(ds, tmp_path, progress=False)
    assert n == 93 + 1
    assert (tmp_path / "cifs" / "LiBeH3.cif").exists()
    files = sorted((tmp_path / "quaternions" / "LiBeH3" / "R10" / "xyz").glob("rot_*.xyz"))
    assert len(files) == 93
    first = (tmp_path / "quaternions/LiBeH3/R10/xyz/rot_0.xyz").read_text().splitlines()
    assert first[1] == "Original structure at R10"
    assert first[1 + 1].split()[0] in {"Li", "Be", "H"}
    k = 17
    atoms = read(tmp_path / f"quaternions/LiBeH3/R10/xyz/rot_{k}.xyz", format="xyz")
    ref = ds[k]
    assert ref.info["rotation_id"] == k
    np.testing.assert_array_equal(atoms.numbers, ref.numbers)
    np.testing.assert_allclose(atoms.positions, ref.positions, atol=1e-8)


def test_extxyz_round_trip_through_ase(tmp_path, small_store):
    ds = c2np.open_dataset(small_store).filter(materials=["KMgH3", "LiAlH3"], radii=[6])
    out = tmp_path / "ood.extxyz"
    assert export_extxyz(ds, out, progress=False) == len(ds) == 2 * 164
    frames = read(out, index=":", format="extxyz")
    assert len(frames) == len(ds)
    for i in (0, 5, 200):
        f, ref = frames[i], ds[i]
        np.testing.assert_allclose(f.positions, ref.positions, atol=1e-8)
        assert f.info["material"] == ref.info["material"] and f.info["radius"] == 6
        assert f.info["split"] == "ood" and f.info["config_id"] == ref.info["config_id"]
        np.testing.assert_allclose(f.info["quaternion_xyzw"], ref.info["quaternion_xyzw"], atol=1e-11)
        assert not f.pbc.any()
        # The rotated unit-cell vectors keep the cell's lengths.
        lattice = np.asarray(f.info["unit_cell_vectors"]).reshape(3, 3)
        np.testing.assert_allclose(np.linalg.norm(lattice, axis=1), f.info["unit_cell_parameters"][:3],
                                   rtol=1e-6)


def test_export_refuses_unknown_filters(small_store):
    ds = c2np.open_dataset(small_store)
    with pytest.raises(ValueError):
        ds.filter(splits=["validation"])
