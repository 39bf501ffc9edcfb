"""docs/evaluate-your-model.md runs as written (on the small store), and examples/ parse."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from c2np.cli import app
from c2np.evaluation.predictions import read_task1, read_task2

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "evaluate-your-model.md"


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```", text, flags=re.S | re.M)


def test_walkthrough_runs_as_written(small_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c2np-store").symlink_to(small_store)
    blocks = code_blocks(DOC.read_text())
    assert [lang for lang, _ in blocks].count("python") >= 3 and any(lang == "bash" for lang, _ in blocks)
    namespace: dict = {}
    runner = CliRunner()
    for lang, code in blocks:
        if lang == "python":
            exec(compile(code, str(DOC), "exec"), namespace)
            continue
        assert lang == "bash", f"unexpected block language {lang}"
        for line in code.strip().splitlines():
            args = shlex.split(line)
            assert args[0] == "c2np", f"the walk-through's shell blocks run c2np only: {line}"
            res = runner.invoke(app, args[1:])
            assert res.exit_code == 0, f"{line}\n{res.output}"
    t1 = json.loads((tmp_path / "results-mine/mynet-t1-id-s0.json").read_text())
    t2 = json.loads((tmp_path / "results-mine/mynet-t2-id-s0.json").read_text())
    # The Task 1 stand-in is the construction itself: it must score zero error.
    assert t1["metrics"]["rmsd"] < 1e-6 and t1["metrics"]["atom_count_error"] == 0
    assert t1["model"] == "MyNet" and t1["sample"] == {"per_radius": 2, "seed": 0}
    rows = pd.read_parquet(tmp_path / "results-mine/mynet-t1-id-s0.scores.parquet")
    assert len(rows) == t1["n_samples"] and rows["rmsd"].max() < 1e-6
    assert t2["n_samples"] == len(namespace["t2"]) and t2["sample"]["per_material_radius"] == 2
    # The Python evaluation of step 4 scores the same file as the command line did.
    assert namespace["result"]["metrics"] == pytest.approx(t2["metrics"])
    report = (tmp_path / "report-mine/report.md").read_text()
    assert "MyNet" in report and "Table 5 scores not shown" in report


def test_example_files_have_the_exact_columns():
    t1 = read_task1(ROOT / "examples/task1-predictions.extxyz", np.array([101, 102]))
    assert sorted(t1) == [101, 102] and all(len(z) == 5 for z, _ in t1.values())
    t2 = read_task2(ROOT / "examples/task2-predictions.csv", np.array([101, 102, 103]))
    assert t2["spacegroup"].tolist() == [221, 167, 62]
