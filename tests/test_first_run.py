"""`c2np run` as a first experience, the report tables, and the small CLI fixes of issue 19."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from c2np.cli import app
from c2np.metrics import METRICS
from c2np.reporting.tables import LABELS, rich_tables, table5_reason, write_report

runner = CliRunner()


def test_run_scores_every_reference_row_on_the_subset(small_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["run", str(small_store), "--subset", "2", "--per-group", "1", "-j", "1"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "c2np-run"  # the default: not the tracked results/
    names = sorted(p.name for p in out.glob("*.json"))
    assert len(names) == 10 and "mean-task2-ood.json" in names and "analytic-task1-id.json" in names
    first = json.loads((out / "analytic-task2-id.json").read_text())
    materials = first["sample"]["materials"]
    assert len(materials) == 2 and first["sample"]["per_material_radius"] == 1
    # every Task 2 row is scored on the same configurations: the rows compare like with like
    assert {json.loads((out / f"{m}-task2-id.json").read_text())["n_samples"]
            for m in ("analytic", "template", "mean")} == {2}
    # the plan, then one line per stage (model, task, split) even without a terminal
    assert f"subset: 2 materials ({', '.join(materials)})" in res.output and "estimate:" in res.output
    assert "analytic · task 1 · OOD: scoring task 1: 4/4 done" in res.output
    assert "template · task 2 · ID: 2 samples in" in res.output
    # no terminal: the tables come as Markdown, with the samples column and readable names
    assert "| model | split | samples | RMSD (A) ↓ |" in res.output
    assert re.search(r"\| analytic \| OOD \| 4 \(2 materials\) \| \*\*\d\.\d+e-1\d\*\* \|", res.output)
    assert "Task 1 ID, Task 1 OOD, Task 2 ID, Task 2 OOD: Table 5 scores not shown" in res.output
    assert res.output.count("Table 5 scores not shown") == 1 and "here 0" in res.output
    assert "Optimal rotation" not in res.output
    assert not (out / "report" / "normalised.csv").exists()
    # the analytic Task 1 row is the construction itself
    analytic = json.loads((out / "analytic-task1-ood.json").read_text())
    assert analytic["metrics"]["rmsd"] < 1e-9


def test_run_quiet_prints_only_the_table(small_store, tmp_path):
    res = runner.invoke(app, ["run", str(small_store), "--out", str(tmp_path / "r"), "--subset", "1",
                              "--per-group", "1", "-j", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert "estimate" not in res.output and " · " not in res.output
    assert res.output.lstrip().startswith("## Task 1: raw metrics")


def _result(task, split, model, seed, metrics, n=10, sample=None):
    return {"task": task, "split": split, "model": model, "seed": seed, "n_samples": n,
            "sample": sample, "metrics": metrics}


def _t2(model, seed, rmse, acc, split="id"):
    return _result(2, split, model, seed, {"lattice_rmse": rmse, "length_rmse": rmse / 2,
                                           "spacegroup_accuracy": acc, "joint_accuracy": acc})


def test_table5_needs_four_learned_models(tmp_path):
    few = [_t2("analytic", 0, 0.0, 1.0), _t2("mean", 0, 3.0, 0.5), _t2("NetA", 0, 2.0, 0.6)]
    assert "here 1 (NetA)" in table5_reason(["analytic", "mean", "NetA"])
    text = write_report(few, tmp_path / "few")
    assert "Table 5 scores not shown" in text and "median/MAD" not in text
    assert not (tmp_path / "few/normalised.csv").exists()
    many = few + [_t2(f"Net{k}", s, 1.0 + i + 0.1 * s, 0.6) for i, k in enumerate("BCD") for s in range(2)]
    assert table5_reason([r["model"] for r in many]) is None
    text = write_report(many, tmp_path / "many")
    assert "Table 5 scores" in text and "not shown" not in text
    norm = pd.read_csv(tmp_path / "many/normalised.csv")
    assert set(norm["model"]) == {"analytic", "mean", "NetA", "NetB", "NetC", "NetD"}
    # a later report with too few models removes the stale scores
    write_report(few, tmp_path / "many")
    assert not (tmp_path / "many/normalised.csv").exists()


def test_raw_table_columns_follow_the_registry(tmp_path):
    t1 = {m: 0.5 for m, info in METRICS.items() if info.task == 1}
    results = [_result(1, "id", "template", 0, t1, n=36, sample={"materials": ["A", "B"], "seed": 0}),
               _result(1, "ood", "template", 0, t1, n=486),
               _t2("mean", 0, 3.0, 0.5), _t2("mean", 1, 3.2, 0.5),
               _result(2, "ood", "analytic", 0, {"lattice_rmse": 0.4, "joint_accuracy": 0.9}, n=6480,
                       sample={"per_material_radius": 20, "seed": 0})]
    text = write_report(results, tmp_path)
    header = next(line for line in text.splitlines() if line.startswith("| model | split | samples | RMSD"))
    for m in t1:
        assert LABELS[m] in header  # every Task 1 metric of the registry, under its label
    assert "| template | ID | 36 (2 materials) |" in text and "| template | OOD | 486 |" in text
    assert "| mean | ID | 10 | **3.1 ± 0.14** |" in text  # mean ± std over two seeds, alone: best
    assert "| analytic | OOD | 6,480 (20/group) | **0.4** |" in text
    assert "vol. ratio |" in header  # shown but not ranked: no arrow, never bold
    raw = pd.read_csv(tmp_path / "raw.csv")
    assert {"samples", "rmsd_mean", "joint_accuracy_std"} <= set(raw.columns)
    tables = [t for t in rich_tables(results) if not isinstance(t, str)]
    assert [t.title for t in tables] == ["Task 1: raw metrics (mean ± std over seeds)",
                                          "Task 2: raw metrics (mean ± std over seeds)"]
    assert tables[1].row_count == 2 and "samples" in [c.header for c in tables[1].columns]


def test_small_cli_fixes(small_store, tmp_path):
    res = runner.invoke(app, ["info", str(small_store)])
    assert res.exit_code == 0 and "nothing to do" not in res.output and "fingerprint" in res.output
    help_text = runner.invoke(app, ["--help"]).output
    assert "::" not in help_text and "``" not in help_text and "about a minute" not in help_text
    # one number per fact: the XYZ layout's size is the README's
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "33.8 GB" in runner.invoke(app, ["export", "xyz", "--help"]).output and "33.8 GB" in readme
    # Task 1 takes Parquet or extended XYZ only, as its help says
    csv = tmp_path / "t1.csv"
    csv.write_text("config_id,Z,x,y,z\n0,1,0,0,0\n")
    res = runner.invoke(app, ["evaluate", "--task", "1", "--split", "id", "--predictions", str(csv),
                              "--store", str(small_store)])
    one_line = " ".join(res.output.split())  # the console may wrap the message
    assert res.exit_code == 2 and "t1.csv" in one_line and "unsupported Task 1 file type" in one_line
    # without --out: the table and a hint, no JSON dump; the model is named after the file
    from c2np.evaluation.evaluator import Evaluator
    from c2np.solvers.baselines import task2_predictions

    ev = Evaluator(2, "id", small_store)
    preds, _ = task2_predictions(ev.ds, ev.targets(), "mean")
    path = tmp_path / "my-net.csv"
    preds.to_csv(path, index=False)
    res = runner.invoke(app, ["evaluate", "--task", "2", "--split", "id", "--predictions", str(path),
                              "--store", str(small_store), "-q"])
    assert res.exit_code == 0, res.output
    assert "add --out" in res.output and '"model"' not in res.output
    res = runner.invoke(app, ["evaluate", "--task", "2", "--split", "id", "--predictions", str(path),
                              "--store", str(small_store), "--out", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["model"] == "my-net"
    assert np.isfinite(json.loads((tmp_path / "r.json").read_text())["metrics"]["lattice_rmse"])


def test_progress_without_a_terminal_writes_labelled_lines(capsys, monkeypatch):
    from c2np import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    with progress.stage("template · task 2 · OOD"):
        with progress.progress_bar(3, "matching", enabled=True) as advance:
            for _ in range(3):
                advance()
    with progress.progress_bar(2, "quiet", enabled=False) as advance:
        advance()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "template · task 2 · OOD: matching: 3 items ..."
    assert lines[1:3] == ["template · task 2 · OOD: matching: 1/3 after 0 s",
                          "template · task 2 · OOD: matching: 2/3 after 0 s"]
    assert lines[3].startswith("template · task 2 · OOD: matching: 3/3 done in") and len(lines) == 4


def test_small_targets_accept_the_template_particle(small_store):
    """The template row predicts R = 6 with the R = 8 particle (more than 2x the atoms)."""
    from c2np.evaluation.evaluator import Evaluator
    from c2np.solvers.baselines import task1_predictions

    ev = Evaluator(1, "ood", small_store, materials=["KMgH3"])
    small = ev.targets()[ev.targets()["radius"] == 6]
    preds = task1_predictions(ev.ds, ev.targets(), "template")
    assert len(preds[int(small.config_id.iloc[0])]) > 2 * len(ev.ds.canonical("KMgH3", 6))
    result = ev.evaluate(preds, model="template")
    assert result["metrics"]["atom_count_error"] > 1.0
