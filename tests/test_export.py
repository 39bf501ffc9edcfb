import numpy as np
import pytest
from ase.io import read

import c2np
from scipy.spatial.transform import Rotation

from c2np.errors import C2NPError
from c2np.export import (
    INCOMPLETE,
    atom_lines,
    coordinate_columns,
    estimated_bytes,
    export_extxyz,
    export_xyz,
    reference_comment,
)


def reference_line(symbol: str, x: float, y: float, z: float) -> str:
    """The reference writer's atom line, written from its format specification."""
    return f"{symbol:2s} {x:15.8f} {y:15.8f} {z:15.8f}\n"


def test_atom_lines_are_the_reference_format():
    pos = np.array([[0.0, -1.5, 2.25], [1e-9, 3.0, -0.000000004], [-29.999999995, 10.123456785, -0.0]])
    text = atom_lines(np.array([1, 12, 3]), pos)
    assert text == "".join(reference_line(s, *p) for s, p in zip(["H", "Mg", "Li"], pos))
    assert text.splitlines()[0] == "H       0.00000000     -1.50000000      2.25000000"
    assert {len(line) for line in text.splitlines(keepends=True)} == {51}


def test_coordinate_columns_match_python_formatting_bit_for_bit():
    """Random coordinates, values a hair either side of a rounding half-way point, signed
    zeros and tiny negatives, and values too wide for the fast path."""
    rng = np.random.default_rng(7)
    halves = (rng.integers(-3_000_000_000, 3_000_000_000, 20_000) + 0.5) / 1e8
    values = np.concatenate([rng.uniform(-35, 35, 50_000), halves, np.nextafter(halves, np.inf),
                             np.nextafter(halves, -np.inf),
                             [0.0, -0.0, -1e-12, 9.999999995, -9999.999999996, 12345.678, -99999.5]])
    got = coordinate_columns(values)
    want = np.array([list(f" {v:15.8f}".encode()) for v in values], dtype=np.uint8)
    assert got.shape == (len(values), 16)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(C2NPError, match="does not fit"):
        coordinate_columns(np.array([-1e7]))


def test_reference_comment_lines():
    assert reference_comment(12, 0, np.array([0, 0, 0, 1.0])) == "Original structure at R12"
    q = np.array([0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)])  # 45 degrees about z
    assert reference_comment(7, 3, q) == "Rotated structure: x=0.0°, y=0.0°, z=45.0° at R7"


def test_xyz_files_are_the_reference_writers_bytes(tmp_path, small_store):
    """Each file equals what the reference writer produces for the same configuration:
    the unrotated particle for rotation 0, else scipy's Rotation.apply of the quaternion,
    Euler angles in the comment, fixed-width lines, UTF-8."""
    ds = c2np.open_dataset(small_store).filter(materials=["LiAlH3"], radii=[6])
    export_xyz(ds, tmp_path, progress=False)
    canonical = ds.canonical("LiAlH3", 6)
    symbols = canonical.get_chemical_symbols()
    for k in (0, 1, 57, 163):
        row = ds.index[ds.index["rotation_id"] == k].iloc[0]
        q = row[["qx", "qy", "qz", "qw"]].to_numpy(float)
        if k == 0:
            coords, comment = canonical.positions, "Original structure at R6"
        else:
            coords = Rotation.from_quat(q).apply(canonical.positions)
            x, y, z = Rotation.from_quat(q).as_euler("xyz", degrees=True)
            comment = f"Rotated structure: x={x:.1f}°, y={y:.1f}°, z={z:.1f}° at R6"
        expected = f"{len(symbols)}\n{comment}\n" + "".join(
            reference_line(s, *c) for s, c in zip(symbols, coords))
        got = (tmp_path / f"quaternions/LiAlH3/R6/xyz/rot_{k}.xyz").read_bytes()
        assert got == expected.encode("utf-8")
    assert (tmp_path / "cifs/LiAlH3.cif").read_bytes() == (small_store / "cifs/LiAlH3.cif").read_bytes()
    written = sum(p.stat().st_size for p in (tmp_path / "quaternions").rglob("*.xyz"))
    assert abs(estimated_bytes(ds) - written) / written < 0.01
    assert not (tmp_path / INCOMPLETE).exists()


def test_xyz_export_refuses_a_path_inside_the_store_and_a_used_folder(tmp_path, small_store):
    ds = c2np.open_dataset(small_store).filter(materials=["KMgH3"], radii=[6])
    for bad in (small_store, small_store / "index.parquet", small_store / "cifs" / "x"):
        with pytest.raises(C2NPError, match="inside the store"):
            export_xyz(ds, bad, progress=False)
    with pytest.raises(C2NPError, match="inside the store"):
        export_extxyz(ds, small_store / "index.parquet", progress=False)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    with pytest.raises(C2NPError, match="not empty"):
        export_xyz(ds, tmp_path / "used", progress=False)
    assert (tmp_path / "used" / "notes.txt").read_text() == "mine"


def test_interrupted_xyz_export_is_marked_and_resumes(tmp_path, small_store, monkeypatch):
    import c2np.export as export

    ds = c2np.open_dataset(small_store).filter(materials=["KMgH3", "LiBeH3"], radii=[6])
    real = export._write_material

    def dies_on_second(store, material, groups, out):
        if material == "LiBeH3":
            raise KeyboardInterrupt
        return real(store, material, groups, out)

    monkeypatch.setattr(export, "_write_material", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        export_xyz(ds, tmp_path, progress=False, jobs=1)
    assert (tmp_path / INCOMPLETE).exists()
    assert (tmp_path / "quaternions/KMgH3/R6/xyz/rot_163.xyz").exists()
    assert not (tmp_path / "quaternions/LiBeH3").exists()  # nothing half-written in place
    monkeypatch.setattr(export, "_write_material", real)
    first = (tmp_path / "quaternions/KMgH3/R6/xyz/rot_5.xyz").stat().st_mtime_ns
    assert export_xyz(ds, tmp_path, progress=False, jobs=2) == 2 + 2 * 164
    assert not (tmp_path / INCOMPLETE).exists()
    assert (tmp_path / "quaternions/KMgH3/R6/xyz/rot_5.xyz").stat().st_mtime_ns == first  # kept
    assert len(list((tmp_path / "quaternions/LiBeH3/R6/xyz").glob("*.xyz"))) == 164


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


def test_export_waits_for_no_one_while_a_build_holds_the_store(tmp_path, small_store):
    """An export while another process holds the store's lock is refused, naming it."""
    from c2np.store.lock import store_lock

    ds = c2np.open_dataset(small_store).filter(materials=["KMgH3"], radii=[6])
    with store_lock(small_store, "build"):
        with pytest.raises(C2NPError, match="in use by PID"):
            export_xyz(ds, tmp_path / "x", progress=False)
        with pytest.raises(C2NPError, match="in use by PID"):
            export_extxyz(ds, tmp_path / "x.extxyz", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.extxyz").exists()
