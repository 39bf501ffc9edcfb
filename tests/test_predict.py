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
from c2np.training.chunks import ChunkFolder, chunk_dir, chunk_progress  # noqa: E402

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
