"""benchmarks/train_baselines.py: the pipeline state lives in files, so a call that is cut
off resumes where it stopped and never redoes or skips a phase. A fake ``c2np`` stands in
for training, prediction and scoring."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from c2np.config import SPLITS, UNSEEN_SPLITS

ROOT = Path(__file__).resolve().parents[1]

FAKE_C2NP = r'''
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
opt = lambda k: args[args.index(k) + 1]
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(" ".join(args[:1] + [m for m in ("adit", "cdvae") if any(m in a for a in args)]) + "\n")
if args[0] == "train":
    run = Path(opt("--out")) / f"{opt('--model')}-task{opt('--task')}-seed{opt('--seed')}"
    run.mkdir(parents=True, exist_ok=True)
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {"epochs": 0}
    info["epochs"] += 1
    # "cdvae" converges at its second call, "adit" never does
    done = opt("--model") == "cdvae" and info["epochs"] >= 2
    info.update(stop_reason="converged" if done else "paused", best_val_loss=1.0, best_epoch=0,
                time_per_epoch=1.0)
    (run / "run.json").write_text(json.dumps(info))
    (run / "best.ckpt").write_text("w")
elif args[0] in ("predict", "evaluate"):
    Path(opt("--out")).write_text(json.dumps({"from": args[0]}))
'''


@pytest.fixture
def tb():
    spec = importlib.util.spec_from_file_location("train_baselines", ROOT / "benchmarks" / "train_baselines.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


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
    runner.run([j for j in (cdvae, adit) if not pipe.scored(j)])  # call 3: only adit trains
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls.count("train cdvae") == 2 and calls.count("train adit") == 3
    assert calls.count("predict cdvae") == 2 and calls.count("evaluate cdvae") == 2
    assert not any(c.startswith(("predict adit", "evaluate adit")) for c in calls)
    table = tb.status_table(pipe, [cdvae, adit])
    assert "| cdvae-task2-seed0 | 2 | converged |" in table and "| 2/2 | 2/2 |" in table
    assert "| adit-task2-seed0 | 3 | paused |" in table and "| 0/2 | 0/2 |" in table


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
