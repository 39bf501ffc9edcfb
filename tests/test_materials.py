from collections import Counter

import numpy as np
import pandas as pd
import pytest
from ase.formula import Formula

from c2np.carve import check_fits
from c2np.materials.catalogue import bundled_dir, describe, load_materials
from c2np.materials.prototypes import PROTOTYPES, candidates
from c2np.materials.selection import compositions
from c2np.symmetry import space_group


@pytest.fixture(scope="module")
def table():
    return pd.read_csv(bundled_dir() / "materials.csv", keep_default_na=False)


def test_composition_statistics_follow_the_paper(table):
    assert len(table) == 81 and table["name"].is_unique
    a, b = Counter(table["A"]), Counter(table["B"])
    assert len(a) == 10 and len(b) == 27
    assert [a["Li"], a["Na"], a["K"]] == [21, 16, 14]
    assert a.most_common(3) == [("Li", 21), ("Na", 16), ("K", 14)]
    assert b["V"] == b["Rh"] == 8 and b["Cu"] == b["Zn"] == 6
    assert max(v for k, v in b.items() if k not in ("V", "Rh", "Cu", "Zn")) < 6
    assert {"ZrCdH3", "LiBeH3", "LiCaH3", "BaMnH3"} <= set(table["name"])
    assert sorted(table["name"]) == [n for n, _, _ in compositions()]


def test_table_agrees_with_cif_files_and_has_provenance(table):
    mats = {m.name: m for m in load_materials()}
    for row in table.to_dict("records"):
        m = mats[row["name"]]
        d = describe(m.name, m.cell)
        assert d["formula"] == row["formula"]
        assert Formula(row["formula"]).count() == Formula(f"{row['A']}{row['B']}H3").count()
        assert d["spacegroup_number"] == row["spacegroup_number"]
        np.testing.assert_allclose([d[k] for k in "abc"], [row[k] for k in "abc"], atol=1e-5)
        assert row["source"] and "CHGNet" in row["method"] and row["prototype"]
        assert np.isfinite(row["energy_per_atom_eV"])


def test_every_bundled_cell_hosts_the_largest_sphere():
    for m in load_materials():
        check_fits(m.cell, 30, (20, 20, 20), (0.5, 0.5, 0.5), 5.0, m.name)


def test_prototypes_have_their_space_groups():
    built = candidates("Na", "Mg")
    assert [p.name for p, _ in built] == [p.name for p in PROTOTYPES]
    for proto, atoms in built:
        assert space_group(atoms).number == proto.spacegroup
        assert atoms.symbols.formula.reduce()[0].count() == {"Na": 1, "Mg": 1, "H": 3}


@pytest.mark.relax
def test_chgnet_relaxation_reproduces_a_bundled_cell(tmp_path):
    pytest.importorskip("chgnet", reason="CHGNet not installed (pip install 'c2np[relax]')")
    from c2np.materials.relax import relax_composition

    result = relax_composition("KMgH3", "K", "Mg")
    (ref,) = load_materials(names=["KMgH3"])
    assert space_group(result.atoms).number == space_group(ref.cell).number
    np.testing.assert_allclose(result.atoms.cell.cellpar(), ref.cell.cell.cellpar(), rtol=2e-3)
