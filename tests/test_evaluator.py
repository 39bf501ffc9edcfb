
import numpy as np
import pandas as pd
import pytest
from ase.io import write

import c2np
from c2np.evaluation.evaluator import Evaluator, load_result
from c2np.evaluation.predictions import PredictionError, write_task1, write_task2
from c2np.errors import C2NPError


@pytest.fixture(scope="module")
def ds(small_store):
    return c2np.open_dataset(small_store)


@pytest.fixture(scope="module")
def perfect_t2(ds):
    return Evaluator(2, "ood", ds).targets()


def test_task2_perfect_file_scores_perfect(ds, perfect_t2, tmp_path):
    path = tmp_path / "p.csv"
    write_task2(path, perfect_t2)
    res = Evaluator(2, "ood", ds).evaluate(path, model="oracle", seed=0)
    assert res["metrics"]["joint_accuracy"] == 1.0 and res["metrics"]["lattice_rmse"] == 0.0
    assert set(res["per_radius"]) == {"6", "30"}
    assert res["store_fingerprint"] == ds.manifest["content_fingerprint"] and res["store_verified"]
    assert res["build_fingerprint"] == ds.manifest["fingerprint"]
    assert res["tolerances"] == {"length_rtol": 0.02, "angle_atol_deg": 1.0}
    assert res["n_samples"] == 3 * 2 * 164
    Evaluator.save(res, tmp_path / "r.json")
    assert load_result(tmp_path / "r.json")["model"] == "oracle"


def test_task2_targets_are_conventional_cells(ds, perfect_t2):
    """Targets carry the bundled label, in the conventional standard setting of its system."""
    labels = ds.materials.set_index("name")["spacegroup_number"]
    for material, rows in perfect_t2.groupby("material"):
        t = rows.iloc[0]
        assert t["spacegroup"] == labels[material]
        if t["spacegroup"] >= 195:  # cubic
            assert t["a"] == pytest.approx(t["b"]) == pytest.approx(t["c"])
        elif t["spacegroup"] >= 143:  # trigonal (hexagonal axes) and hexagonal
            assert t["gamma"] == pytest.approx(120.0) and t["a"] == pytest.approx(t["b"])
        elif t["spacegroup"] >= 75:  # tetragonal
            assert t["a"] == pytest.approx(t["b"]) and t["gamma"] == pytest.approx(90.0)
    assert perfect_t2["spacegroup"].nunique() >= 2


def test_task2_known_error(ds, perfect_t2):
    pred = perfect_t2.copy()
    pred["a"] *= 1.01
    res = Evaluator(2, "ood", ds).evaluate(pred)
    expected = np.sqrt(np.mean((0.01 * perfect_t2["a"]) ** 2) / 6)
    assert res["metrics"]["lattice_rmse"] == pytest.approx(expected)
    assert res["metrics"]["joint_accuracy"] == 1.0
    pred["spacegroup"] = 1
    assert Evaluator(2, "ood", ds).evaluate(pred)["metrics"]["joint_accuracy"] == 0.0


def _t1_predictions(ds, split):
    t = Evaluator(1, split, ds).targets()
    return {int(r.config_id): ds.canonical(r.material, int(r.radius)) for r in t.itertuples()}


def test_task1_perfect_parquet_and_extxyz(ds, tmp_path):
    preds = _t1_predictions(ds, "id")
    write_task1(tmp_path / "p.parquet", preds)
    frames = []
    for cid, atoms in preds.items():
        a = atoms.copy()
        a.info = {"config_id": cid}
        frames.append(a)
    write(tmp_path / "p.extxyz", frames, format="extxyz")
    for path in (tmp_path / "p.parquet", tmp_path / "p.extxyz"):
        res = Evaluator(1, "id", ds).evaluate(path)
        m = res["metrics"]
        assert res["n_samples"] == 3
        assert m["rmsd"] < 1e-8 and m["hausdorff"] < 1e-8 and m["rdf_error"] == 0
        assert m["volume_ratio_error"] < 1e-8 and res["certificate"]["exact_embedding_fraction"] == 1.0


def test_task1_rotated_prediction_is_still_perfect(ds):
    from scipy.spatial.transform import Rotation

    preds = _t1_predictions(ds, "id")
    rot = Rotation.from_euler("xyz", [30, 40, 50], degrees=True).as_matrix()
    for a in preds.values():
        a.positions = a.positions @ rot.T + 5.0
    res = Evaluator(1, "id", ds).evaluate(preds)
    assert res["metrics"]["rmsd"] < 1e-8


def test_task1_coincident_atoms_are_scored_and_counted(ds, tmp_path):
    """A model may put two atoms on one site (FlowMM seed 2 did so in 131 of 486 ID
    particles): the file is scored, the extra atom costs, and `validity` counts the particle."""
    preds = _t1_predictions(ds, "id")
    cid = next(iter(preds))
    preds[cid] = preds[cid] + preds[cid][:1]
    write_task1(tmp_path / "p.parquet", preds)
    res, scores = Evaluator(1, "id", ds).evaluate_with_scores(tmp_path / "p.parquet")
    row = scores.set_index("config_id").loc[cid]
    assert row["min_distance"] == 0 and row["atom_count_error"] > 0 and row["rmsd"] > 0.01
    assert (scores.loc[scores.config_id != cid, "min_distance"] > 1.0).all()
    assert res["validity"]["coincident_fraction"] == pytest.approx(1 / 3)
    assert res["validity"]["valid_fraction"] == pytest.approx(2 / 3)
    # two of the particle's atoms are closer than 0.5 A, none of the others'
    assert row["close_atom_fraction"] == pytest.approx(2 / len(preds[cid]))
    assert res["validity"]["close_atom_fraction"] == pytest.approx(2 / len(preds[cid]) / 3)


def test_task1_slow_sample_says_which_and_where(ds, monkeypatch, capfd):
    """A sample scored longer than SLOW_SAMPLE_S names itself, and a second later its
    stacks follow, on stderr (a stuck one held back whole splits on the GPU machine)."""
    import time

    from c2np.evaluation import evaluator as E

    real = E.task1_metrics
    calls = []

    def slow_on_first(*args):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(1.6)
        return real(*args)

    monkeypatch.setattr(E, "SLOW_SAMPLE_S", 0.2)
    monkeypatch.setattr(E, "task1_metrics", slow_on_first)
    res = Evaluator(1, "id", ds).evaluate(_t1_predictions(ds, "id"))
    err = capfd.readouterr().err
    assert res["metrics"]["rmsd"] < 1e-8
    assert err.count("still running after 0.2 s") == 1
    assert "Timeout" in err and "slow_on_first" in err  # faulthandler's stacks
    # the largest particle is scored first
    t = Evaluator(1, "id", ds).targets()
    sizes = {int(r.config_id): len(ds.canonical(r.material, int(r.radius))) for r in t.itertuples()}
    assert f"config_id {max(sizes, key=sizes.get)} still" in err


@pytest.mark.parametrize("mutate,match", [
    (lambda f: f.iloc[1:], "missing config_id"),
    (lambda f: pd.concat([f, f.iloc[:2]]), "duplicate config_id"),
    (lambda f: f.assign(b=f["b"].where(f.index != 3, np.nan)), "NaN"),
    (lambda f: f.assign(a=-f["a"]), "negative"),
    (lambda f: f.assign(beta=200.0), "angles"),
    (lambda f: f.assign(spacegroup=231), "1-230"),
    (lambda f: f.drop(columns=["gamma"]), "missing column"),
    (lambda f: f.assign(config_id=f["config_id"] + 10**7), "not in this split"),
])
def test_bad_task2_predictions(ds, perfect_t2, tmp_path, mutate, match):
    path = tmp_path / "bad.csv"
    mutate(perfect_t2.copy()).to_csv(path, index=False)
    with pytest.raises(PredictionError, match=match):
        Evaluator(2, "ood", ds).evaluate(path)


def test_bad_task1_predictions(ds, tmp_path):
    preds = _t1_predictions(ds, "id")
    path = tmp_path / "p.parquet"
    write_task1(path, preds)
    frame = pd.read_parquet(path)
    frame.loc[0, "Z"] = 150
    frame.to_parquet(tmp_path / "z.parquet")
    with pytest.raises(PredictionError, match="unknown atomic numbers"):
        Evaluator(1, "id", ds).evaluate(tmp_path / "z.parquet")
    sym = frame.drop(columns=["Z"]).assign(symbol="Xq")
    sym.to_parquet(tmp_path / "s.parquet")
    with pytest.raises(PredictionError, match="unknown element symbols"):
        Evaluator(1, "id", ds).evaluate(tmp_path / "s.parquet")
    nan = pd.read_parquet(path)
    nan.loc[5, "x"] = np.nan
    nan.to_parquet(tmp_path / "n.parquet")
    with pytest.raises(PredictionError, match="NaN"):
        Evaluator(1, "id", ds).evaluate(tmp_path / "n.parquet")
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(PredictionError, match="unsupported (Task 1 )?file type"):
        Evaluator(1, "id", ds).evaluate(tmp_path / "p.json")
    write(tmp_path / "noid.extxyz", list(preds.values()), format="extxyz")
    with pytest.raises(PredictionError, match="no config_id"):
        Evaluator(1, "id", ds).evaluate(tmp_path / "noid.extxyz")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(PredictionError, match="cannot read"):
        Evaluator(1, "id", ds).evaluate(tmp_path / "broken.parquet")


def test_evaluator_rejects_bad_arguments(ds):
    with pytest.raises(C2NPError):
        Evaluator(3, "id", ds)
    with pytest.raises(C2NPError):
        Evaluator(1, "test", ds)


def test_cli_evaluate_and_report(small_store, perfect_t2, tmp_path):
    from typer.testing import CliRunner

    from c2np.cli import app

    runner = CliRunner()
    results = []
    # four learned models: Table 5 scores are shown from four on (c2np.reporting.tables)
    for model, scale in (("good", 1.0), ("fine", 1.02), ("bad", 1.05), ("worse", 1.2)):
        for seed in (0, 1):
            pred = perfect_t2.copy()
            pred["a"] *= scale + 0.001 * seed
            path = tmp_path / f"{model}{seed}.csv"
            pred.to_csv(path, index=False)
            out = tmp_path / f"{model}{seed}.json"
            res = runner.invoke(app, ["evaluate", "--task", "2", "--split", "ood", "--predictions", str(path),
                                      "--store", str(small_store), "--out", str(out), "--model", model,
                                      "--seed", str(seed), "-q"])
            assert res.exit_code == 0, res.output
            results.append(str(out))
    res = runner.invoke(app, ["report", *results, "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| **" not in md.split("Table 5")[0].splitlines()[0]
    raw = pd.read_csv(tmp_path / "rep" / "raw.csv").set_index("model")
    assert raw.loc["good", "lattice_rmse_mean"] < raw.loc["bad", "lattice_rmse_mean"] < raw.loc["worse", "lattice_rmse_mean"]
    norm = pd.read_csv(tmp_path / "rep" / "normalised.csv").set_index("model")
    assert norm.loc["good", "lattice_rmse_mean"] > 0.5 > norm.loc["worse", "lattice_rmse_mean"]
    assert norm.loc["good", "joint_accuracy_mean"] == pytest.approx(0.5 + 0.5 * (1 - 0.5), abs=0.5)
    assert "\\textbf" in (tmp_path / "rep" / "report.tex").read_text()
    bad = tmp_path / "bad.csv"
    perfect_t2.iloc[5:].to_csv(bad, index=False)
    res = runner.invoke(app, ["evaluate", "--task", "2", "--split", "ood", "--predictions", str(bad),
                              "--store", str(small_store)])
    assert res.exit_code == 2 and "missing config_id" in res.output


def test_a_source_checkout_still_records_its_release():
    """The GPU machines run the checkout from PYTHONPATH, uninstalled: the version that
    result JSONs carry must then still name the release (pyproject.toml), not 'unknown'."""
    import tomllib
    from pathlib import Path

    import c2np

    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
        release = tomllib.load(f)["project"]["version"]
    assert c2np._source_version() == f"{release}+src"


def test_task1_means_follow_target_order_whatever_the_dispatch(ds):
    """Samples are scored largest first, in one or two processes; the means still sum
    the per-sample values in target order, so the result does not depend on the dispatch."""
    from c2np.metrics.structure import task1_metrics

    ev = Evaluator(1, "id", ds)
    preds = _t1_predictions(ds, "id")
    rng = np.random.default_rng(0)
    for a in preds.values():
        a.positions = a.positions + rng.normal(0, 0.1, a.positions.shape)
    one, two = ev.evaluate(preds, jobs=1), ev.evaluate(preds, jobs=2)
    for res in (one, two):
        res.pop("seconds")
    assert one == two
    rows = []
    for r in ev.targets().itertuples():
        ref, pred = ds.canonical(r.material, int(r.radius)), preds[int(r.config_id)]
        rows.append(task1_metrics(pred.positions, pred.numbers, ref.positions, ref.numbers))
    for key in ("rmsd", "hausdorff", "rdf_error"):
        assert one["metrics"][key] == float(pd.Series([m[key] for m in rows]).mean())
    assert one["metrics"]["rmsd"] > 0.01


def _blas_threads(_):
    from threadpoolctl import threadpool_info

    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=0)


def test_scoring_workers_share_the_cores_instead_of_oversubscribing():
    """Every pool worker of map_with_progress (the scoring's -j) caps its BLAS threads to
    its share of the cores; left alone, numpy's OpenBLAS starts one thread per core in each."""
    import os

    from c2np.progress import map_with_progress, worker_threads

    cores = os.cpu_count() or 1
    for jobs in (2, max(2, cores)):
        got = map_with_progress(_blas_threads, range(4), 4, "threads", jobs=jobs, enabled=False, chunksize=1)
        assert set(got) == {worker_threads(jobs)} and worker_threads(jobs) == max(1, cores // jobs)


def test_per_sample_scores_are_the_rows_behind_the_means(ds, perfect_t2, tmp_path):
    """One broken particle among good ones moves the split's mean; the per-sample rows name
    it, and their mean is the result's (Task 1). Task 2's rows flag the one wrong sample."""
    ev = Evaluator(1, "id", ds)
    preds = _t1_predictions(ds, "id")
    broken = sorted(preds)[1]
    preds[broken].positions = preds[broken].positions * 0.5  # atoms squeezed together
    result, rows = ev.evaluate_with_scores(preds)
    assert list(rows.columns[:3]) == ["config_id", "material", "radius"]
    assert rows["config_id"].tolist() == ev.targets()["config_id"].tolist()
    worst = rows.loc[rows["lev_error"].idxmax()]
    assert worst["config_id"] == broken and worst["lev_error"] > 1
    assert (rows.loc[rows["config_id"] != broken, "rmsd"] < 1e-8).all()
    for key in ("rmsd", "lev_error", "rdf_error"):
        assert result["metrics"][key] == pytest.approx(rows[key].mean())
    pred = perfect_t2.copy()
    pred.loc[7, "spacegroup"] = 1
    pred.loc[9, "a"] *= 1.5
    result2, rows2 = Evaluator(2, "ood", ds).evaluate_with_scores(pred)
    assert rows2["joint_correct"].sum() == len(pred) - 2
    assert not rows2.loc[7, "spacegroup_correct"] and rows2.loc[7, "lattice_correct"]
    assert not rows2.loc[9, "lattice_correct"] and rows2.loc[9, "lattice_rmse"] > 0
    assert result2["metrics"]["joint_accuracy"] == pytest.approx(rows2["joint_correct"].mean())
    assert result2["metrics"]["lattice_rmse"] == pytest.approx(np.sqrt((rows2["lattice_rmse"] ** 2).mean()))


def test_cli_evaluate_writes_per_sample_scores(small_store, perfect_t2, tmp_path):
    from typer.testing import CliRunner

    from c2np.cli import app

    path = tmp_path / "p.csv"
    pred = perfect_t2.copy()
    pred.loc[0, "spacegroup"] = 1
    pred.to_csv(path, index=False)
    args = ["evaluate", "--task", "2", "--split", "ood", "--predictions", str(path), "--store", str(small_store), "-q"]
    runner = CliRunner()
    res = runner.invoke(app, [*args, "--scores", str(tmp_path / "s.parquet"), "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    rows = pd.read_parquet(tmp_path / "s.parquet")
    assert len(rows) == len(pred) and rows["joint_correct"].sum() == len(pred) - 1
    assert rows.loc[rows["config_id"] == pred.loc[0, "config_id"], "spacegroup_correct"].item() is False
    res = runner.invoke(app, [*args, "--scores", str(tmp_path / "s.txt")])
    assert res.exit_code == 2 and "--scores takes a .parquet or .csv" in res.output


def test_a_task1_scoring_cut_off_resumes_where_it_stopped_and_gives_the_same_result(ds, tmp_path, monkeypatch):
    """`c2np evaluate --resume`: a scoring killed after some chunks keeps them; the next call
    scores only the rest, and the result and rows equal one uninterrupted call's."""
    from c2np.evaluation import evaluator as E
    from c2np.training.chunks import ChunkFolder, chunk_dir

    monkeypatch.setattr(E, "ROWS_PER_CHUNK", 2)  # 3 ID samples: chunks of 2 and 1
    preds = _t1_predictions(ds, "id")
    rng = np.random.default_rng(1)
    for a in preds.values():
        a.positions = a.positions + rng.normal(0, 0.2, a.positions.shape)
    path = tmp_path / "p.parquet"
    write_task1(path, preds)
    ev = Evaluator(1, "id", ds)
    whole, whole_rows = ev.evaluate_with_scores(path)

    scored = []
    real = E._score_task1

    def dies_at_the_third(args):
        if len(scored) == 2:
            raise KeyboardInterrupt("the deadline")
        scored.append(args[0])
        return real(args)

    out = tmp_path / "r.json"
    monkeypatch.setattr(E, "_score_task1", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate_with_scores(path, resume=out)
    assert sorted(p.name for p in chunk_dir(out).glob("batch-*")) == ["batch-00000.parquet"]

    def counts(args):
        scored.append(args[0])
        return real(args)

    monkeypatch.setattr(E, "_score_task1", counts)
    resumed, rows = ev.evaluate_with_scores(path, resume=out)
    assert len(scored) == 3 and scored[2] not in scored[:2]  # only the third sample, once
    # the rows stay until the result is on disk: a kill before the save loses nothing
    assert chunk_dir(out).is_dir()
    ev.save(resumed, out)
    assert not chunk_dir(out).exists() and E.load_result(out)["resumed_samples"] == 2
    other = tmp_path / "x.json"  # a folder of that name that is not a scoring's rows is kept
    ChunkFolder(other, {"batches": 1, "split": "id"}).open()
    ev.save(resumed, other)
    assert chunk_dir(other).is_dir()
    assert resumed.pop("resumed_samples") == 2
    for res in (whole, resumed):
        res.pop("seconds")
    assert resumed == whole and whole["metrics"]["rmsd"] > 0.01
    pd.testing.assert_frame_equal(rows, whole_rows)

    # the kept rows belong to these predictions: other ones are refused, and say which key
    monkeypatch.setattr(E, "_score_task1", dies_at_the_third)
    scored.clear()
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate_with_scores(path, resume=out)
    preds[sorted(preds)[0]].positions += 0.1
    write_task1(path, preds)
    with pytest.raises(C2NPError, match="another scoring \\(predictions_sha256"):
        ev.evaluate_with_scores(path, resume=out)
    with pytest.raises(C2NPError, match="from a file"):
        ev.evaluate_with_scores(preds, resume=out)


def test_cli_evaluate_resume_needs_out(small_store, tmp_path):
    from typer.testing import CliRunner

    from c2np.cli import app

    res = CliRunner().invoke(app, ["evaluate", "--task", "1", "--split", "id", "--predictions",
                                   str(tmp_path / "p.parquet"), "--store", str(small_store), "--resume", "-q"])
    assert res.exit_code != 0 and "--resume keeps the scored samples beside the result" in res.output
