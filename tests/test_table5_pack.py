"""benchmarks/table5_pack.sh and table5_unpack.sh: what comes back from a lent GPU machine
(at most ~64 MiB per call) is chosen by priority, never loses a run's checkpoint pair
halfway, and unpacks into gpu-work/."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None,
                                reason="needs bash and tar")


def _file(path: Path, mib: float = 0.0, text: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if text is not None:
        path.write_text(text)
    else:
        path.write_bytes(bytes(int(mib * 2**20)))


def _work(root: Path) -> Path:
    w = root / "gw"
    runs = w / "t5" / "runs"
    for name in ("cdvae-task2-seed0", "cdvae-task2-seed1", "symat-task1-seed0", "cdvae-task1-seed0"):
        stop = "converged" if name == "cdvae-task1-seed0" else "paused"
        _file(runs / name / "run.json", text=json.dumps({"stop_reason": stop}))
    for name, mib in (("cdvae-task2-seed0", 1.5), ("cdvae-task2-seed1", 1.5), ("symat-task1-seed0", 3.0),
                      ("cdvae-task1-seed0", 1.0)):
        _file(runs / name / "best.ckpt", mib)
        _file(runs / name / "last.ckpt", mib)
    # seed 1 is scored on every split (its runner's scored.txt); seed 0 only on ID, so its
    # checkpoints and OOD predictions must still travel, its ID predictions not
    _file(w / "t5" / "results" / "cdvae-task2-id-seed1.json", text="{}")
    _file(w / "t5" / "results" / "cdvae-task2-ood-seed1.json", text="{}")
    _file(w / "t5" / "results" / "cdvae-task2-id-seed0.json", text="{}")
    _file(w / "t5" / "scored.txt", text="cdvae-task2-seed1\n")
    _file(w / "t5" / "preds" / "cdvae-task2-id-seed0.parquet", 0.1)
    _file(w / "t5" / "preds" / "cdvae-task2-ood-seed0.parquet.chunks" / "batch-00000.parquet", 0.1)
    _file(w / "t5" / "preds" / "cdvae-task2-id-seed1.parquet", 0.1)
    _file(w / "t5" / "status.md", text="| run |")
    return w


def _members(out: Path, tier: str) -> set[str]:
    parts = sorted(out.glob(f"{tier}.tgz.part-*"))
    if not parts:
        return set()
    data = b"".join(p.read_bytes() for p in parts)
    names = subprocess.run(["tar", "tzf", "-"], input=data, capture_output=True, check=True).stdout
    return {n.removeprefix("./") for n in names.decode().split()}


def test_pack_returns_by_priority_within_the_budget(tmp_path):
    w, out = _work(tmp_path), tmp_path / "out"
    # 10 MiB: 2 kept for the small tarball, the Task 2 pair (2 x 1.5 MiB -> 4), the converged
    # Task 1 run's best.ckpt alone (2), the OOD chunk (1); the paused Task 1 pair (2 x 3 MiB
    # -> 7) no longer fits and stays behind, both files together
    subprocess.run(["bash", str(ROOT / "benchmarks/table5_pack.sh"), str(w), str(out), "10"],
                   check=True, capture_output=True)
    assert _members(out, "2-ckpt-task2") == {"t5/runs/cdvae-task2-seed0/best.ckpt",
                                             "t5/runs/cdvae-task2-seed0/last.ckpt"}
    assert _members(out, "3-ckpt-task1") == {"t5/runs/cdvae-task1-seed0/best.ckpt"}
    # the ID split is scored: its predictions stay behind
    assert _members(out, "4-preds") == {"t5/preds/cdvae-task2-ood-seed0.parquet.chunks/batch-00000.parquet"}
    left = set((w / "left-out.txt").read_text().split())
    assert left == {"t5/runs/symat-task1-seed0/best.ckpt", "t5/runs/symat-task1-seed0/last.ckpt"}
    small = subprocess.run(["tar", "tzf", str(out / "1-small.tgz")], capture_output=True, check=True)
    names = small.stdout.decode().split()
    assert "./left-out.txt" in names and "./t5/runs/symat-task1-seed0/run.json" in names
    assert not [n for n in names if n.endswith(".ckpt") or n.endswith(".parquet")]

    # the unpacked copy holds what came back, in gpu-work/ of the current folder
    home = tmp_path / "home"
    home.mkdir()
    res = subprocess.run(["bash", str(ROOT / "benchmarks/table5_unpack.sh"), str(out)], cwd=home,
                         check=True, capture_output=True, text=True)
    g = home / "gpu-work" / "t5"
    assert (g / "runs/cdvae-task2-seed0/last.ckpt").stat().st_size == int(1.5 * 2**20)
    assert not (g / "runs/symat-task1-seed0/best.ckpt").exists()
    assert "symat-task1-seed0/best.ckpt" in res.stdout  # named as left on the GPU machine


def test_pack_returns_everything_that_fits(tmp_path):
    w, out = _work(tmp_path), tmp_path / "out"
    subprocess.run(["bash", str(ROOT / "benchmarks/table5_pack.sh"), str(w), str(out)],
                   check=True, capture_output=True)
    assert len(_members(out, "3-ckpt-task1")) == 3 and (w / "left-out.txt").read_text() == ""
    # a scored run's checkpoints and predictions never travel
    everything = set().union(*(_members(out, t) for t in ("2-ckpt-task2", "3-ckpt-task1", "4-preds")))
    assert not [n for n in everything if "seed1" in n]
