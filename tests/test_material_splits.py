"""The materials split scheme: stratified folds over materials, stores that hold a fold
out, the baselines and the harness on it, reports that keep schemes apart."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from c2np.cli import app
from c2np.config import BuildConfig, config_from_dict
from c2np.errors import C2NPError, ConfigError, StoreError
from c2np.evaluation.evaluator import Evaluator
from c2np.material_holdout import ALWAYS_TRAIN, material_folds
from c2np.materials.catalogue import bundled_dir, load_materials
from c2np.reporting.tables import runs_frame, summary_tables, write_report
from c2np.solvers.baselines import nearest_training_material, task1_predictions, task2_predictions
from c2np.solvers.runner import run_baseline
from c2np.store.build import build_store
from c2np.store.dataset import open_dataset

runner = CliRunner()
#: Three Li Pnma cells: fold 0 of 5 takes exactly one of them.
MATERIALS = ["LiBeH3", "LiMgH3", "LiVH3"]
CONFIG = BuildConfig(radii=(6, 8, 9, 10, 12), id_radii=(10,), ood_radii=(6, 12), split_scheme="materials")


@pytest.fixture(scope="module")
def bundled_table() -> pd.DataFrame:
    return pd.read_csv(bundled_dir() / "materials.csv", keep_default_na=False)


@pytest.fixture(scope="module")
def materials_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("materials") / "s"
    build_store(store, CONFIG, load_materials(names=MATERIALS), jobs=1, progress=False)
    return store


@pytest.mark.parametrize("seed", [0, 1])
def test_folds_are_stratified_and_every_test_group_is_trained_on(bundled_table, seed):
    folds = material_folds(bundled_table, 5, seed)
    assert set(folds) == set(bundled_table["name"])
    table = bundled_table.assign(fold=bundled_table["name"].map(folds))
    sizes = table["fold"].value_counts()
    assert ALWAYS_TRAIN not in sizes.index  # no space group or A-site species is unique
    assert sorted(sizes.index) == [0, 1, 2, 3, 4] and set(sizes) <= {16, 17}  # about 20 % each
    for f in range(5):
        test, train = table[table["fold"] == f], table[table["fold"] != f]
        assert set(test["spacegroup_number"]) <= set(train["spacegroup_number"])
        assert set(test["A"]) <= set(train["A"])
    for _, per_fold in table.groupby("spacegroup_number")["fold"]:
        counts = per_fold.value_counts().reindex(range(5), fill_value=0)
        assert counts.max() - counts.min() <= 1  # stratified: each space group spread evenly


def test_folds_are_deterministic_and_seeded(bundled_table):
    shuffled = bundled_table.sample(frac=1.0, random_state=3)
    assert material_folds(shuffled, 5, 0) == material_folds(bundled_table, 5, 0)
    assert material_folds(bundled_table, 5, 1) != material_folds(bundled_table, 5, 0)


def test_a_unique_space_group_is_always_trained_on():
    rows = pd.DataFrame({"name": ["LiBeH3", "LiMgH3", "KMgH3"], "spacegroup_number": [62, 62, 221],
                         "A": ["Li", "Li", "K"]})
    folds = material_folds(rows, 5, 0)
    assert folds["KMgH3"] == ALWAYS_TRAIN  # the only Pm-3m and the only K: never held out
    assert sorted(folds[m] for m in ("LiBeH3", "LiMgH3")) == [0, 1]


def test_config_keys_and_the_radius_scheme_fingerprint():
    # The paper's configuration keeps the fingerprint it had before split schemes existed.
    assert BuildConfig().fingerprint() == "ff707c2582e07faf8a9bb1a9f333b7aabd56fd29dd933b39f40bac57df92a351"
    cfg = config_from_dict({"splits": {"scheme": "materials", "fold": 2, "seed": 7}})
    assert cfg.scheme_name == "materials-fold2of5-seed7" and cfg.fingerprint() != BuildConfig().fingerprint()
    for data, match in [({"splits": {"scheme": "material"}}, "splits.scheme"),
                        ({"splits": {"scheme": "materials", "fold": 5}}, "splits.fold"),
                        ({"splits": {"folds": 1}}, "splits.folds"),
                        ({"splits": {"seed": 1.5}}, "splits.seed")]:
        with pytest.raises(ConfigError, match=match):
            config_from_dict(data)


def test_store_holds_out_every_radius_of_a_material(materials_store):
    ds = open_dataset(materials_store)
    assert ds.split_scheme == "materials-fold0of5-seed0"
    held = ds.heldout_materials
    assert len(held) == 1
    train = ds.split("train").index
    assert not set(train["material"]) & set(held)
    assert set(train["material"]) == set(MATERIALS) - set(held)
    unseen = ds.index[ds.index["material"].isin(held)]
    assert set(unseen["split"]) == {"unseen_train", "unseen_id", "unseen_ood"}
    assert (unseen.groupby("radius")["split"].first().to_dict()
            == {6: "unseen_ood", 8: "unseen_train", 9: "unseen_train", 10: "unseen_id", 12: "unseen_ood"})
    # same grids and counts as the radius scheme: 60 / 93 / 164 configurations per (material, R)
    per = ds.index.groupby(["material", "radius"]).size()
    assert set(per.xs(8, level="radius")) == {60} and set(per.xs(10, level="radius")) == {93}
    assert set(per.xs(6, level="radius")) == {164}
    counts = ds.manifest["counts"]
    assert counts["unseen_id"] == 93 and counts["unseen_ood"] == 2 * 164 and counts["unseen_train"] == 120
    assert counts["train"] == 2 * 120 and counts["total"] == len(ds.index)
    with pytest.raises(ValueError, match="unknown split 'unseen'"):
        ds.split("unseen")


def test_two_builds_are_byte_identical(materials_store, tmp_path):
    again = tmp_path / "again"
    build_store(again, CONFIG, load_materials(names=list(reversed(MATERIALS))), jobs=2, progress=False)
    first = json.loads((materials_store / "manifest.json").read_text())
    assert (again / "manifest.json").read_bytes() == (materials_store / "manifest.json").read_bytes()
    assert set(first["files"]) >= {"index.parquet", "config.toml", "materials.csv"}


def test_a_scheme_that_holds_out_nothing_is_refused(tmp_path):
    with pytest.raises(StoreError, match="holds out no material"):
        build_store(tmp_path / "s", CONFIG, load_materials(names=["LiBeH3", "KMgH3"]), progress=False)
    assert not (tmp_path / "s").exists()


def test_evaluator_and_baselines_on_unseen_materials(materials_store, small_store):
    ds = open_dataset(materials_store)
    held = ds.heldout_materials[0]
    ev = Evaluator(2, "unseen_id", ds)
    assert set(ev.targets()["material"]) == {held}
    with pytest.raises(C2NPError, match="unseen_id.*split scheme radius"):
        Evaluator(2, "unseen_id", small_store)

    # Task 1 template: the nearest training material's particle, with the test material's species
    source = nearest_training_material(ds, held)
    assert source != held and source in set(ds.split("train").index["material"])
    assert nearest_training_material(ds, source) == source
    samples = Evaluator(1, "unseen_id", ds).targets()
    (pred,) = task1_predictions(ds, samples, "template").values()
    cell = ds.unit_cell(held)
    assert set(pred.numbers) == set(cell.numbers)
    assert len(pred) == len(ds.canonical(source, 9))  # nearest training radius to 10 is 9

    # Task 2 template and mean copy training materials only
    frame, _ = task2_predictions(ds, ev.targets(), "template")
    lattices = Evaluator(2, "train", ds).targets().drop_duplicates("material")
    train_lattices = {tuple(np.round(r, 6)) for r in lattices[["a", "b", "c"]].to_numpy()}
    assert {tuple(np.round(r, 6)) for r in frame[["a", "b", "c"]].to_numpy()} <= train_lattices

    result = run_baseline("template", 2, "unseen_id", ds)
    assert result["split_scheme"] == "materials-fold0of5-seed0" and result["split"] == "unseen_id"
    assert result["n_samples"] == 93 and result["sample"] is None


def _result(scheme, split, joint):
    out = {"task": 2, "split": split, "model": "m", "seed": 0,
           "metrics": {"lattice_rmse": 1.0, "spacegroup_accuracy": joint, "joint_accuracy": joint}}
    if scheme is not None:
        out["split_scheme"] = scheme
    return out


def test_reports_never_mix_schemes(tmp_path):
    results = [_result(None, "id", 1.0), _result("materials-fold0of5-seed0", "id", 0.9),
               _result("materials-fold0of5-seed0", "unseen_id", 0.1)]
    runs = runs_frame(results)
    assert list(runs["scheme"]) == ["radius", "materials-fold0of5-seed0", "materials-fold0of5-seed0"]
    with pytest.raises(C2NPError, match="cannot share a table"):
        summary_tables(runs)
    text = write_report(results, tmp_path)
    assert "# Split scheme: radius" in text and "# Split scheme: materials-fold0of5-seed0" in text
    assert "| unseen ID |" in text and "| seen ID |" in text and "| ID |" in text
    raw = pd.read_csv(tmp_path / "raw.csv")
    assert len(raw) == 3 and set(raw["scheme"]) == {"radius", "materials-fold0of5-seed0"}


def test_cli_build_info_and_splits_table(materials_store, tmp_path):
    res = runner.invoke(app, ["info", str(materials_store)])
    assert res.exit_code == 0, res.output
    assert "unseen_ood" in res.output and "held-out materials (1" in res.output
    doc = tmp_path / "splits.md"
    doc.write_text("intro\n<!-- heldout-materials:begin -->\nstale table\n<!-- heldout-materials:end -->\nafter\n")
    res = runner.invoke(app, ["splits", str(materials_store), "--doc", str(doc)])
    assert res.exit_code == 0, res.output
    text = doc.read_text()
    held = open_dataset(materials_store).heldout_materials[0]
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("after\n")
    label = open_dataset(materials_store).materials.set_index("name").loc[held]
    assert f"| {held} | {label['spacegroup_symbol']} ({label['spacegroup_number']}) | Li |" in text
    assert "1 of 3 materials held out" in text
    res = runner.invoke(app, ["build", str(tmp_path / "x"), "--fold", "1", "-m", "LiBeH3"])
    assert res.exit_code == 2 and "--split-scheme materials" in res.output
    res = runner.invoke(app, ["build", str(tmp_path / "x"), "--split-scheme", "elements", "-m", "LiBeH3"])
    assert res.exit_code == 2 and "splits.scheme" in res.output


def test_train_predict_evaluate_on_the_materials_scheme(materials_store, tmp_path):
    pytest.importorskip("pytorch_lightning")
    tiny = ["--set", "model.hidden=16", "--set", "model.interactions=1", "--set", "train.epochs=1"]
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["train", "--task", "2", "--model", "cdvae", "--store", str(materials_store),
                              "--out", str(runs), "-q", *tiny])
    assert res.exit_code == 0, res.output
    info = json.loads((runs / "cdvae-task2-seed0" / "run.json").read_text())
    assert info["train_records"] == 2 * 2  # two training materials at R = 8, 9: nothing held out
    preds, out = tmp_path / "t2.csv", tmp_path / "r2.json"
    res = runner.invoke(app, ["predict", "--checkpoint", str(runs / "cdvae-task2-seed0" / "last.ckpt"),
                              "--split", "unseen_ood", "--store", str(materials_store), "--out", str(preds), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "--task", "2", "--split", "unseen_ood", "--predictions", str(preds),
                              "--store", str(materials_store), "--run-info",
                              str(runs / "cdvae-task2-seed0" / "run.json"), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["split_scheme"] == "materials-fold0of5-seed0" and result["n_samples"] == 2 * 164
    assert 0 <= result["metrics"]["spacegroup_accuracy"] <= 1


def test_overview_of_a_materials_scheme(tmp_path):
    scheme = "materials-fold0of5-seed0"
    results = [_result(scheme, split, joint) for split, joint in
               (("id", 1.0), ("ood", 0.75), ("unseen_id", 0.25), ("unseen_ood", 0.0))]
    text = write_report(results, tmp_path)
    assert "| task | metric | model | seen ID | seen OOD | unseen ID | unseen OOD |" in text
    assert "| 2 | joint_accuracy | m | 1 | 0.75 | 0.25 | 0 |" in text
