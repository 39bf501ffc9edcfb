"""`c2np predict --resume`: a call killed mid-split keeps its finished batches, the next call
generates only the missing ones, and the file is byte-identical to an uninterrupted call's."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("pytorch_lightning")

from c2np.cli import app  # noqa: E402
from c2np.errors import C2NPError  # noqa: E402
from c2np.training import predict as predict_mod  # noqa: E402
from c2np.training.chunks import (  # noqa: E402
    ChunkFolder,
    chunk_dir,
    chunk_missing,
    chunk_progress,
    parse_shard,
    shard_batches,
)

runner = CliRunner()
TINY = ["--set", "model.hidden=16", "--set", "model.interactions=1", "--set", "model.gaussians=8",
        "--set", "train.workers=0", "--set", "train.epochs=1"]
TINY_T1 = [*TINY, "--set", "model.n_sigmas=2", "--set", "model.langevin_steps=1", "--set", "train.val_radii=[9]"]


@pytest.fixture(scope="module")
def runs(small_store, tmp_path_factory):
    """One-epoch checkpoints: SyMat Task 1 (the cheapest sampler) and CDVAE Task 2."""
    out = tmp_path_factory.mktemp("runs")
    for task, model, extra in ((1, "symat", TINY_T1), (2, "cdvae", TINY)):
        res = runner.invoke(app, ["train", "--task", str(task), "--model", model, "--store", str(small_store),
                                  "--out", str(out), "-q", *extra])
        assert res.exit_code == 0, res.output
    return {1: out / "symat-task1-seed0" / "best.ckpt", 2: out / "cdvae-task2-seed0" / "best.ckpt"}


class Killed(Exception):
    """Stands in for the kill at a GPU session's deadline."""


def _stop_at(monkeypatch, task: int, k: int) -> list[int]:
    """Make batch ``k`` of the next prediction fail; returns the list of batches started."""
    started: list[int] = []
    name = "generate_particles" if task == 1 else "_predict_lattices"
    real = getattr(predict_mod, name)

    def step(*args, **kwargs):
        started.append(len(started))
        if len(started) - 1 == k:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_mod, name, step)
    return started


@pytest.mark.parametrize("task, out_name", [(1, "t1.parquet"), (2, "t2.csv")])
def test_resumed_prediction_is_byte_identical_to_one_call(runs, small_store, tmp_path, monkeypatch, capsys, task,
                                                          out_name):
    ckpt = runs[task]
    kw = {"store": small_store, "split": "id", "seed": 3, "batch_size": 1, "progress": False}
    whole = predict_mod.predict(ckpt, out=tmp_path / "whole" / out_name, **kw)  # without --resume
    loss_file = ckpt.parent / "test_loss-id.json"
    loss = json.loads(loss_file.read_text())
    assert loss["seed"] == 3 and loss["batch_size"] == 1 and len(loss["checkpoint_sha256"]) == 64

    out = tmp_path / "resumed" / out_name
    with monkeypatch.context() as m:
        _stop_at(m, task, 2)
        with pytest.raises(Killed):
            predict_mod.predict(ckpt, out=out, resume=True, **kw)
    assert not out.exists() and chunk_progress(out) == (2, 3)  # 3 ID records, one per batch
    manifest = json.loads((chunk_dir(out) / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["split"] == "id" and manifest["batches"] == 3

    with monkeypatch.context() as m:
        started = _stop_at(m, task, -1)

        def no_loss(*a, **k):
            raise AssertionError("the test loss of this checkpoint and seed is on disk already")

        m.setattr(predict_mod, "write_test_loss", no_loss)
        capsys.readouterr()
        predict_mod.predict(ckpt, out=out, resume=True, **(kw | {"progress": True}))
    assert started == [0]  # only the missing batch was generated
    log = capsys.readouterr().err.splitlines()  # no terminal: the bar's start and end lines
    assert log[0] == f"predict task {task} id, batches of 1: 3 items, 2 done before ..."
    assert log[-1].startswith(f"predict task {task} id, batches of 1: 3/3 done in")
    assert out.read_bytes() == whole.read_bytes()
    assert not chunk_dir(out).exists() and chunk_progress(out) is None


def test_resume_refuses_another_prediction_and_recomputes_a_stale_loss(runs, small_store, tmp_path, monkeypatch):
    ckpt, out = runs[1], tmp_path / "t1.parquet"
    args = ["predict", "--checkpoint", str(ckpt), "--split", "id", "--store", str(small_store), "--out", str(out),
            "-q", "--resume", "--batch-size", "1"]
    with monkeypatch.context() as m:
        _stop_at(m, 1, 1)
        res = runner.invoke(app, args)
    assert isinstance(res.exception, Killed) and chunk_progress(out) == (1, 3)
    for other, key in ((["--seed", "1"], "seed"), (["--split", "ood"], "split")):
        res = runner.invoke(app, [*args, *other])
        assert res.exit_code == 2, res.output
        assert "holds batches of another prediction" in res.output and f"({key} " in res.output
    res = runner.invoke(app, [*args[:-1], "2"])  # --batch-size 2
    assert res.exit_code == 2 and "(batch_size 1 there, 2 now)" in res.output
    assert chunk_progress(out) == (1, 3)  # nothing lost
    loss_file = ckpt.parent / "test_loss-id.json"
    stale = json.loads(loss_file.read_text()) | {"checkpoint_sha256": "0" * 64, "loss": -1.0}
    loss_file.write_text(json.dumps(stale))  # another checkpoint's loss: computed again
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(loss_file.read_text())["loss"] != -1.0
    assert out.exists() and not chunk_dir(out).exists()


def test_a_call_without_resume_starts_over(runs, small_store, tmp_path, monkeypatch):
    ckpt, out = runs[1], tmp_path / "t1.parquet"
    kw = {"store": small_store, "split": "id", "batch_size": 1, "progress": False}
    with monkeypatch.context() as m:
        _stop_at(m, 1, 1)
        with pytest.raises(Killed):
            predict_mod.predict(ckpt, out=out, resume=True, **kw)
    started = _stop_at(monkeypatch, 1, -1)
    predict_mod.predict(ckpt, out=out, **kw)
    assert started == [0, 1, 2] and out.exists() and not chunk_dir(out).exists()


def test_chunk_folder_drops_the_temporaries_of_a_killed_write(tmp_path):
    out = tmp_path / "t1.parquet"
    assert ChunkFolder(out, {"split": "id", "batches": 3}).open() == set()
    chunks = ChunkFolder(out, {"split": "id", "batches": 3})
    chunks.path(0).write_text("done")
    killed = chunks.folder / ".batch-00001.parquet.x1y2.tmp"  # an atomic write cut off before its rename
    killed.write_text("half")
    assert chunk_progress(out) == (1, 3)
    assert chunks.open() == {0} and not killed.exists()
    with pytest.raises(C2NPError, match=r"\(batches 3 there, 4 now\)"):
        ChunkFolder(out, {"split": "id", "batches": 4}).open()
    assert chunks.path(0).exists()


@pytest.mark.parametrize("task, out_name", [(1, "t1.parquet"), (2, "t2.csv")])
def test_shards_of_one_prediction_meet_in_its_folder_and_the_last_writes_the_same_bits(
        runs, small_store, tmp_path, monkeypatch, task, out_name):
    ckpt = runs[task]
    kw = {"store": small_store, "split": "id", "seed": 5, "batch_size": 1, "progress": False}
    whole = predict_mod.predict(ckpt, out=tmp_path / "whole" / out_name, **kw)
    out = tmp_path / "sharded" / out_name
    with monkeypatch.context() as m:
        started = _stop_at(m, task, -1)
        assert predict_mod.predict(ckpt, out=out, resume=True, shard=(0, 2), **kw) is None
    assert started == [0, 1] and chunk_progress(out) == (2, 3)  # batches 0 and 2 of 3
    assert chunk_missing(out) == {1} and chunk_missing(out, (0, 2)) == set() and chunk_missing(out, (1, 2)) == {1}
    with monkeypatch.context() as m:
        started = _stop_at(m, task, -1)

        def no_loss(*a, **k):
            raise AssertionError("shard 0 wrote the test loss already")

        m.setattr(predict_mod, "write_test_loss", no_loss)
        assert predict_mod.predict(ckpt, out=out, resume=True, shard=(1, 2), **kw) == out
    assert started == [0]  # batch 1 only
    assert out.read_bytes() == whole.read_bytes() and not chunk_dir(out).exists()
    with monkeypatch.context() as m:  # a shard started after the join finds OUT and stops
        started = _stop_at(m, task, -1)
        assert predict_mod.predict(ckpt, out=out, resume=True, shard=(0, 2), **kw) == out
    assert started == [] and out.read_bytes() == whole.read_bytes()


def test_cli_shard_needs_resume_and_says_what_is_missing(runs, small_store, tmp_path):
    ckpt, out = runs[1], tmp_path / "t1.parquet"
    args = ["predict", "--checkpoint", str(ckpt), "--split", "id", "--store", str(small_store), "--out", str(out),
            "-q", "--batch-size", "1"]
    res = runner.invoke(app, [*args, "--shard", "1/2"])
    assert res.exit_code == 2 and "--shard needs --resume" in res.output
    for bad in ("2/2", "1", "a/b", "-1/2"):
        res = runner.invoke(app, [*args, "--resume", "--shard", bad])
        assert res.exit_code == 2 and "expected K/N with 0 <= K < N" in res.output, (bad, res.output)
    assert not out.exists() and not chunk_dir(out).exists()  # refused before anything was written
    res = runner.invoke(app, [*args, "--resume", "--shard", "1/3"])
    assert res.exit_code == 0, res.output
    assert "shard 1/3: its batches are done; 2 batches of other shards are still missing" in res.output
    assert chunk_missing(out) == {0, 2} and not out.exists()


def test_shard_batches_interleave_and_cover_every_batch_once():
    assert parse_shard("1/3") == (1, 3)
    shards = [shard_batches(10, (k, 3)) for k in range(3)]
    assert shards == [{0, 3, 6, 9}, {1, 4, 7}, {2, 5, 8}]
    assert set().union(*shards) == shard_batches(10, None) == set(range(10))


def test_a_shard_leaves_the_temporaries_of_other_shards_alone(tmp_path):
    out = tmp_path / "t1.parquet"
    chunks = ChunkFolder(out, {"split": "id", "batches": 4})
    chunks.open()
    ours, theirs = (chunks.folder / f".batch-0000{b}.parquet.x1y2.tmp" for b in (0, 1))
    for tmp in (ours, theirs):
        tmp.write_text("half")
    with chunks.locked():
        assert chunks.open(shard_batches(4, (0, 2))) == set()
    assert not ours.exists() and theirs.exists()  # shard 1 may be writing batch 1 right now
