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


@pytest.fixture(scope="module")
def checks(table):
    from c2np.materials.validity import check_cell

    mats = {m.name: m for m in load_materials()}
    return {r["name"]: check_cell(mats[r["name"]].cell, r["A"], r["B"])
            for r in table.to_dict("records")}


def test_every_label_is_stable_over_the_policy_range(table):
    from c2np.symmetry import LABEL_SYMPREC_RANGE

    lo, hi = LABEL_SYMPREC_RANGE
    assert lo <= 1e-3 and hi >= 0.02  # the floor: no label on a < 0.02 A distortion
    for m, row in zip(load_materials(), table.to_dict("records")):
        assert space_group(m.cell, lo).number == space_group(m.cell, hi).number \
            == row["spacegroup_number"], m.name


def test_validity_columns_match_a_fresh_check(table, checks):
    for row in table.to_dict("records"):
        c = checks[row["name"]]
        assert c.label_stable, row["name"]
        assert (row["b_coordination"], bool(row["corner_sharing"]), row["octahedral_cation"]) \
            == (c.b_coordination, c.corner_sharing, c.octahedral_cation), row["name"]
        np.testing.assert_allclose(pd.to_numeric(pd.Series([row["b_h_min"], row["tilt"],
                                                            row["symprec_max"]]), errors="coerce"),
                                   [c.b_h_min, c.tilt, c.symprec_max], rtol=1e-3,
                                   atol=1e-6, equal_nan=True, err_msg=row["name"])


def test_every_non_perovskite_cell_carries_a_reason(table, checks):
    unexplained = [n for n, c in checks.items() if not c.octahedral
                   and "not a perovskite" not in table.set_index("name").loc[n, "selection"]]
    assert unexplained == []
    octahedral = [n for n, c in checks.items() if c.octahedral]
    assert len(octahedral) >= 50


def test_lisrh3_is_the_known_inverse_perovskite(checks, table):
    # SrLiH3: Li on the octahedral site, cubic Pm-3m.
    c = checks["LiSrH3"]
    assert c.octahedral_cation == "Li" and c.octahedral and c.spacegroup_number == 221


def test_validity_of_textbook_structures():
    from c2np.materials.validity import check_cell

    built = dict(candidates("Ba", "Ni"))
    by_name = {p.name: a for p, a in built.items()}
    cubic = check_cell(by_name["cubic-Pm-3m"], "Ba", "Ni")
    assert (cubic.b_coordination, cubic.corner_sharing, cubic.spacegroup_number) == (6, True, 221)
    assert cubic.tilt == pytest.approx(0, abs=1e-9) and cubic.label_stable
    assert check_cell(by_name["orthorhombic-Pnma"], "Ba", "Ni").tilt > 0.1
    # 2H stacking: six H around Ni, but the octahedra share faces.
    hexa = check_cell(by_name["hexagonal-2H-P6_3/mmc"], "Ba", "Ni")
    assert hexa.b_coordination == 6 and not hexa.corner_sharing and not hexa.octahedral


def test_tolerance_factor_uses_shannon_radii():
    from c2np.materials.validity import H_MINUS_RADIUS, tolerance_factor

    # Na+ (XII) 1.39 A, Mg2+ (VI) 0.72 A.
    expect = (1.39 + H_MINUS_RADIUS) / (np.sqrt(2) * (0.72 + H_MINUS_RADIUS))
    assert tolerance_factor("Na", "Mg") == pytest.approx(expect)
    assert np.isnan(tolerance_factor("Zr", "Cd"))  # no charge-balanced Zr assignment


def test_selection_rule_prefers_perovskite_then_symmetry():
    from c2np.materials.relax import PEROVSKITE_WINDOW, SYMMETRY_WINDOW, choose

    def cand(e, octa=True, rot=8, n=20, sg=62, fits=True):
        return {"energy_per_atom_eV": e, "octahedral": octa, "rotations": rot,
                "atoms_per_cell": n, "spacegroup": sg, "fits": fits}

    tilted = cand(-1.0)
    cubic = cand(-1.0 + SYMMETRY_WINDOW / 2, rot=48, n=5, sg=221)
    assert choose({"Pnma": tilted, "cubic": cubic})[0] == "cubic"
    far = cand(-1.0 + 2 * SYMMETRY_WINDOW, rot=48, n=5, sg=221)
    assert choose({"Pnma": tilted, "cubic": far})[0] == "Pnma"
    flat = cand(-1.0 - PEROVSKITE_WINDOW / 2, octa=False)
    win, why = choose({"flat": flat, "Pnma": tilted})
    assert win == "Pnma" and "perovskite preferred" in why
    deep = cand(-1.0 - 2 * PEROVSKITE_WINDOW, octa=False)
    win, why = choose({"deep": deep, "Pnma": tilted})
    assert win == "deep" and "not a perovskite" in why
    small = cand(-2.0, rot=48, n=5, sg=221, fits=False)
    win, why = choose({"small": small, "Pnma": tilted})
    assert win == "Pnma" and "too small" in why


def test_materials_check_cli(tmp_path):
    import json

    from typer.testing import CliRunner

    from c2np.cli import app

    out = tmp_path / "check.json"
    res = CliRunner().invoke(app, ["materials", "check", "--format", "json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert len(rows) == 81 and all(r["label_stable"] for r in rows)
    assert CliRunner().invoke(app, ["materials", "check", "--format", "xml"]).exit_code == 2
