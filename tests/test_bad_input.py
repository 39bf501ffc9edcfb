import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from c2np.config import BuildConfig
from c2np.errors import C2NPError, CarveError, InvalidStructureError, UnknownMaterialError
from c2np.materials.catalogue import bundled_dir, load_materials
from c2np.materials.cif import check_material_name, read_cif, validate_cell
from c2np.store.build import build_store

GOOD = (bundled_dir() / "cifs" / "KMgH3.cif").read_text()


def cif(tmp_path, name, text):
    path = tmp_path / f"{name}.cif"
    path.write_text(text)
    return path


def test_malformed_cif_names_the_file(tmp_path):
    with pytest.raises(InvalidStructureError, match=r"junk\.cif: not a valid CIF"):
        read_cif(cif(tmp_path, "junk", "this is not a CIF file\n_cell_length_a\n"))


def test_truncated_cif(tmp_path):
    with pytest.raises(InvalidStructureError, match="truncated.cif"):
        read_cif(cif(tmp_path, "truncated", GOOD[: len(GOOD) // 3]))


def test_nan_in_cif(tmp_path):
    text = GOOD.replace(GOOD.split("_cell_length_a")[1].split("\n")[0], "       nan")
    with pytest.raises(InvalidStructureError, match="nan_cell.cif"):
        read_cif(cif(tmp_path, "nan_cell", text))


def test_unknown_element_in_cif(tmp_path):
    text = GOOD.replace("  K   K1  ", "  Qq  Qq1 ")
    assert text != GOOD
    with pytest.raises(InvalidStructureError, match="unknown.cif"):
        read_cif(cif(tmp_path, "unknown", text))


def test_missing_file(tmp_path):
    with pytest.raises(InvalidStructureError, match="no such CIF"):
        read_cif(tmp_path / "absent.cif")


@pytest.mark.parametrize("cell,match", [
    (np.zeros((3, 3)), "volume"),
    (np.diag([4.0, 4.0, -4.0]), "negative"),
    (np.diag([4.0, np.nan, 4.0]), "NaN"),
    (np.diag([4.0, np.inf, 4.0]), "infinite"),
])
def test_degenerate_cells(cell, match):
    atoms = Atoms("K", positions=[[0, 0, 0]], cell=np.diag([4.0, 4.0, 4.0]), pbc=True)
    atoms.cell[:] = cell
    with pytest.raises(InvalidStructureError, match=match):
        validate_cell(atoms, "test-cell")


def test_huge_cell_is_refused_before_tiling(tmp_path):
    big = Atoms("Po", cell=np.eye(3) * 2.0, pbc=True).repeat((11, 10, 10))  # 1100 atoms
    path = tmp_path / "big.cif"
    write(path, big, format="cif")
    with pytest.raises(InvalidStructureError, match=r"big.cif: 1100 atom sites"):
        read_cif(path)


def test_overlapping_atoms():
    atoms = Atoms("KK", positions=[[0, 0, 0], [0.1, 0, 0]], cell=np.eye(3) * 4, pbc=True)
    with pytest.raises(InvalidStructureError, match="overlapping"):
        validate_cell(atoms, "dup")


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x\\y", "a b"])
def test_material_names_with_path_separators_are_refused(name):
    with pytest.raises(InvalidStructureError, match="invalid material name"):
        check_material_name(name)


def test_unknown_material_is_named():
    with pytest.raises(UnknownMaterialError, match="FooH3"):
        load_materials(names=["FooH3", "KMgH3"])


def test_radius_that_does_not_fit_names_material_and_radius(tmp_path):
    small = Atoms("Po", cell=np.eye(3) * 2.5, pbc=True)
    write(tmp_path / "Tiny.cif", small, format="cif")
    mats = load_materials(tmp_path)
    with pytest.raises(CarveError, match=r"Tiny.*R=30"):
        build_store(tmp_path / "store", BuildConfig(), mats, progress=False)
    assert not (tmp_path / "store").exists()  # nothing half-written


def test_a_bad_cif_in_a_user_directory_stops_before_writing(tmp_path):
    cifs = tmp_path / "cifs"
    cifs.mkdir()
    cif(cifs, "Good", GOOD)
    cif(cifs, "Bad", GOOD[:200])
    with pytest.raises(InvalidStructureError, match="Bad.cif"):
        load_materials(cifs)
    with pytest.raises(InvalidStructureError, match="not a directory"):
        load_materials(tmp_path / "cifs" / "Good.cif")


def test_every_error_is_a_c2np_error():
    for exc in (InvalidStructureError, CarveError, UnknownMaterialError):
        assert issubclass(exc, C2NPError)


def test_empty_cif_directory(tmp_path):
    with pytest.raises(InvalidStructureError, match="no \\*.cif files"):
        load_materials(tmp_path)
