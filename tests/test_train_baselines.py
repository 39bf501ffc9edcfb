"""benchmarks/train_baselines.py: the pipeline state lives in files, so a call that is cut
off resumes where it stopped and never redoes or skips a phase. A fake ``c2np`` stands in
for training, prediction and scoring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from benchmark_scripts import load_benchmark

from c2np.config import SPLITS, UNSEEN_SPLITS
from c2np.training.chunks import ChunkFolder, chunk_batch_size

ROOT = Path(__file__).resolve().parents[1]

FAKE_C2NP = r'''
import json, os, sys, time
from pathlib import Path
from c2np.training.chunks import ChunkFolder
args = sys.argv[1:]
opt = lambda k: args[args.index(k) + 1]
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(" ".join(args[:1] + [m for m in ("adit", "cdvae") if any(m in a for a in args)]
                      + (["compiled"] if "--compile" in args else [])
                      + ([f"batch{opt('--batch-size')}"] if "--batch-size" in args else [])
                      + ([f"shard{opt('--shard')}"] if "--shard" in args else [])
                      + ([f"attn{opt('--attention')}"] if "--attention" in args else [])) + "\n")
if "FAKE_GPU_LOG" in os.environ:  # which GPUs a command saw, and whether it trained with DDP
    with open(os.environ["FAKE_GPU_LOG"], "a") as fh:
        devices = opt("--devices") if "--devices" in args else "1"
        fh.write(f"{args[0]} {opt('--model') if '--model' in args else '-'} "
                 f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')} {devices}\n")
if args[0] == "train":
    run = Path(opt("--out")) / f"{opt('--model')}-task{opt('--task')}-seed{opt('--seed')}"
    run.mkdir(parents=True, exist_ok=True)
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {"epochs": 0}
    info["epochs"] += 1
    # "cdvae" converges at its second call, "adit" never does
    done = opt("--model") == "cdvae" and info["epochs"] >= 2
    # the objective versions of c2np.models (Task 1: 2, Task 2: 1), as `c2np train` records them
    info.update(stop_reason="converged" if done else "paused", best_val_loss=1.0, best_epoch=0,
                time_per_epoch=1.0, objective_version=2 if opt("--task") == "1" else 1)
    (run / "run.json").write_text(json.dumps(info))
    (run / "best.ckpt").write_text("w")
elif args[0] == "predict":
    # 4 batches kept in OUT.chunks/ as `c2np predict --resume` keeps them; FAKE_HANG_AFTER=k
    # hangs before batch k, as a sampler that the deadline cuts off
    out = Path(opt("--out"))
    manifest = {"split": opt("--split"), "seed": opt("--seed"), "batches": 4}
    if "--batch-size" in args:  # as the real one, a folder cut at another batch size is refused
        manifest["batch_size"] = int(opt("--batch-size"))
    if "--attention" in args:  # and one of another precision
        manifest["attention"] = opt("--attention")
    chunks = ChunkFolder(out, manifest)
    assert "--resume" in args
    # as the real one: shards of a split starting (or finishing) at once take turns, or one
    # finds the folder another has just made (FileExistsError, seen as a flaky test in s26)
    with chunks.locked():
        if "--shard" in args and out.exists() and not chunks.folder.exists():
            sys.exit(0)
        done = chunks.open()
    k, n = map(int, opt("--shard").split("/")) if "--shard" in args else (0, 1)
    for b in sorted(set(range(k, 4, n)) - done):
        if b == int(os.environ.get("FAKE_HANG_AFTER", -1)) and os.environ.get("FAKE_HANG_SPLIT",
                                                                              opt("--split")) == opt("--split"):
            time.sleep(120)
        chunks.path(b).write_text(f"{opt('--split')} batch {b}\n")
        with open(os.environ["FAKE_LOG"], "a") as fh:
            fh.write(f"batch {opt('--split')} {b}\n")
    with chunks.locked():  # a shard's call: the last to finish joins
        if chunks.folder.exists() and len(chunks.finished()) == 4:
            out.write_text("".join(chunks.path(b).read_text() for b in range(4)))
            chunks.remove()
elif args[0] == "evaluate":
    assert "--resume" in args  # a Task 1 scoring cut off at the deadline continues in the next call
    Path(opt("--scores")).write_text("per-sample rows")
    Path(opt("--out")).write_text(json.dumps({"from": args[0]}))
'''


@pytest.fixture
def tb():
    return load_benchmark("train_baselines")


def _runner(tb, tmp_path: Path, monkeypatch, splits: list[str]):
    fake = tmp_path / "fake_c2np.py"
    fake.write_text(FAKE_C2NP)
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    pipe = tb.Pipeline(tmp_path / "W", tmp_path / "store", splits)
    runner = tb.Runner(pipe, [sys.executable, str(fake)], gpus=1, first_gpu=0, per_gpu=2, jobs=1,
                       deadline=time.time() + 600, reserve=0, overrides=[])
    runner.stagger_s = 0.0
    return pipe, runner


def test_pipelines_resume_across_calls_and_finish_each_phase_once(tb, tmp_path, monkeypatch):
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    cdvae, adit = tb.Job("cdvae", 2, 0), tb.Job("adit", 2, 0)
    runner.run([cdvae, adit])  # call 1: both train once; neither has converged
    assert not pipe.trained(cdvae) and not any(pipe.pred(cdvae, s).exists() for s in pipe.splits)
    runner.run([cdvae, adit])  # call 2: cdvae converges, then is predicted and scored
    assert pipe.scored(cdvae) and not pipe.trained(adit) and not pipe.scored(adit)
    assert not list((pipe.work / "preds").glob("*.partial.*"))
    for split in pipe.splits:  # every result keeps its per-sample rows beside it
        assert pipe.result(cdvae, split).with_suffix(".scores.parquet").exists()
    runner.run([j for j in (cdvae, adit) if not pipe.scored(j)])  # call 3: only adit trains
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls.count("train cdvae") == 2 and calls.count("train adit") == 3
    assert calls.count("predict cdvae") == 2 and calls.count("evaluate cdvae") == 2
    assert not any(c.startswith(("predict adit", "evaluate adit")) for c in calls)
    table = tb.status_table(pipe, [cdvae, adit])
    assert "| cdvae-task2-seed0 | 2 | converged |" in table and "| 2/2 | 2/2 |" in table
    assert "| adit-task2-seed0 | 3 | paused |" in table and "| 0/2 | 0/2 |" in table


def test_gpu_groups_train_with_ddp_and_predict_on_their_first_gpu(tb, tmp_path, monkeypatch):
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id"])
    monkeypatch.setenv("FAKE_GPU_LOG", str(tmp_path / "gpus.log"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # what the runner itself was given
    runner.gpus, runner.per_gpu, runner.gpus_per_run = 4, 1, 2
    jobs = [tb.Job("cdvae", 1, 0), tb.Job("cdvae", 1, 1)]
    for _ in range(2):  # the fake cdvae converges at its second training call
        runner.run([j for j in jobs if not pipe.scored(j)])
    assert all(pipe.scored(j) for j in jobs)
    lines = sorted(set((tmp_path / "gpus.log").read_text().splitlines()))
    # two slots, one per group: GPUs 0,1 and 2,3; each job trains in one of them
    assert {ln for ln in lines if ln.startswith("train")} <= {"train cdvae 0,1 2", "train cdvae 2,3 2"}
    assert {ln for ln in lines if ln.startswith("predict")} <= {"predict - 0 1", "predict - 2 1"}
    assert {ln for ln in lines if ln.startswith("evaluate")} == {"evaluate - 7 1"}  # scoring: no GPU chosen
    with pytest.raises(ValueError, match="groups of 2"):
        tb.Runner(pipe, runner.c2np, gpus=3, first_gpu=0, per_gpu=1, jobs=1, deadline=0, reserve=0,
                  overrides=[], gpus_per_run=2)


def test_scored_txt_lists_the_runs_scored_on_every_split(tb, tmp_path, monkeypatch):
    pipe, _ = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    whole, half, other = tb.Job("cdvae", 2, 0), tb.Job("cdvae", 1, 0), tb.Job("adit", 2, 1)
    for job in (whole, half, other):
        pipe.run_dir(job).mkdir(parents=True)
    for job, splits in ((whole, ["id", "ood"]), (half, ["id"]), (other, ["id", "ood"])):
        for split in splits:
            pipe.result(job, split).write_text("{}")
    (pipe.work / "runs" / "notes").mkdir()  # not a run
    table = pipe.write_status([whole, half])  # `other` came from another plan: listed all the same
    assert (pipe.work / "scored.txt").read_text().split() == ["adit-task2-seed1", "cdvae-task2-seed0"]
    assert (pipe.work / "status.md").read_text() == table + "\n" and "cdvae-task1-seed0" in table


def test_no_phase_starts_past_the_deadline(tb, tmp_path, monkeypatch):
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    runner.deadline = time.time() + 30  # less than a training slice needs
    runner.run([tb.Job("cdvae", 2, 0)])
    assert not (tmp_path / "calls.log").exists()


def test_plan_order_and_splits_of_a_store(tb, tmp_path):
    jobs = tb.parse_plan("symat:2 cdvae:1", [0, 1])
    assert [j.name for j in jobs] == ["symat-task2-seed0", "symat-task2-seed1", "cdvae-task1-seed0",
                                      "cdvae-task1-seed1"]
    with pytest.raises(SystemExit, match="symat:3"):
        tb.parse_plan("symat:3", [0])
    held_out = SimpleNamespace(splits=SPLITS + UNSEEN_SPLITS)  # a materials-scheme store's splits
    assert tb.store_splits(held_out) == ["id", "ood", "unseen_id", "unseen_ood"]
    assert tb.store_splits(SimpleNamespace(splits=SPLITS)) == ["id", "ood"]


def _tar_parts(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.glob("*.tgz.part-*")))


def _packed(tb, pipe, jobs, out: Path) -> list[str]:
    tb.pack(pipe.work, out, pipe, jobs, keep_ckpt=False)
    listing = subprocess.run(["tar", "tzf", "-"], input=_tar_parts(out), capture_output=True, check=True)
    return [line.removeprefix("./") for line in listing.stdout.decode().splitlines()]


def test_a_prediction_cut_off_at_the_deadline_continues_in_the_next_call(tb, tmp_path, monkeypatch):
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    job = tb.Job("cdvae", 1, 0)
    run = pipe.run_dir(job)
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"epochs": 9, "stop_reason": "converged", "time_per_epoch": 1.0,
                                              "objective_version": 2}))
    (run / "best.ckpt").write_text("w")
    runner.per_gpu = 1  # one slot: the splits are predicted one after the other
    # call 1 ends 3 s from now, while the ID prediction hangs before its third batch
    runner.start_s, runner.deadline = 0.5, time.time() + 3
    monkeypatch.setenv("FAKE_HANG_AFTER", "2")
    runner.run([job])
    out = pipe.pred(job, "id")
    assert not out.exists() and tb.chunk_progress(out) == (2, 4)
    assert "| 0/2 (id 2/4) | 0/2 |" in tb.status_table(pipe, [job])
    (pipe.work / "preds" / ".x.parquet.123.tmp").write_text("a killed atomic write")
    packed = _packed(tb, pipe, [job], tmp_path / "pack1")
    chunks = "preds/cdvae-task1-id-seed0.parquet.chunks/"
    assert {chunks + "batch-00001.parquet", chunks + "manifest.json"} <= set(packed)
    assert not any(name.endswith(".tmp") for name in packed)

    # call 2, on a fresh machine: W unpacked from call 1's parts, a whole slice
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    subprocess.run(["tar", "xzf", "-", "-C", str(fresh)], input=_tar_parts(tmp_path / "pack1"), check=True)
    pipe = tb.Pipeline(fresh, pipe.store, pipe.splits)
    runner.pipe, runner.start_s, runner.deadline = pipe, 60.0, time.time() + 600
    monkeypatch.delenv("FAKE_HANG_AFTER")
    runner.run([job])
    assert pipe.scored(job)
    assert pipe.pred(job, "id").read_text() == "".join(f"id batch {b}\n" for b in range(4))
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c for c in calls if c.startswith("batch id")] == [f"batch id {b}" for b in range(4)]  # none twice
    assert calls.count("predict cdvae") == 3  # id cut off, id resumed, ood
    assert "| 2/2 | 2/2 |" in tb.status_table(pipe, [job])
    stale = tb.chunk_dir(pipe.pred(job, "ood"))  # as if killed between writing OUT and removing these
    stale.mkdir()
    (stale / "batch-00000.parquet").write_text("ood batch 0")
    assert not any(".chunks" in name for name in _packed(tb, pipe, [job], tmp_path / "pack2"))


def test_a_split_is_scored_while_the_next_one_is_predicted(tb, tmp_path, monkeypatch):
    # s13: three ID splits came home unscored because their OOD predictions ran to the
    # deadline, and the runner scored a run only after all its predictions
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    job = tb.Job("cdvae", 1, 0)
    _converged(pipe, job)
    runner.start_s, runner.score_s, runner.deadline = 0.5, 0.5, time.time() + 6
    monkeypatch.setenv("FAKE_HANG_AFTER", "1")
    monkeypatch.setenv("FAKE_HANG_SPLIT", "ood")  # the OOD prediction runs to the deadline
    runner.run([job])
    assert pipe.result(job, "id").exists() and not pipe.result(job, "ood").exists()
    assert tb.chunk_progress(pipe.pred(job, "ood")) == (1, 4)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls.count("evaluate cdvae") == 1  # ID, once, while OOD was being predicted


def test_a_scored_split_whose_predictions_stayed_behind_is_not_predicted_again(tb, tmp_path, monkeypatch):
    # the return trip brings results but may leave predictions on the GPU machine
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    job = tb.Job("cdvae", 1, 0)
    for _ in range(2):
        runner.run([job])
    assert pipe.scored(job)
    pipe.pred(job, "id").unlink()
    pipe.result(job, "ood").unlink()
    pipe.pred(job, "ood").unlink()
    (tmp_path / "calls.log").write_text("")
    runner.run([job])
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c for c in calls if not c.startswith("batch")] == ["predict cdvae", "evaluate cdvae"]
    assert {c for c in calls if c.startswith("batch")} == {f"batch ood {b}" for b in range(4)}
    assert pipe.scored(job) and not pipe.pred(job, "id").exists()


def test_task1_prediction_is_compiled_for_the_chosen_families_only(tb, tmp_path, monkeypatch):
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id"])
    runner.compile_predict = frozenset({"cdvae"})
    jobs = [tb.Job("cdvae", 1, 0), tb.Job("cdvae", 2, 0), tb.Job("adit", 1, 0)]
    for name in ("cdvae-task1-seed0", "cdvae-task2-seed0", "adit-task1-seed0"):  # trained already
        run = pipe.work / "runs" / name
        run.mkdir(parents=True)
        version = 2 if "task1" in name else 1
        (run / "run.json").write_text(json.dumps({"epochs": 3, "stop_reason": "converged", "objective_version": version}))
        (run / "best.ckpt").write_text("w")
    runner.run(jobs)
    predicted = [c for c in (tmp_path / "calls.log").read_text().splitlines() if c.startswith("predict")]
    # the Task 2 and ADiT predictions stay eager; only CDVAE's Task 1 sampler is compiled
    assert sorted(predicted) == ["predict adit", "predict cdvae", "predict cdvae compiled"]


def test_a_runner_predicts_in_batches_of_the_size_it_is_given(tb, tmp_path, monkeypatch):
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id"])
    runner.predict_batch = 8  # --predict-batch 8 (table5_gpu.sh: a layout line's ninth field)
    job = tb.Job("cdvae", 1, 0)
    pipe.run_dir(job).mkdir(parents=True)
    (pipe.run_dir(job) / "run.json").write_text(json.dumps({"epochs": 3, "stop_reason": "converged",
                                                            "objective_version": 2}))
    (pipe.run_dir(job) / "best.ckpt").write_text("w")
    runner.run([job])
    assert [c for c in (tmp_path / "calls.log").read_text().splitlines() if c.startswith("predict")] == [
        "predict cdvae batch8"]


def _converged(pipe, job) -> None:
    pipe.run_dir(job).mkdir(parents=True)
    (pipe.run_dir(job) / "run.json").write_text(json.dumps({"epochs": 3, "stop_reason": "converged",
                                                            "objective_version": 2}))
    (pipe.run_dir(job) / "best.ckpt").write_text("w")


def test_a_prediction_under_way_keeps_its_batch_size_when_the_layout_changes_it(tb, tmp_path, monkeypatch):
    # s13: a layout gave --predict-batch 8 to a run whose ID prediction was cut at 4 a batch;
    # every call refused to resume it (rc 2), and its ID split was never finished
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    job = tb.Job("cdvae", 1, 0)
    _converged(pipe, job)
    folder = ChunkFolder(pipe.pred(job, "id"), {"split": "id", "seed": "0", "batches": 4, "batch_size": 4})
    folder.open()
    folder.path(0).write_text("id batch 0\n")
    assert chunk_batch_size(pipe.pred(job, "id")) == 4 and chunk_batch_size(pipe.pred(job, "ood")) is None
    runner.predict_batch = 8
    runner.run([job])
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert sorted(c for c in calls if c.startswith("predict")) == ["predict cdvae batch4", "predict cdvae batch8"]
    assert [c for c in calls if c.startswith("batch id")] == [f"batch id {b}" for b in (1, 2, 3)]
    assert pipe.scored(job)


def test_bf16_attention_goes_to_the_chosen_task1_families_and_a_split_under_way_keeps_fp32(tb, tmp_path,
                                                                                         monkeypatch):
    """--bf16-attention adit: ADiT's Task 1 splits not started yet generate with `--attention
    bf16`; its ID split, cut off in fp32 in an earlier call, goes on in fp32 (c2np predict
    --resume refuses to mix); CDVAE Task 1 and ADiT Task 2 get no flag."""
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    runner.bf16_attention = frozenset({"adit"})
    jobs = [tb.Job("adit", 1, 0), tb.Job("adit", 2, 0), tb.Job("cdvae", 1, 0)]
    for job in jobs:
        _converged(pipe, job)
        if job.task == 2:
            (pipe.run_dir(job) / "run.json").write_text(json.dumps({"epochs": 3, "stop_reason": "converged",
                                                                    "objective_version": 1}))
    under_way = ChunkFolder(pipe.pred(jobs[0], "id"), {"split": "id", "seed": "0", "batches": 4})
    under_way.open()
    under_way.path(0).write_text("id batch 0\n")
    runner.run(jobs)
    predicted = [c for c in (tmp_path / "calls.log").read_text().splitlines() if c.startswith("predict")]
    assert sorted(predicted) == ["predict adit", "predict adit", "predict adit", "predict adit attnbf16",
                                 "predict cdvae", "predict cdvae"]
    assert all(pipe.pred(j, s).exists() for j in jobs for s in ("id", "ood"))


def test_the_runner_generates_adit_task1_in_bf16_unless_told_otherwise(tb):
    """The committed ADiT Task 1 results were generated with bf16 attention (measured against
    fp32 by benchmarks/adit_attention.py: same scores), so a fresh clone's runner must make
    them the same way; `--bf16-attention ''` goes back to fp32 everywhere."""
    required = ["--store", "s", "--work", "w", "--plan", "adit:1"]
    assert tb.families(tb.parser().parse_args(required).bf16_attention) == {"adit"}
    assert tb.families(tb.parser().parse_args([*required, "--bf16-attention", ""]).bf16_attention) == frozenset()


def test_score_only_scores_finished_predictions_and_neither_trains_nor_predicts(tb, tmp_path, monkeypatch):
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    runner.score_only = True
    done, untrained = tb.Job("cdvae", 1, 0), tb.Job("adit", 1, 0)
    _converged(pipe, done)
    pipe.pred(done, "id").parent.mkdir(parents=True, exist_ok=True)
    pipe.pred(done, "id").write_text("id predictions")  # ood: not predicted (still on the GPU machine)
    runner.run([done, untrained])
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == ["evaluate cdvae"]
    assert pipe.result(done, "id").exists() and not pipe.result(done, "ood").exists()
    assert not pipe.run_dir(untrained).exists()
    runner.run([done, untrained])  # a scored split is not scored again
    assert (tmp_path / "calls.log").read_text().splitlines() == calls


def test_status_table_shows_a_staged_runs_finished_stages(tb, tmp_path):
    pipe = tb.Pipeline(tmp_path / "W", tmp_path / "store", ["id", "ood"])
    job = tb.Job("adit", 1, 0)
    pipe.run_dir(job).mkdir(parents=True)
    (pipe.run_dir(job) / "run.json").write_text(json.dumps({
        "epochs": 50, "stop_reason": "paused", "best_val_loss": 5.1, "best_epoch": 48, "time_per_epoch": 40.0,
        "stages": [{"stage": "vae", "converged_epoch": 41, "best_epoch": 31, "best_val_loss": 0.2}]}))
    assert "| adit-task1-seed0 | 50 | paused; vae converged at 41 | 5.1 (48) |" in tb.status_table(pipe, [job])


def test_a_run_finished_under_an_older_objective_trains_on_and_is_predicted_afresh(tb, tmp_path, monkeypatch):
    """A Task 1 run converged under objective version 1 (no version in its run.json): its
    predictions, results and Loss-column files go to W/superseded/objective-v1/, it trains
    on, and it is predicted and scored again; a Task 2 run of the same age is finished."""
    from c2np.config import OBJECTIVE_VERSIONS

    assert OBJECTIVE_VERSIONS == {1: 2, 2: 1}  # as the fake writes
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    old, task2 = tb.Job("cdvae", 1, 0), tb.Job("cdvae", 2, 0)
    for job in (old, task2):
        pipe.run_dir(job).mkdir(parents=True)
        (pipe.run_dir(job) / "run.json").write_text(json.dumps(
            {"epochs": 70, "stop_reason": "converged", "best_val_loss": 2.4, "best_epoch": 59, "time_per_epoch": 5.0}))
        (pipe.run_dir(job) / "best.ckpt").write_text("v1 weights")
        (pipe.work / "preds").mkdir(exist_ok=True)
        (pipe.work / "results").mkdir(exist_ok=True)
        for split in pipe.splits:
            pipe.pred(job, split).write_text("v1 particles")
            pipe.result(job, split).write_text("{}")
            (pipe.run_dir(job) / f"test_loss-{split}.json").write_text("{}")
    (pipe.work / "preds" / "cdvae-task1-ood-seed0.parquet.chunks").mkdir()  # a cut-off prediction's batches
    assert not pipe.trained(old) and pipe.trained(task2) and pipe.older_objective(old) == 1
    assert "converged (objective v1: trains on) |" in tb.status_table(pipe, [old])
    said = []
    tb.set_aside_superseded(pipe, [old, task2], said.append)
    aside = pipe.work / "superseded" / "objective-v1"
    assert sorted(str(p.relative_to(aside)) for p in aside.rglob("*") if p.is_file()) == sorted([
        "preds/cdvae-task1-id-seed0.parquet", "preds/cdvae-task1-ood-seed0.parquet",
        "results/cdvae-task1-id-seed0.json", "results/cdvae-task1-ood-seed0.json",
        "runs/cdvae-task1-seed0/run.json", "runs/cdvae-task1-seed0/test_loss-id.json",
        "runs/cdvae-task1-seed0/test_loss-ood.json"])
    assert (aside / "preds" / "cdvae-task1-ood-seed0.parquet.chunks").is_dir()
    assert said and "7 files set aside" in said[0] and len(said) == 1
    assert pipe.scored(task2) and not pipe.scored(old)
    runner.run([old])
    calls = [c for c in (tmp_path / "calls.log").read_text().splitlines() if not c.startswith("batch")]
    # each split is scored as soon as it is predicted, beside the next prediction: any order
    assert calls[0] == "train cdvae" and sorted(calls[1:]) == ["evaluate cdvae"] * 2 + ["predict cdvae"] * 2
    assert pipe.scored(old) and pipe.older_objective(old) is None
    assert (pipe.run_dir(old) / "run.json").exists()  # the run itself stays: it resumes from last.ckpt


@pytest.mark.parametrize("per_gpu, gpus_per_run", [(1, 1), (2, 2)], ids=["a slot a GPU", "a DDP group of 2"])
def test_a_trained_runs_splits_are_predicted_side_by_side_on_different_gpus(tb, tmp_path, monkeypatch,
                                                                            per_gpu, gpus_per_run):
    # until s14 a trained run's splits were predicted one after the other in its slot, also
    # while the runner's other slots had nothing left to do; a run trained with DDP now
    # generates its split k on GPU k of its group
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    monkeypatch.setenv("FAKE_GPU_LOG", str(tmp_path / "gpus.log"))
    runner.gpus, runner.per_gpu, runner.gpus_per_run = 2, per_gpu, gpus_per_run  # two slots, GPUs 0 and 1
    job = tb.Job("cdvae", 1, 0)
    _converged(pipe, job)
    runner.run([job])
    assert pipe.scored(job)
    lines = (tmp_path / "gpus.log").read_text().splitlines()
    assert sorted(ln for ln in lines if ln.startswith("predict")) == ["predict - 0 1", "predict - 1 1"]
    assert sum(ln.startswith("evaluate") for ln in lines) == 2  # each split scored once


def test_a_trained_runs_splits_come_before_runs_not_started(tb, tmp_path, monkeypatch):
    # the OOD split goes back to the queue when its run is trained: a finished run's results
    # come first, a new run's training after them
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    runner.per_gpu = 1  # one slot
    done, new = tb.Job("cdvae", 1, 0), tb.Job("adit", 1, 0)
    _converged(pipe, done)
    runner.run([done, new])
    calls = [c for c in (tmp_path / "calls.log").read_text().splitlines() if not c.startswith(("batch", "evaluate"))]
    assert calls == ["predict cdvae", "predict cdvae", "train adit"]



def test_sharded_splits_spread_over_the_groups_gpus_and_each_batch_is_made_once(tb, tmp_path, monkeypatch):
    # s21: on two GPUs, the two Task 1 splits of a converged run would leave one GPU's share
    # per split; with --predict-shards 2 each split is two processes, one a GPU
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id", "ood"])
    monkeypatch.setenv("FAKE_GPU_LOG", str(tmp_path / "gpus.log"))
    runner.gpus, runner.per_gpu, runner.gpus_per_run, runner.shards = 2, 4, 2, 2
    job = tb.Job("cdvae", 1, 0)
    _converged(pipe, job)
    # call 1 ends while ID's shard 1 hangs before its batch 3; shard 0 finishes batches 0 and 2
    runner.start_s, runner.deadline = 0.5, time.time() + 4
    monkeypatch.setenv("FAKE_HANG_AFTER", "3")
    monkeypatch.setenv("FAKE_HANG_SPLIT", "id")
    runner.run([job])
    assert pipe.pred(job, "ood").exists() and not pipe.pred(job, "id").exists()  # too late to score
    assert tb.chunk_missing(pipe.pred(job, "id")) == {3}
    gpus = [ln for ln in (tmp_path / "gpus.log").read_text().splitlines() if ln.startswith("predict")]
    assert sorted(gpus) == ["predict - 0 1", "predict - 0 1", "predict - 1 1", "predict - 1 1"]

    # call 2: only ID's shard 1 is left; shard 0 is not started again
    monkeypatch.delenv("FAKE_HANG_AFTER")
    runner.start_s, runner.deadline = 60.0, time.time() + 600
    runner.run([job])
    assert pipe.scored(job)
    assert pipe.pred(job, "id").read_text() == "".join(f"id batch {b}\n" for b in range(4))
    calls = (tmp_path / "calls.log").read_text().splitlines()
    for split in ("id", "ood"):  # every batch made once
        assert sorted(c for c in calls if c.startswith(f"batch {split}")) == [f"batch {split} {b}" for b in range(4)]
    assert sorted(c for c in calls if c.startswith("predict")) == [
        "predict cdvae shard0/2", "predict cdvae shard0/2", "predict cdvae shard1/2", "predict cdvae shard1/2",
        "predict cdvae shard1/2"]  # ID's shard 1 twice: cut off, then resumed
    assert sum(c.startswith("evaluate") for c in calls) == 2


@pytest.mark.parametrize("shards", [1, 2])
def test_a_prediction_with_every_batch_on_disk_but_no_file_is_joined(tb, tmp_path, monkeypatch, shards):
    # a call killed between a prediction's last batch and its join leaves every batch and no
    # OUT: the next call must join them, also when every shard's own batches are done
    pipe, runner = _runner(tb, tmp_path, monkeypatch, ["id"])
    runner.shards, runner.per_gpu = shards, 1  # one slot: the fake c2np takes no lock
    job = tb.Job("cdvae", 1, 0)
    _converged(pipe, job)
    out = pipe.pred(job, "id")
    chunks = ChunkFolder(out, {"split": "id", "seed": "0", "batches": 4})
    chunks.open()
    for b in range(4):
        chunks.path(b).write_text(f"id batch {b}\n")
    runner.run([job])
    assert pipe.scored(job) and not tb.chunk_dir(out).exists()
    assert not any(c.startswith("batch") for c in (tmp_path / "calls.log").read_text().splitlines())


def test_a_pack_larger_than_a_machine_returns_is_announced_with_its_cause(tb, tmp_path, monkeypatch):
    # s32: a call returned one runner's 5 parts and silently dropped the other's 8, whose
    # bulk was complete predictions not yet scored
    pipe = tb.Pipeline(tmp_path / "W", tmp_path / "store", ["id", "ood"])
    job = tb.Job("cdvae", 1, 0)
    pred = pipe.pred(job, "id")
    pred.write_bytes(os.urandom(3 * 2 ** 20))  # incompressible
    parts = tb.pack(pipe.work, tmp_path / "out", pipe, [job], keep_ckpt=False)
    assert parts and all(p.exists() for p in parts)
    fits = tb.pack_summary(parts, pipe, [job])
    assert fits.startswith("packed 1 part(s), 3.0 MiB") and "WARNING" not in fits
    monkeypatch.setattr(tb, "RETURN_MIB", 2)
    warning = tb.pack_summary(parts, pipe, [job])
    assert warning.startswith("WARNING") and "1 complete prediction(s) of runs not yet scored hold 3.0 MiB" in warning
    monkeypatch.setattr(tb, "RETURN_MIB", 64)
    monkeypatch.setattr(tb, "RETURN_FILES", 0)  # too many parts warns as well
    assert tb.pack_summary(parts, pipe, [job]).startswith("WARNING")
