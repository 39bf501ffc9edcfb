"""benchmarks/train_throughput.py: its gradient check can fail, and a CPU dry run of a
compiled variant fills every column the README quotes (host phases, kernel time, profile)."""

from __future__ import annotations

import json
import sys
import threading

import pytest
import torch
from benchmark_scripts import load_benchmark

pytest.importorskip("pytorch_lightning")


@pytest.fixture(scope="module")
def tt():
    return load_benchmark("train_throughput")


def test_gradient_deviation_catches_wrong_and_missing_gradients(tt):
    want = [torch.ones(3), torch.tensor([3.0, 4.0]), None]
    assert tt.gradient_deviation([w.clone() if w is not None else None for w in want], want) == 0.0
    off = [torch.ones(3), torch.tensor([3.0, 4.5]), None]  # 0.5 off a norm of 5
    assert tt.gradient_deviation(off, want) == pytest.approx(0.1)
    assert tt.gradient_deviation([torch.ones(3), torch.tensor([float("nan"), 4.0]), None], want) == float("inf")
    assert tt.gradient_deviation([torch.ones(3), None, None], want) == float("inf")


@pytest.mark.slow  # 10-45 s on the 2-core dev machine
def test_cpu_dry_run_of_the_compiled_loss_reports_host_and_kernel_time(tt, small_store, tmp_path, monkeypatch):
    out = tmp_path / "tp.jsonl"
    monkeypatch.setattr(sys, "argv", ["train_throughput.py", "--store", str(small_store), "--cpu-dry-run",
                                      "--models", "cdvae:1", "--compile-models", "cdvae:1",
                                      "--variants", "compile+pairs+fused", "--profile", str(tmp_path / "prof"),
                                      "--profile-steps", "2", "--json", str(out)])
    tt.main()
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["variant"] == "compile+pairs+fused" and row["graphs_compiled_timed"] == 0
    assert 0 < row["grad_deviation"] < 1e-2  # pairs: float rounding, not bit-equal
    assert set(row["host_ms"]) == {"data", "loss", "backward", "optimizer"} and row["host_ms"]["loss"] > 0
    assert row["kernel_ms_per_step"] > 0
    table = (tmp_path / "prof" / "cdvae-task1-compile_pairs_fused.txt").read_text()
    assert "By the host's own time" in table


def test_the_cpp_wrapper_token_needs_the_compiled_loss(tt):
    with pytest.raises(ValueError, match="add \\+compile"):
        tt.run_variant("cdvae", 1, [], "edges+cpp", None, torch.device("cpu"))


def test_cpu_dry_run_of_the_captured_step_reports_its_counts(tt, small_store, tmp_path, monkeypatch):
    """capture without CUDA: the same padded, prepared step, eager; its row counts the steps
    and its gradient matches the eager model on the unpadded batch."""
    out = tmp_path / "tp.jsonl"
    monkeypatch.setattr(sys, "argv", ["train_throughput.py", "--store", str(small_store), "--cpu-dry-run",
                                      "--models", "cdvae:1", "--variants", "capture,capture+thread",
                                      "--json", str(out)])
    tt.main()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["capture", "capture+thread"]
    for row in rows:
        assert row["steps_timed"] == 3
        assert row["capture_timed"]["eager"] == 3 and row["capture_total"]["captured"] == 0  # nothing captured on a CPU
        # every timed step's batch was prepared, and that took host time (the thread may be ahead)
        assert row["capture_timed"]["prepared"] >= 3 and row["capture_timed"]["prepare_s"] > 0
        assert row["grad_deviation"] < 1e-4 and row["loss"] > 0
    assert not any(t.name == "c2np-prepare" for t in threading.enumerate())  # the thread ended with its stream


def test_thread_prepares_for_the_captured_step_only(tt):
    with pytest.raises(ValueError, match="add \\+capture"):
        tt.run_variant("cdvae", 1, [], "compile+thread", None, torch.device("cpu"))


def test_capture_takes_no_other_static_path(tt):
    with pytest.raises(ValueError, match="capture pads and prepares its own batches"):
        tt.run_variant("cdvae", 1, [], "capture+static", None, torch.device("cpu"))


def test_atomic_contention_script_times_both_hot_spots(monkeypatch, capsys):
    """benchmarks/atomic_contention.py (meant for a GPU) runs anywhere and prints a row
    per hot spot with both timings."""
    script = load_benchmark("atomic_contention")
    monkeypatch.setattr(sys, "argv", ["atomic_contention.py", "--atoms", "600", "--padding", "70",
                                      "--graphs", "3", "--features", "8", "--repeats", "2"])
    script.main()
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith(("| filler", "| per-graph"))]
    assert [r[0].strip() for r in rows] == ["filler edges: message sum, fwd + bwd", "per-graph minimum"]
    assert all(float(before) > 0 and float(after) > 0 for _, before, after, _ in rows)


def test_precision_curves_compares_fp32_and_tf32_runs(small_store, tmp_path, monkeypatch, capsys):
    """benchmarks/precision_curves.py on the CPU: one fp32 and one tf32 run, their curves
    side by side; tf32 changes nothing on a CPU, so the two agree exactly and the
    difference is 0, which is what shows the script reads the right runs."""
    pc = load_benchmark("precision_curves")
    out = tmp_path / "curves"
    monkeypatch.setattr(sys, "argv", [
        "precision_curves.py", "--store", str(small_store), "--out", str(out), "--epochs", "2", "--seeds", "0",
        "--json", str(tmp_path / "s.json"),
        *[a for s in ("model.hidden=16", "model.interactions=1", "model.gaussians=8", "model.n_sigmas=2",
                      "model.langevin_steps=1", "train.val_radii=[9]", "train.workers=0")
          for a in ("--set", s)]])
    pc.main()
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["fp32"]["tf32"] == [False] and res["tf32"]["tf32"] == [True]  # the runs' own configs
    assert res["fp32"]["best_val_loss"] == res["tf32"]["best_val_loss"] and res["difference"] == 0.0
    text = capsys.readouterr().out
    assert "| epoch | fp32 seed 0 | tf32 seed 0 |" in text and "| 1 |" in text
    assert len(pc.curves(out / "fp32" / "cdvae-task1-seed0")) == 2


def _converged_work(work, precision: str, seeds: dict[int, dict]) -> None:
    """A train_baselines work folder as the runner leaves it: per seed a run.json and the
    scored results of both test splits (``numbers``: best_val_loss, id/loss, id/rmsd, ...)."""
    for seed, numbers in seeds.items():
        run = work / "runs" / f"cdvae-task1-seed{seed}"
        run.mkdir(parents=True)
        run.joinpath("run.json").write_text(json.dumps({
            "best_val_loss": numbers["best_val_loss"], "best_epoch": 9, "epochs": 20, "device": "cpu",
            "converged": numbers.get("converged", True), "stop_reason": "converged" if numbers.get("converged", True)
            else "max_time", "config": {"train": {"tf32": precision == "tf32"}}}))
        for split in ("id", "ood"):
            (work / "results").mkdir(exist_ok=True)
            (work / "results" / f"cdvae-task1-{split}-seed{seed}.json").write_text(json.dumps({
                "loss": numbers[f"{split}/loss"], "metrics": {"rmsd": numbers[f"{split}/rmsd"], "volume_ratio": 0.8}}))
        # a scoring cut off at a deadline leaves this beside the results: not a split
        (work / "results" / f"cdvae-task1-id-seed{seed}.partial.json").write_text("{}")


def test_precision_compare_reads_converged_runs_and_judges_each_quantity_in_its_direction(tmp_path, capsys):
    pc = load_benchmark("precision_curves")
    one = {"best_val_loss": 1.0, "id/loss": 1.4, "id/rmsd": 2.0, "ood/loss": 1.5, "ood/rmsd": 2.0}
    _converged_work(tmp_path / "fp32", "fp32", {0: one, 1: one | {"best_val_loss": 1.2, "id/loss": 1.5,
                                                                  "ood/rmsd": 2.1}})
    # tf32: best validation loss inside the fp32 range; ID loss worse by more than it (0.1);
    # OOD RMSD better by more than it; the third seed did not converge and counts nowhere
    _converged_work(tmp_path / "tf32", "tf32", {0: one | {"best_val_loss": 1.05, "id/loss": 1.6, "ood/rmsd": 1.8},
                                                1: one | {"best_val_loss": 1.15, "id/loss": 1.7, "ood/rmsd": 1.8},
                                                2: one | {"best_val_loss": 9.0, "converged": False}})
    res = pc.compare({"fp32": tmp_path / "fp32", "tf32": tmp_path / "tf32"}, "cdvae", 1)
    q = res["quantities"]
    assert set(q) == {"best_val_loss", "id/loss", "id/rmsd", "id/volume_ratio", "ood/loss", "ood/rmsd",
                      "ood/volume_ratio"}
    assert q["best_val_loss"]["tf32"] == [1.05, 1.15] and q["best_val_loss"]["within_range"]
    assert not q["best_val_loss"]["worse_beyond_range"]
    assert q["id/loss"]["difference"] == pytest.approx(0.2) and q["id/loss"]["worse_beyond_range"]
    assert q["ood/rmsd"]["better"] == "lower" and not q["ood/rmsd"]["within_range"]
    assert not q["ood/rmsd"]["worse_beyond_range"]  # outside the range, but better
    assert q["id/volume_ratio"]["better"] is None and q["id/volume_ratio"]["worse_beyond_range"] is None
    pc.print_compare(res)
    text = capsys.readouterr().out
    assert "| tf32 | 2 | max_time | 20 | 9.0000 (9) | cpu |" in text
    assert "tf32 is worse by more than that range in 1 of 5 with a direction" in text


def test_precision_compare_refuses_works_given_in_the_wrong_order(tmp_path):
    pc = load_benchmark("precision_curves")
    one = {"best_val_loss": 1.0, "id/loss": 1.4, "id/rmsd": 2.0, "ood/loss": 1.5, "ood/rmsd": 2.0}
    _converged_work(tmp_path / "a", "tf32", {0: one})
    _converged_work(tmp_path / "b", "fp32", {0: one})
    with pytest.raises(SystemExit, match="trained with tf32=True, not as fp32"):
        pc.compare({"fp32": tmp_path / "a", "tf32": tmp_path / "b"}, "cdvae", 1)
    with pytest.raises(SystemExit, match="no cdvae task 2 runs"):
        pc.compare({"fp32": tmp_path / "b", "tf32": tmp_path / "a"}, "cdvae", 2)
