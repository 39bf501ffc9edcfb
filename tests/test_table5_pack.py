"""benchmarks/table5_pack.sh and table5_unpack.sh: what comes back from a lent GPU machine
(at most ~64 MiB per call) is chosen by priority, never loses a run's checkpoint pair
halfway, and unpacks into gpu-work/."""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import load_benchmark

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
        _file(runs / name / "run.json", text=json.dumps({"stop_reason": stop, "objective_version": 1 + (
            "task1" in name)}))
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
    # this call ran runner t5 only; t9.log is an older session's console log
    _file(w / "layout.txt", text="# comment | x\n t5 | c2np-store | cdvae:2 | 0 | 1 | 0 | 1\n")
    _file(w / "t5.log", text="this call\n")
    _file(w / "t9.log", text="an older call\n")
    # 10 MiB: 2 kept for the small tarball, first the converged Task 1 run's best.ckpt alone
    # (2), then the paused Task 2 pair (2 x 1.5 MiB -> 4), the OOD chunk (1); the paused Task 1
    # pair (2 x 3 MiB -> 7) no longer fits and stays behind, both files together
    subprocess.run(["bash", str(ROOT / "benchmarks/table5_pack.sh"), str(w), str(out), "10"],
                   check=True, capture_output=True)
    assert _members(out, "2-ckpt-task2") == {"t5/runs/cdvae-task2-seed0/best.ckpt",
                                             "t5/runs/cdvae-task2-seed0/last.ckpt"}
    assert _members(out, "2-ckpt-final") == {"t5/runs/cdvae-task1-seed0/best.ckpt"}
    assert _members(out, "3-ckpt-task1") == set()
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
    # an older session's call of the same folder name (the device folders' numbers start again)
    _file(home / "gpu-work/calls/out/t7.log", text="an older session\n")
    res = subprocess.run(["bash", str(ROOT / "benchmarks/table5_unpack.sh"), str(out)], cwd=home,
                         check=True, capture_output=True, text=True)
    g = home / "gpu-work" / "t5"
    assert (g / "runs/cdvae-task2-seed0/last.ckpt").stat().st_size == int(1.5 * 2**20)
    assert not (g / "runs/symat-task1-seed0/best.ckpt").exists()
    assert "symat-task1-seed0/best.ckpt" in res.stdout  # named as left on the GPU machine
    kept = home / "gpu-work/calls/out"  # this call's logs, kept apart
    assert (kept / "left-out.txt").exists() and (kept / "t5.log").read_text() == "this call\n"
    assert not (kept / "t9.log").exists() and (home / "gpu-work/t9.log").exists()
    assert not (kept / "t7.log").exists()


def test_pack_returns_everything_that_fits(tmp_path):
    w, out = _work(tmp_path), tmp_path / "out"
    subprocess.run(["bash", str(ROOT / "benchmarks/table5_pack.sh"), str(w), str(out)],
                   check=True, capture_output=True)
    assert len(_members(out, "3-ckpt-task1")) == 2 and (w / "left-out.txt").read_text() == ""
    # a scored run's checkpoints and predictions never travel
    everything = set().union(*(_members(out, t) for t in ("2-ckpt-final", "2-ckpt-task2", "3-ckpt-task1",
                                                          "4-preds")))
    assert not [n for n in everything if "seed1" in n]


def test_a_later_call_does_not_resend_what_came_back_unchanged(tmp_path):
    w = _work(tmp_path)
    pack = ["bash", str(ROOT / "benchmarks/table5_pack.sh"), str(w)]
    # call 1, 10 MiB: as in the priority test, the paused Task 1 pair stays behind, loudly
    first = subprocess.run(pack + [str(tmp_path / "out1"), "10"], check=True, capture_output=True, text=True)
    assert first.stdout.strip().splitlines()[-1].startswith("NOT RETURNED: 2 files, 6 MiB stay in")
    # call 2, 11 MiB, nothing changed on the machine but the Task 2 run's last.ckpt (it trained
    # on): the files already home are not sent again (else 16 MiB), so the pair left out fits
    last = w / "t5/runs/cdvae-task2-seed0/last.ckpt"
    os.utime(last, (last.stat().st_atime, last.stat().st_mtime + 60))
    second = subprocess.run(pack + [str(tmp_path / "out2"), "11"], check=True, capture_output=True, text=True)
    out2 = tmp_path / "out2"
    assert _members(out2, "2-ckpt-task2") == {"t5/runs/cdvae-task2-seed0/last.ckpt"}
    assert _members(out2, "3-ckpt-task1") == {"t5/runs/symat-task1-seed0/best.ckpt",
                                              "t5/runs/symat-task1-seed0/last.ckpt"}
    assert _members(out2, "4-preds") == set()
    assert (w / "left-out.txt").read_text() == ""
    lines = second.stdout.strip().splitlines()
    assert "not sent again: 3 files" in second.stdout and lines[-1] == "everything the runners still need came back"
    # PACK_RESEND=1 (a call's files lost on the way): everything goes again, within the budget
    env = dict(os.environ, PACK_RESEND="1")
    subprocess.run(pack + [str(tmp_path / "out3")], check=True, capture_output=True, env=env)
    assert len(_members(tmp_path / "out3", "2-ckpt-final") | _members(tmp_path / "out3", "3-ckpt-task1")) == 3


def test_prediction_batches_travel_with_their_manifest(tmp_path):
    w = _work(tmp_path)
    chunks = w / "t5/preds/cdvae-task2-ood-seed0.parquet.chunks"
    _file(chunks / "manifest.json", text='{"batches": 3}')
    for b in (1, 2):
        _file(chunks / f"batch-0000{b}.parquet", 1.2)
    pack = ["bash", str(ROOT / "benchmarks/table5_pack.sh"), str(w)]
    # 2 small + 4 Task 2 pair + 2 converged best + 7 paused pair = 15; then the batches (each
    # with its manifest) at 1, 2 and 2 MiB: 19 MiB takes the first two of them only
    subprocess.run(pack + [str(tmp_path / "out1"), "19"], check=True, capture_output=True)
    sent = _members(tmp_path / "out1", "4-preds")
    assert f"t5/preds/{chunks.name}/manifest.json" in sent and len(sent) == 3
    left = (w / "left-out.txt").read_text().split()
    assert len(left) == 1 and left[0].endswith(".parquet")  # the manifest went with the first batch
    # the next call sends the last batch alone: its manifest is home, unchanged
    subprocess.run(pack + [str(tmp_path / "out2"), "19"], check=True, capture_output=True)
    assert _members(tmp_path / "out2", "4-preds") == set(left)


def test_large_small_tarball_goes_in_parts_and_counts_against_the_budget(tmp_path):
    w, out = _work(tmp_path), tmp_path / "out"
    # the stores kept on the machine between calls never travel back
    _file(w / "stores" / "c2np-store" / "index.parquet", 1.0)
    # 17 MiB of incompressible logs: over the 16 MiB a returned file may have
    (w / "t5" / "logs").mkdir()
    (w / "t5" / "logs" / "train.log").write_bytes(np.random.default_rng(0).bytes(17 * 2**20))
    # 24 MiB in all: 17 + 2 for the small tarball leave 5, the converged run's best.ckpt (2) and
    # the OOD chunk (1); the Task 2 pair (4) no longer fits
    subprocess.run(["bash", str(ROOT / "benchmarks/table5_pack.sh"), str(w), str(out), "24"],
                   check=True, capture_output=True)
    assert not (out / "1-small.tgz").exists()
    parts = sorted(out.glob("1-small.tgz.part-*"))
    assert len(parts) == 2 and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    assert _members(out, "2-ckpt-final") == {"t5/runs/cdvae-task1-seed0/best.ckpt"}
    assert _members(out, "2-ckpt-task2") == set() and _members(out, "3-ckpt-task1") == set()
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["bash", str(ROOT / "benchmarks/table5_unpack.sh"), str(out)], cwd=home,
                   check=True, capture_output=True, text=True)
    assert (home / "gpu-work/t5/logs/train.log").stat().st_size == 17 * 2**20
    assert not (home / "gpu-work/stores").exists()
    assert (home / "gpu-work/t5/runs/cdvae-task1-seed0/best.ckpt").exists()
    left = (home / "gpu-work/left-out.txt").read_text().split()
    assert "t5/runs/cdvae-task2-seed0/last.ckpt" in left


def test_bundle_leaves_scored_runs_checkpoints_and_predictions_home(tmp_path):
    home = tmp_path / "home"
    w = _work(home)
    (home / "gw").rename(home / "gpu-work")
    g = home / "gpu-work" / "t5"
    _file(g / "preds" / "cdvae-task2-ood-seed1.parquet", 0.1)  # scored: stays home
    _file(g / "preds" / "cdvae-task2-id-seed0.parquet.chunks" / "batch-00000.parquet", 0.1)  # finished
    _file(g / "superseded" / "objective-v1" / "preds" / "cdvae-task1-id-seed0.parquet", 0.1)  # set aside
    _file(g / "preds" / "cdvae-task1-id-seed0.parquet", 0.1)  # complete, not scored yet: travels
    _file(g / "results" / "cdvae-task1-ood-seed0.partial.json", text="{}")  # a scoring cut off
    res = subprocess.run(["bash", str(ROOT / "benchmarks/table5_bundle.sh"), "1", "t5", "t9"], cwd=home,
                         check=True, capture_output=True, text=True)
    assert "gpu-work/carry-1.tar" in res.stdout
    names = set(subprocess.run(["tar", "tf", str(home / "gpu-work/carry-1.tar")], capture_output=True,
                               check=True).stdout.decode().split())
    assert "t5/runs/cdvae-task2-seed0/last.ckpt" in names and "t5/runs/symat-task1-seed0/best.ckpt" in names
    # converged, not scored yet: only its predictions are left, from best.ckpt
    assert "t5/runs/cdvae-task1-seed0/best.ckpt" in names and "t5/runs/cdvae-task1-seed0/last.ckpt" not in names
    # converged under Task 1's first objective (no version in run.json): it trains on from last.ckpt
    old = g / "runs" / "cdvae-task1-seed0" / "run.json"
    old.write_text(json.dumps({"stop_reason": "converged"}))
    subprocess.run(["bash", str(ROOT / "benchmarks/table5_bundle.sh"), "2", "t5"], cwd=home, check=True,
                   capture_output=True)
    again = subprocess.run(["tar", "tf", str(home / "gpu-work/carry-2.tar")], capture_output=True, check=True)
    assert "t5/runs/cdvae-task1-seed0/last.ckpt" in again.stdout.decode().split()
    assert "t5/preds/cdvae-task2-ood-seed0.parquet.chunks/batch-00000.parquet" in names  # unfinished
    # seed 0's ID split is scored (results/cdvae-task2-id-seed0.json): its predictions stay home
    assert "t5/preds/cdvae-task2-id-seed0.parquet" not in names
    assert "t5/preds/cdvae-task1-id-seed0.parquet" in names
    assert not [n for n in names if "seed1" in n and (n.endswith(".ckpt") or "/preds/" in n)]
    assert not [n for n in names if "cdvae-task2-id-seed0.parquet.chunks" in n or "superseded" in n]
    assert "t5/results/cdvae-task2-id-seed1.json" in names and "t9/README.txt" in names  # t9: a new runner
    assert not w.exists()


def test_return_brings_everything_needed_over_several_calls(tmp_path):
    w = _work(tmp_path)
    # a paused run with a 55 MiB checkpoint: 5 parts of 15 MiB in all, so two calls
    _file(w / "t5" / "runs" / "symat-task1-seed0" / "last.ckpt", 55.0)
    _file(w / "stores" / "c2np-store" / "index.parquet", 1.0)
    outs = []
    for k in range(3):
        out = tmp_path / f"call{k}"
        res = subprocess.run(["bash", str(ROOT / "benchmarks/table5_return.sh"), str(out), str(k), str(w)],
                             check=True, capture_output=True, text=True)
        outs.append(out)
        assert ("the last part comes with K=1" if k < 2 else "all returned by earlier calls") in res.stdout
        assert len(list(out.glob("return.tar.part-*"))) <= 4
    assert not list(outs[2].glob("return.tar.part-*"))  # nothing is left for a third call
    unpack = ["bash", str(ROOT / "benchmarks/table5_unpack.sh"), "--return"]
    # at home: a missing call is named, then all of them unpack
    res = subprocess.run(unpack + [str(outs[0])], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 2 and "part 5 of 5 is missing: call table5_return.sh with K=1" in res.stderr
    subprocess.run(unpack + [str(o) for o in outs], cwd=tmp_path, check=True, capture_output=True)
    home = tmp_path / "gpu-work"
    g = home / "t5"
    assert (g / "runs/symat-task1-seed0/last.ckpt").stat().st_size == 55 * 2**20
    assert (g / "runs/cdvae-task2-seed0/last.ckpt").exists() and (g / "status.md").exists()
    # the converged run: best.ckpt alone; the scored run and the stores stay on the machine
    assert (g / "runs/cdvae-task1-seed0/best.ckpt").exists()
    assert not (g / "runs/cdvae-task1-seed0/last.ckpt").exists()
    assert not list(g.glob("runs/cdvae-task2-seed1/*.ckpt")) and not (home / "stores").exists()
    assert not (g / "preds/cdvae-task2-id-seed1.parquet").exists()
    assert (g / "preds/cdvae-task2-ood-seed0.parquet.chunks/batch-00000.parquet").exists()


def test_unpacking_a_return_refuses_folders_of_another_packing_and_damaged_parts(tmp_path):
    """The device tool numbers its folders per session, so an earlier session's return calls
    leave folders whose parts have the same names (return.tar.part-000, ...). Passed beside
    this session's, their parts would be spliced into this tar without a word: unpacking must
    refuse them, name them, and write nothing; a part that does not match the checksum its
    packing recorded is refused too."""
    def returned(w: Path, name: str, calls: int) -> list[Path]:
        outs = [tmp_path / f"{name}{k}" for k in range(calls)]
        for k, out in enumerate(outs):
            subprocess.run(["bash", str(ROOT / "benchmarks/table5_return.sh"), str(out), str(k), str(w)],
                           check=True, capture_output=True)
        return outs

    old = tmp_path / "old"
    _file(old / "t5" / "runs" / "symat-task1-seed0" / "last.ckpt", 20.0)
    stale = returned(old, "stale", 1)
    w = _work(tmp_path)
    _file(w / "t5" / "runs" / "symat-task1-seed0" / "last.ckpt", 55.0)
    outs = returned(w, "call", 2)
    unpack = ["bash", str(ROOT / "benchmarks/table5_unpack.sh"), "--return"]
    res = subprocess.run(unpack + [str(o) for o in outs + stale], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 2 and "another packing" in res.stderr and str(stale[0]) in res.stderr
    assert not (tmp_path / "gpu-work").exists()
    damaged = outs[1] / "return.tar.part-004"
    damaged.write_bytes(damaged.read_bytes()[:-1])
    res = subprocess.run(unpack + [str(o) for o in outs], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 2 and "part 5 of 5" in res.stderr and "checksum" in res.stderr
    assert not (tmp_path / "gpu-work").exists()


def test_sm_means_averages_each_gpus_utilisation_over_a_calls_samples(tmp_path):
    """table5_lib.sh's sm_means reads `nvidia-smi dmon -s u` (headers repeat, '-' where a
    GPU gave no value) and prints each GPU's mean SM utilisation, as the sessions' logs
    report it; a file without samples says so instead of printing zeros."""
    dmon = tmp_path / "dmon.txt"
    dmon.write_text("# gpu     sm    mem    enc    dec\n# Idx      %      %      %      %\n"
                    "    0     80     10      0      0\n    1      -      0      0      0\n"
                    "# gpu     sm    mem    enc    dec\n# Idx      %      %      %      %\n"
                    "    0     91     12      0      0\n    1     40      3      0      0\n")
    lib = ROOT / "benchmarks" / "table5_lib.sh"
    out = subprocess.run(["bash", "-c", f'source "{lib}"; sm_means "{dmon}"'], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "mean SM utilisation: GPU 0 86 % (2 samples), GPU 1 40 % (1 samples)"
    dmon.write_text("Failed to initialize NVML\n")
    out = subprocess.run(["bash", "-c", f'source "{lib}"; sm_means "{dmon}"'], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == f"mean SM utilisation: no samples in {dmon}"


def test_return_leaves_what_a_training_call_brought_home_unchanged(tmp_path):
    w = _work(tmp_path)
    # the training call's pack (10 MiB) brought the converged best.ckpt, the Task 2 pair and
    # the OOD chunk home; then the Task 2 run trained on (its last.ckpt changed)
    subprocess.run(["bash", str(ROOT / "benchmarks/table5_pack.sh"), str(w), str(tmp_path / "train"), "10"],
                   check=True, capture_output=True)
    last = w / "t5/runs/cdvae-task2-seed0/last.ckpt"
    os.utime(last, (last.stat().st_atime, last.stat().st_mtime + 60))
    ret = ["bash", str(ROOT / "benchmarks/table5_return.sh"), str(tmp_path / "ret"), "0", str(w)]
    res = subprocess.run(ret, check=True, capture_output=True, text=True)
    assert "return: 3 files stay" in res.stdout
    data = b"".join(p.read_bytes() for p in sorted((tmp_path / "ret").glob("return.tar.part-*")))
    names = {n.removeprefix("./") for n in subprocess.run(["tar", "tf", "-"], input=data, capture_output=True,
                                                           check=True).stdout.decode().split()}
    assert {"t5/runs/cdvae-task2-seed0/last.ckpt", "t5/runs/symat-task1-seed0/last.ckpt",
            "t5/runs/symat-task1-seed0/best.ckpt"} <= names
    assert not names & {"t5/runs/cdvae-task2-seed0/best.ckpt", "t5/runs/cdvae-task1-seed0/best.ckpt",
                        "t5/preds/cdvae-task2-ood-seed0.parquet.chunks/batch-00000.parquet"}
    # PACK_RESEND=1: everything again
    env = dict(os.environ, PACK_RESEND="1")
    res = subprocess.run(ret[:2] + [str(tmp_path / "ret2"), "0", str(w)], check=True, capture_output=True,
                         text=True, env=env)
    assert "stay" not in res.stdout


def test_a_large_bundle_travels_in_parts_and_unpacks_once_all_are_there(tmp_path):
    home = tmp_path / "home"
    _work(home).rename(home / "gpu-work")  # t5: 3 runs to carry, about 7 MiB of checkpoints
    res = subprocess.run(["bash", str(ROOT / "benchmarks/table5_bundle.sh"), "4", "t5"], cwd=home,
                         env={**os.environ, "BUNDLE_MIB": "2"}, check=True, capture_output=True, text=True)
    parts = sorted((home / "gpu-work").glob("carry-4.tar.part-*"), key=lambda p: int(p.name.split("-")[2]))
    m = len(parts)
    assert m >= 3 and not (home / "gpu-work/carry-4.tar").exists() and f"in {m} parts" in res.stdout
    assert [p.name for p in parts] == [f"carry-4.tar.part-{k}-of-{m}" for k in range(1, m + 1)]
    assert all(p.stat().st_size <= 2 * 2**20 for p in parts)

    # the GPU machine: each call brings one part (and a whole bundle), a warm /tmp keeps them
    machine, stash = tmp_path / "machine", tmp_path / "stash"
    lib = ROOT / "benchmarks/table5_lib.sh"
    for k, part in enumerate(parts, 1):
        g = machine / f"call{k}" / "gpu-work"  # the checkout's copy is fresh at every call
        g.mkdir(parents=True)
        shutil.copy(part, g / part.name)
        if k == 1:
            _file(tmp_path / "small" / "t9" / "README.txt", text="new runner")
            subprocess.run(["tar", "cf", str(g / "carry-1.tar"), "-C", str(tmp_path / "small"), "t9"], check=True)
        out = subprocess.run(["bash", "-c", f'source "{lib}" && unpack_bundles "{g}" "{stash}"'],
                             check=True, capture_output=True, text=True).stdout
        if k < m:
            assert f"{k} of {m} parts on the machine" in out and not (g / "t5").exists()
        else:
            assert f"all {m} parts, unpacked" in out
    assert (machine / "call1/gpu-work/t9/README.txt").exists() and not (machine / "call1/gpu-work/carry-1.tar").exists()
    last = machine / f"call{m}" / "gpu-work" / "t5"
    assert (last / "runs/symat-task1-seed0/last.ckpt").stat().st_size == 3 * 2**20
    assert not list(stash.glob("*"))  # the parts are gone once unpacked


@pytest.mark.skipif(shutil.which("zstd") is None, reason="BUNDLE_ZSTD=1 needs the zstd command at home")
@pytest.mark.parametrize("decoder", ["zstd", "pyarrow"])
def test_a_compressed_bundle_shares_repeated_bytes_and_unpacks_with_either_decoder(tmp_path, decoder):
    """BUNDLE_ZSTD=1: a checkpoint pair that shares most of its bytes (ADiT Task 1's untrained
    DiT in best.ckpt and last.ckpt) travels about once; the machine decodes the parts with
    zstd, or with pyarrow where it has no zstd command."""
    rng = np.random.default_rng(0)
    shared, own = rng.bytes(3 * 2**20), rng.bytes(2**20)  # random: only repetition compresses
    run = tmp_path / "home" / "gpu-work" / "t7" / "runs" / "adit-task1-seed0"
    _file(run / "run.json", text=json.dumps({"stop_reason": "paused", "objective_version": 2}))
    (run / "best.ckpt").write_bytes(shared)
    (run / "last.ckpt").write_bytes(shared + own)
    _file(tmp_path / "home" / "gpu-work" / "carry-4.tar.part-1-of-9", text="a stale part of another build")
    home = tmp_path / "home"
    res = subprocess.run(["bash", str(ROOT / "benchmarks/table5_bundle.sh"), "4", "t7"], cwd=home,
                         env={**os.environ, "BUNDLE_MIB": "2", "BUNDLE_ZSTD": "1"}, check=True,
                         capture_output=True, text=True)
    parts = sorted((home / "gpu-work").glob("carry-4.tar.zst.part-*"), key=lambda p: int(p.name.split("-")[2]))
    m = len(parts)
    assert m == 3 and f"in {m} parts" in res.stdout and "zstd" in res.stdout
    assert sum(p.stat().st_size for p in parts) < 4.2 * 2**20  # 7 MiB of files, 4 MiB of them unique
    assert sorted(p.name for p in (home / "gpu-work").iterdir() if p.is_file()) == sorted(p.name for p in parts)

    machine, stash = tmp_path / "machine", tmp_path / "stash"
    lib = ROOT / "benchmarks/table5_lib.sh"
    # python3 of the test's environment has pyarrow, as the GPU machine's has
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    if decoder == "pyarrow":
        env["C2NP_ZSTD"] = "no-such-zstd-command"
    said = subprocess.run(["bash", "-c", f'source "{lib}" && zstd_decoder'], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()
    assert said == decoder  # what table5_gpu.sh's staging call reports
    for k, part in enumerate(parts, 1):
        g = machine / f"call{k}" / "gpu-work"
        g.mkdir(parents=True)
        shutil.copy(part, g / part.name)
        out = subprocess.run(["bash", "-c", f'set -uo pipefail; source "{lib}" && unpack_bundles "{g}" "{stash}"'],
                             check=True, capture_output=True, text=True, env=env).stdout
        assert (f"all {m} parts, unpacked" in out) == (k == m), out
    got = machine / f"call{m}" / "gpu-work" / "t7" / "runs" / "adit-task1-seed0"
    assert (got / "best.ckpt").read_bytes() == shared and (got / "last.ckpt").read_bytes() == shared + own
    assert not list(stash.glob("*"))


@pytest.mark.skipif(shutil.which("zstd") is None, reason="makes a compressed bundle with the zstd command")
@pytest.mark.parametrize("split", [False, True])
def test_a_bundle_cut_short_unpacks_nothing_and_is_kept(tmp_path, split):
    """A compressed bundle whose stream ends early (a damaged carry) leaves no half-unpacked
    work folder behind, which the call would otherwise copy to the runners, and keeps its
    file or parts."""
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    _file(src / "t8" / "runs" / "adit-task1-seed0" / "best.ckpt", text="")
    (src / "t8" / "runs" / "adit-task1-seed0" / "best.ckpt").write_bytes(rng.bytes(2**20))
    (src / "t8" / "runs" / "adit-task1-seed0" / "last.ckpt").write_bytes(rng.bytes(2**20))
    whole = tmp_path / "carry-5.tar.zst"
    subprocess.run(f'tar cf - -C "{src}" t8 | zstd -q --long=27 -3 -o "{whole}"', shell=True, check=True)
    data = whole.read_bytes()[: int(0.7 * whole.stat().st_size)]  # the first file whole, then cut
    stash, g = tmp_path / "stash", tmp_path / "gpu-work"
    g.mkdir()
    names = ["carry-5.tar.zst.part-1-of-2", "carry-5.tar.zst.part-2-of-2"] if split else ["carry-5.tar.zst"]
    cut = len(data) // 2
    for name, chunk in zip(names, [data[:cut], data[cut:]] if split else [data]):
        (g / name).write_bytes(chunk)
    lib = ROOT / "benchmarks/table5_lib.sh"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run(["bash", "-c", f'set -uo pipefail; source "{lib}" && unpack_bundles "{g}" "{stash}"'],
                         capture_output=True, text=True, env=env)
    assert "unpacked" not in res.stdout and "could not unpack" in res.stdout, res.stdout + res.stderr
    assert sorted(p.name for p in g.iterdir()) == ([] if split else names)  # no t8/, no temporary
    assert sorted(p.name for p in stash.iterdir()) == (names if split else [])


def _layout_lines(path: Path) -> list[list[str]]:
    """The runner lines of a layout, as benchmarks/table5_seed.py reads them."""
    return load_benchmark("table5_seed").layout_lines(path)


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "table5").glob("layout-*.txt")),
                         ids=lambda p: p.name)
def test_every_layout_names_real_models_stores_and_gpus(path):
    """A typo in a session's layout costs GPU time only on the machine: catch it here."""
    from c2np.models.registry import MODELS

    lines = _layout_lines(path)
    assert lines, f"{path.name} has no runner line"
    folders = [f[0] for f in lines]
    assert len(folders) == len(set(folders)), f"{path.name}: a work folder runs twice"
    for f in lines:
        assert len(f) in (7, 8, 9, 10), f"{path.name}: {f[0]} has {len(f)} fields"
        folder, store, plan, seeds, gpus, first, per_gpu = f[:7]
        assert store in ("c2np-store", "c2np-store-materials"), (folder, store)
        for item in plan.split():
            model, task = item.split(":")
            assert model in MODELS and task in ("1", "2"), (folder, item)
        assert all(s.isdigit() for s in seeds.split()), (folder, seeds)
        assert int(gpus) >= 1 and 0 <= int(first) and int(first) + int(gpus) <= 4, (folder, gpus, first)
        assert per_gpu == "P" or int(per_gpu) >= 1, (folder, per_gpu)
        if len(f) > 7:  # GPUs per run (DDP), then particles per prediction batch (0: the config's)
            assert int(gpus) % int(f[7]) == 0, (folder, gpus, f[7])
        if len(f) > 8:
            assert int(f[8]) >= 0, (folder, f[8])
        if len(f) > 9:  # processes generating each split at once (c2np predict --shard)
            assert int(f[9]) >= 1, (folder, f[9])


def _newest_layouts() -> list[Path]:
    """The next session's plans: every variant (layout-DATE.txt, -DATEb.txt, ...) of the
    newest date, one for each machine the session may be lent."""
    paths = sorted((ROOT / "benchmarks" / "table5").glob("layout-*.txt"))
    date = re.match(r"layout-(\d{4}-\d{2}-\d{2})", paths[-1].name).group(1)
    return [p for p in paths if p.name.startswith(f"layout-{date}")]


@pytest.mark.parametrize("path", _newest_layouts(), ids=lambda p: p.name)
def test_newest_layouts_bundle_every_work_folder_exactly_once(path):
    """Each of the next session's layouts must carry every runner's folder once, in its bundle
    commands or as a path of its own ("carry gpu-work/NAME", a new runner's almost empty
    folder): a folder left out idles its GPU; the runner then starts nothing."""
    bundled = []
    for line in path.read_text().splitlines():
        if not line.lstrip().startswith("#"):
            continue
        if "table5_bundle.sh" in line:
            words = line.split("table5_bundle.sh", 1)[1].split("(")[0].split()
            if words and words[0].isdigit():
                bundled += words[1:]
        bundled += re.findall(r"carry gpu-work/([\w-]+)", line)
    assert sorted(bundled) == sorted(f[0] for f in _layout_lines(path))


def test_the_shell_knows_the_objective_versions_of_c2np_config():
    """table5_lib.sh's objective_version (which run's last.ckpt must travel) equals
    c2np.config.objective_version for every model and task."""
    from c2np.config import objective_version
    from c2np.models.registry import MODELS

    lib = ROOT / "benchmarks" / "table5_lib.sh"
    for model in MODELS:
        for task in (1, 2):
            out = subprocess.run(["bash", "-c", f'source "{lib}"; objective_version w/runs/{model}-task{task}-seed0'],
                                 capture_output=True, text=True, check=True).stdout.strip()
            assert out == str(objective_version(task, model)), (model, task, out)


def test_the_shell_knows_the_final_stop_reasons_of_c2np_config(tmp_path):
    """table5_lib.sh's stopped_for_good (only best.ckpt travels) takes exactly the stop
    reasons c2np.config.FINAL_STOP_REASONS names as final (table5_seed.py, train_baselines.py)."""
    from c2np.config import FINAL_STOP_REASONS

    lib = ROOT / "benchmarks" / "table5_lib.sh"
    final = []
    for reason in (*FINAL_STOP_REASONS, "paused", "interrupted"):
        run = tmp_path / reason / "runs" / "cdvae-task2-seed0"
        _file(run / "run.json", text=json.dumps({"stop_reason": reason}))
        _file(run / "best.ckpt", text="weights")
        if subprocess.run(["bash", "-c", f'source "{lib}"; stopped_for_good "{run}"']).returncode == 0:
            final.append(reason)
    assert tuple(final) == FINAL_STOP_REASONS


def test_seed_copies_committed_runs_and_only_their_own_results(tmp_path):
    """benchmarks/table5_seed.py: a new checkout's work folders get the committed converged
    runs (pending/ first), with the result JSONs of that same training and no other (an older
    training's result would make the runner skip that split), and a run the work folder
    already has is left alone; a committed run of an older objective than its model's
    (FlowMM Task 1's version 2) is not copied, so that the seed trains afresh."""
    learned, work = tmp_path / "learned", tmp_path / "gw"
    run = {"best_epoch": 75, "best_val_loss": 0.44, "objective_version": 2}
    for home, info in (("runs/diffcsp-task1-seed0", run), ("pending/runs/diffcsp-task1-seed1", run),
                       ("runs/diffcsp-task1-seed1", {"best_epoch": 60, "best_val_loss": 0.5}),
                       ("runs/diffcsp-task1-seed2", run), ("materials/runs/diffcsp-task1-seed0", run),
                       ("runs/flowmm-task1-seed0", run)):
        _file(learned / home / "best.ckpt", text="weights " + home)
        _file(learned / home / "run.json", text=json.dumps(info))
    mine, older = {"model_run": run}, {"model_run": {"best_epoch": 60, "best_val_loss": 0.5}}
    _file(learned / "diffcsp-task1-ood-seed0.json", text=json.dumps(mine))
    _file(learned / "diffcsp-task1-ood-seed0.scores.parquet", text="rows")
    _file(learned / "diffcsp-task1-id-seed1.json", text=json.dumps(older))
    _file(learned / "materials" / "diffcsp-task1-unseen_id-seed0.json", text=json.dumps(mine))
    _file(work / "u9" / "runs" / "diffcsp-task1-seed2" / "last.ckpt", text="newer")
    layout = tmp_path / "layout.txt"
    layout.write_text("# a comment | not a line\n"
                      "u1 | c2np-store | diffcsp:1 | 0 1 3 | 1 | 0 | 2\n"
                      "u9 | c2np-store | diffcsp:1 | 2 | 1 | 1 | 1\n"
                      "uh | c2np-store-materials | diffcsp:1 | 0 | 1 | 2 | 1\n"
                      "uf | c2np-store | flowmm:1 | 0 | 1 | 3 | 1\n")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "table5_seed.py"), str(layout), "--work", str(work),
                          "--learned", str(learned)], capture_output=True, text=True, check=True).stdout
    u1 = work / "u1"
    assert (u1 / "runs/diffcsp-task1-seed0/best.ckpt").read_text() == "weights runs/diffcsp-task1-seed0"
    assert (u1 / "runs/diffcsp-task1-seed1/best.ckpt").read_text() == "weights pending/runs/diffcsp-task1-seed1"
    assert sorted(p.name for p in (u1 / "results").iterdir()) == [
        "diffcsp-task1-ood-seed0.json", "diffcsp-task1-ood-seed0.scores.parquet"]
    assert not (u1 / "runs/diffcsp-task1-seed3").exists()  # nothing committed for seed 3
    # the work folder's own run of seed 2 (paused, newer) is not overwritten by the committed one
    assert sorted(p.name for p in (work / "u9/runs/diffcsp-task1-seed2").iterdir()) == ["last.ckpt"]
    assert (work / "uh/runs/diffcsp-task1-seed0/best.ckpt").read_text() == "weights materials/runs/diffcsp-task1-seed0"
    assert [p.name for p in (work / "uh/results").iterdir()] == ["diffcsp-task1-unseen_id-seed0.json"]
    assert "(scored: ood)" in out and "(scored: unseen_id)" in out
    assert not (work / "uf" / "runs" / "flowmm-task1-seed0").exists()  # version 2 of 3
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "table5_seed.py"), str(layout), "--work", str(work),
                            "--learned", str(learned)], capture_output=True, text=True, check=True).stdout
    assert again.startswith("nothing to seed")


def test_a_committed_best_ckpt_stays_home_and_is_seeded_on_the_machine(tmp_path):
    """A converged run's best.ckpt that the repository holds as the same file does not travel
    in the bundle; table5_seed.py puts the committed copy into the carried run folder (of the
    same training only), so the runner finds it."""
    home = tmp_path / "home"
    _work(home).rename(home / "gpu-work")
    run = json.loads((home / "gpu-work/t5/runs/cdvae-task1-seed0/run.json").read_text())
    run |= {"best_epoch": 70, "best_val_loss": 1.46}
    (home / "gpu-work/t5/runs/cdvae-task1-seed0/run.json").write_text(json.dumps(run))
    committed = home / "results/learned/runs/cdvae-task1-seed0"
    committed.mkdir(parents=True)
    shutil.copy2(home / "gpu-work/t5/runs/cdvae-task1-seed0/best.ckpt", committed / "best.ckpt")
    (committed / "run.json").write_text(json.dumps(run))
    # symat's best.ckpt differs from a committed one of the same name: it travels
    _file(home / "results/learned/runs/symat-task1-seed0/best.ckpt", 0.5)
    subprocess.run(["bash", str(ROOT / "benchmarks/table5_bundle.sh"), "1", "t5"], cwd=home, check=True,
                   capture_output=True)
    names = set(subprocess.run(["tar", "tf", str(home / "gpu-work/carry-1.tar")], capture_output=True,
                               check=True).stdout.decode().split())
    assert "t5/runs/cdvae-task1-seed0/run.json" in names and "t5/runs/cdvae-task1-seed0/best.ckpt" not in names
    assert "t5/runs/symat-task1-seed0/best.ckpt" in names
    machine = tmp_path / "machine"
    machine.mkdir()
    subprocess.run(["tar", "xf", str(home / "gpu-work/carry-1.tar"), "-C", str(machine)], check=True)
    layout = tmp_path / "layout.txt"
    layout.write_text("t5 | c2np-store | cdvae:1 | 0 | 1 | 0 | 1\n")
    seed = [sys.executable, str(ROOT / "benchmarks" / "table5_seed.py"), str(layout), "--work", str(machine),
            "--learned", str(home / "results/learned")]
    out = subprocess.run(seed, capture_output=True, text=True, check=True).stdout
    assert "t5/runs/cdvae-task1-seed0/best.ckpt <- " in out
    assert filecmp.cmp(machine / "t5/runs/cdvae-task1-seed0/best.ckpt", committed / "best.ckpt", shallow=False)
    # a run folder of another training of that seed gets nothing
    (machine / "t5/runs/cdvae-task1-seed0/best.ckpt").unlink()
    (machine / "t5/runs/cdvae-task1-seed0/run.json").write_text(json.dumps(run | {"best_epoch": 12}))
    assert subprocess.run(seed, capture_output=True, text=True, check=True).stdout.startswith("nothing to seed")
    assert not (machine / "t5/runs/cdvae-task1-seed0/best.ckpt").exists()


def test_bundle_parts_fit_a_call_beside_the_tracked_files(tmp_path):
    """Without BUNDLE_MIB a part and the checkout's tracked files (which travel in every
    call) fit the 64 MiB a call carries."""
    home = tmp_path / "home"
    _work(home).rename(home / "gpu-work")
    _file(home / "gpu-work" / "t5" / "runs" / "symat-task1-seed0" / "last.ckpt", 62.0)  # paused: travels
    env = {k: v for k, v in os.environ.items() if k != "BUNDLE_MIB"}
    res = subprocess.run(["bash", str(ROOT / "benchmarks/table5_bundle.sh"), "5", "t5"], cwd=home, env=env,
                         check=True, capture_output=True, text=True)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are unknown")
    size = sum((ROOT / f).stat().st_size for f in tracked.stdout.decode().split("\0") if f and (ROOT / f).exists())
    parts = list((home / "gpu-work").glob("carry-5.tar.part-*"))
    assert parts, res.stdout  # over 62 MiB: never one call, whatever the tracked files weigh
    assert max(p.stat().st_size for p in parts) + size <= 64 * 2**20
    assert f"tracked files: {size // 2**20 + 1} MiB" in res.stdout
