"""Train the learned baselines to convergence, then predict and score their whole test
sets, in slices that fit short GPU sessions (the successor of train_baselines.sh).

    python benchmarks/train_baselines.py --store c2np-store --work W \\
        --plan "symat:2 diffcsp:2 cdvae:1" --seeds 0 1 2 --deadline 540

Every (model, task, seed) of PLAN x SEEDS is a pipeline of three phases, each skipped when
its files exist in W:

1. train: ``c2np train --resume --budget`` (continues from last.ckpt) until the run is
   finished (converged, or its epoch/time limit) or the deadline;
2. predict: ``best.ckpt`` on every test split of the store (radius scheme: id, ood;
   materials scheme: also unseen_id, unseen_ood), which also writes the Loss column
   (``test_loss-SPLIT.json``); ``c2np predict --resume`` keeps every finished batch in
   ``preds/NAME.parquet.chunks/``, so a prediction cut off at the deadline continues in the
   next call where it stopped (the status table shows it as e.g. ``id 37/61`` batches);
   with ``--predict-shards N``, N processes share each split (``c2np predict --shard K/N``,
   the same particles), on the GPUs of the slot's group in turn;
3. score: ``c2np evaluate --run-info --resume`` into ``W/results`` (NAME.json and its
   per-sample rows, NAME.scores.parquet), on the CPU, for each split as soon as its
   prediction is complete (up to ``--score-workers`` at once, beside the GPU work); a Task 1
   scoring cut off at the deadline keeps its scored samples in
   ``results/NAME.partial.json.chunks/`` and the next call continues it.

A pool of ``GPUS x PER_GPU`` slots takes pipelines in PLAN order; a slot whose run has
converged goes straight on to its prediction and scoring, then to the next pipeline, so no
slot waits for the slowest run; the run's other splits go back to the queue ahead of the
pipelines not started yet, so a free slot predicts them beside it. Call again with the same
W until it prints "all done"; W holds everything (runs with checkpoints, predictions,
results, logs, a status table).
``--pack OUT`` tars W into 15 MiB parts (the lent GPU machines return files of at most
16 MiB; a larger one is silently lost): unpack with ``cat OUT/W.tgz.part-* | tar xzf -``.
It prints the pack's size, and a warning when the pack alone is more than such a machine
returns (8 files, 64 MiB together): then score the complete predictions first.
Scored runs leave their checkpoints and predictions out of the pack unless ``--keep-ckpt``;
the batches of unfinished predictions go into it, those of finished ones do not.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from c2np import open_dataset
from c2np.config import FINAL_STOP_REASONS, objective_version, recorded_objective
from c2np.errors import StoreError
from c2np.training.chunks import chunk_attention, chunk_batch_size, chunk_dir, chunk_missing, chunk_progress

#: kinds of work in a runner's queue, in the order free slots take them
PREDICT, RUN = 0, 1


@dataclass(frozen=True)
class Job:
    model: str
    task: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}-task{self.task}-seed{self.seed}"


class Pipeline:
    """File layout and phase state of the runs under one work directory."""

    def __init__(self, work: Path, store: Path, splits: list[str]) -> None:
        self.work, self.store, self.splits = work, store, splits
        for sub in ("runs", "preds", "results", "logs"):
            (work / sub).mkdir(parents=True, exist_ok=True)

    def run_dir(self, job: Job) -> Path:
        return self.work / "runs" / job.name

    def run_info(self, job: Job) -> dict | None:
        try:
            return json.loads((self.run_dir(job) / "run.json").read_text())
        except (OSError, ValueError):
            return None

    def trained(self, job: Job) -> bool:
        info = self.run_info(job)
        return (bool(info) and info.get("stop_reason") in FINAL_STOP_REASONS and self.older_objective(job) is None
                and (self.run_dir(job) / "best.ckpt").exists())

    def older_objective(self, job: Job) -> int | None:
        """The objective version a finished run was trained under when its model's objective
        has changed since (``c2np.config.objective_version``; the run trains on, see
        RunMonitor), else None."""
        info = self.run_info(job)
        if not info or info.get("stop_reason") not in FINAL_STOP_REASONS:
            return None
        old = recorded_objective(info)
        return old if old != objective_version(job.task, job.model) else None

    def set_aside(self, job: Job, version: int) -> list[Path]:
        """Move what ``job``'s weights of objective ``version`` made (predictions, their
        batches, results, Loss-column files) to W/superseded/objective-vVERSION/, same
        relative paths, with copies of the run's run.json, metrics.csv and curves.png: the
        run trains on and predicts afresh. Returns the moved paths."""
        dest = self.work / "superseded" / f"objective-v{version}"
        run = self.run_dir(job)
        moved = []
        for split in self.splits:
            pred = self.pred(job, split)
            for path in (pred, chunk_dir(pred), self.result(job, split), run / f"test_loss-{split}.json"):
                if path.exists():
                    target = dest / path.relative_to(self.work)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(path), str(target))
                    moved.append(path)
        for name in ("run.json", "metrics.csv", "curves.png"):
            if (run / name).exists():
                (dest / "runs" / job.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, dest / "runs" / job.name / name)
        return moved

    def pred(self, job: Job, split: str) -> Path:
        return self.work / "preds" / f"{job.model}-task{job.task}-{split}-seed{job.seed}.parquet"

    def result(self, job: Job, split: str) -> Path:
        return self.work / "results" / f"{job.model}-task{job.task}-{split}-seed{job.seed}.json"

    def predicting(self, job: Job) -> str:
        """The splits partly predicted, with their batches done, e.g. ``id 37/61``."""
        kept = [(s, chunk_progress(self.pred(job, s))) for s in self.splits if not self.pred(job, s).exists()]
        return ", ".join(f"{s} {k[0]}/{k[1]}" for s, k in kept if k)

    def to_predict(self, job: Job, split: str) -> bool:
        """Whether ``split`` of ``job`` is neither predicted nor scored yet (a scored split's
        predictions may have stayed behind on a return trip: not redone)."""
        return not self.pred(job, split).exists() and not self.result(job, split).exists()

    def scored(self, job: Job) -> bool:
        return all(self.result(job, s).is_file() and self.result(job, s).stat().st_size > 0 for s in self.splits)

    def log(self, job: Job, phase: str) -> Path:
        return self.work / "logs" / f"{phase}-{job.name}.log"

    def runs(self) -> list[Job]:
        """Every run under W/runs, whichever plan started it."""
        jobs = []
        for d in sorted((self.work / "runs").iterdir()):
            model, _, rest = d.name.partition("-task")
            task, _, seed = rest.partition("-seed")
            if d.is_dir() and task in ("1", "2") and seed.isdigit():
                jobs.append(Job(model, int(task), int(seed)))
        return jobs

    def write_status(self, jobs: list[Job]) -> str:
        """W/status.md, the table of ``jobs``, and W/scored.txt, the names of every run
        whose splits are all scored: what may travel without its checkpoints and
        predictions (benchmarks/table5_pack.sh reads it). Returns the table."""
        table = status_table(self, jobs)
        (self.work / "status.md").write_text(table + "\n")
        (self.work / "scored.txt").write_text("".join(f"{j.name}\n" for j in self.runs() if self.scored(j)))
        return table


class Runner:
    """Runs pipelines on GPU slots until they are done or the deadline passes."""

    #: seconds between slot starts: store loading at once would contend for the cores
    stagger_s = 2.0
    #: least seconds left to take a pipeline or to start (or continue) a prediction: a
    #: resumed prediction keeps every batch it finishes, so a short slice is not wasted
    start_s = 60.0
    #: least seconds left to start (or continue: --resume keeps every 16 samples) a scoring
    score_s = 20.0

    def __init__(self, pipe: Pipeline, c2np: list[str], gpus: int, first_gpu: int, per_gpu: int, jobs: int,
                 deadline: float, reserve: float, overrides: list[str], gpus_per_run: int = 1,
                 compile_predict: frozenset[str] = frozenset(), predict_batch: int = 0,
                 score_only: bool = False, score_workers: int = 2, shards: int = 1,
                 bf16_attention: frozenset[str] = frozenset()) -> None:
        if gpus % gpus_per_run:
            raise ValueError(f"{gpus} GPUs do not split into groups of {gpus_per_run}")
        self.pipe, self.c2np, self.gpus, self.first_gpu, self.per_gpu = pipe, c2np, gpus, first_gpu, per_gpu
        self.gpus_per_run, self.compile_predict = gpus_per_run, compile_predict
        self.predict_batch, self.score_only, self.score_workers = predict_batch, score_only, score_workers
        self.shards, self.bf16_attention = shards, bf16_attention
        self.overrides = [arg for o in overrides for arg in ("--set", o)]
        self.jobs, self.deadline, self.reserve = jobs, deadline, reserve
        self.lock = threading.Lock()

    def left(self) -> float:
        return self.deadline - self.reserve - time.time()

    def say(self, msg: str) -> None:
        with self.lock:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def call(self, args: list[str], log: Path, gpus: list[int] | None) -> int:
        """Run a c2np command on ``gpus`` (None: leave CUDA_VISIBLE_DEVICES alone), killed at
        the deadline; output appended to ``log``."""
        env = dict(os.environ)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        with log.open("a") as fh:
            fh.write(f"\n$ c2np {' '.join(args)}   # {time.strftime('%F %T')}\n")
            fh.flush()
            try:
                return subprocess.run(self.c2np + args, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                      stdin=subprocess.DEVNULL, timeout=max(1.0, self.left())).returncode
            except subprocess.TimeoutExpired:
                fh.write("-- stopped at the deadline\n")
                return 124

    def pipeline(self, job: Job, gpus: list[int]) -> None:
        """Train (DDP over all of ``gpus`` when there are several), then predict on the first
        of them; each split is scored on the CPU as soon as its prediction is complete, beside
        the next prediction (with ``score_only``: only score). A trained run's other splits go
        back to the queue ahead of the runs not started, so that a free slot predicts them
        beside this one (with no slot free, this one predicts them after its first). With
        ``shards`` N > 1 each split is N such pieces of work (``c2np predict --shard K/N``), on
        the group's GPUs in turn."""
        if not self.score_only:
            if not self.train(job, gpus):
                return
            todo = [(s, k) for s in self.pipe.splits if self.pipe.to_predict(job, s) for k in range(self.shards)]
            for i, (split, shard) in enumerate(todo[1:], start=1):
                self.put(PREDICT, job, split, i, shard)
            for split, shard in todo[:1]:
                self.predict(job, gpus, split, shard)
        self.score(job)

    def train(self, job: Job, gpus: list[int]) -> bool:
        """Train ``job`` until it has finished or the deadline; whether it has finished."""
        p = self.pipe
        where = f"GPU{'s' if len(gpus) > 1 else ''} {','.join(map(str, gpus))}"
        ddp = ["--devices", str(len(gpus))] if len(gpus) > 1 else []
        if p.trained(job):
            return True
        budget = self.left() - 45  # start-up and the last checkpoint must fit before the kill
        if budget < 60:
            return False
        self.say(f"{job.name}: train on {where} for up to {budget:.0f} s")
        rc = self.call(["train", "--task", str(job.task), "--model", job.model, "--seed", str(job.seed),
                        "--store", str(p.store), "--out", str(p.work / "runs"), "-q", "--resume",
                        "--budget", f"{budget:.0f}", *ddp, *self.overrides], p.log(job, "train"), gpus)
        info = p.run_info(job) or {}
        self.say(f"{job.name}: rc {rc}, epoch {info.get('epochs')}, {info.get('stop_reason')}, best val. "
                 f"{info.get('best_val_loss')} (epoch {info.get('best_epoch')})")
        return p.trained(job)

    def predict(self, job: Job, gpus: list[int], split: str, shard: int = 0) -> None:
        """Predict ``split`` (its shard number ``shard`` of ``shards``) unless predicted (or
        scored) already, on the first of ``gpus``."""
        p = self.pipe
        out = p.pred(job, split)
        sharded = (shard, self.shards) if self.shards > 1 else None
        if not p.to_predict(job, split) or self.left() < self.start_s:
            return
        if sharded and chunk_missing(out, sharded) == set() and chunk_missing(out):
            return  # this shard's batches are done: the shard that makes the last one joins them
        kept = chunk_progress(out)
        piece = f" shard {shard}/{self.shards}" if sharded else ""
        self.say(f"{job.name}: predict {split}{piece} on GPU {gpus[0]}"
                 + (f" from batch {kept[0]}/{kept[1]}" if kept else ""))
        # OUT is written atomically once every batch is done; the batches go to OUT.chunks/
        extra = ["--compile"] if job.task == 1 and job.model in self.compile_predict else []
        if sharded:
            extra += ["--shard", f"{shard}/{self.shards}"]
        # like the batch size, a prediction under way keeps the precision of its batches on disk
        attention = chunk_attention(out) or ("bf16" if job.task == 1 and job.model in self.bf16_attention
                                             else "fp32")
        if attention != "fp32":
            extra += ["--attention", attention]
        # a prediction under way keeps the batch size its batches on disk were cut at (a
        # layout's new --predict-batch applies to predictions not started yet)
        batch = chunk_batch_size(out) or self.predict_batch
        if batch:
            extra += ["--batch-size", str(batch)]
        rc = self.call(["predict", "--checkpoint", str(p.run_dir(job) / "best.ckpt"), "--split", split,
                        "--store", str(p.store), "--seed", str(job.seed), "--out", str(out), "-q", "--resume",
                        *extra], p.log(job, "predict"), gpus[:1])
        if out.exists():  # scored on the CPU while this slot predicts the next split
            self.score(job, [split])
        elif rc == 0 and sharded:
            self.say(f"{job.name}: predict {split}{piece} done, {len(chunk_missing(out) or ())} batches "
                     "of its other shards to go")
        if rc != 0 or not (out.exists() or sharded):
            kept = chunk_progress(out)
            self.say(f"{job.name}: predict {split}{piece} stopped (rc {rc})"
                     + (f", {kept[0]}/{kept[1]} batches kept for the next call" if kept else "")
                     + f", see {p.log(job, 'predict')}")

    def score(self, job: Job, splits: list[str] | None = None) -> None:
        """Queue the scoring of every split (of ``splits``) whose predictions are complete and
        not scored yet; ``score_workers`` scorings run at once on the CPU, each split once."""
        for split in splits or self.pipe.splits:
            # a split still being predicted in another slot is queued by that slot when done
            if not self.pipe.pred(job, split).exists():
                continue
            with self.lock:
                if (job.name, split) in self.queued:
                    continue
                self.queued.add((job.name, split))
            self.scorings.append(self.scoring.submit(self.score_split, job, split))

    def score_split(self, job: Job, split: str) -> None:
        """Score one split on the CPU (``c2np evaluate --resume``: a scoring stopped at the
        deadline continues in the next call)."""
        p = self.pipe
        res, pred = p.result(job, split), p.pred(job, split)
        if res.exists() or not pred.exists() or self.left() < self.score_s:
            return
        self.say(f"{job.name}: score {split}")
        partial = res.with_name(res.stem + ".partial.json")
        rc = self.call(["evaluate", "--task", str(job.task), "--split", split, "--predictions", str(pred),
                        "--store", str(p.store), "-q", "-j", str(self.jobs), "--resume",
                        "--run-info", str(p.run_dir(job) / "run.json"), "--out", str(partial),
                        "--scores", str(res.with_name(res.stem + ".scores.parquet"))],
                       p.log(job, "eval"), None)
        if rc == 0 and partial.exists():
            partial.replace(res)
        else:
            self.say(f"{job.name}: scoring {split} stopped (rc {rc}), see {p.log(job, 'eval')}")

    def put(self, kind: int, job: Job, split: str = "", k: int = 0, shard: int = 0) -> None:
        """Queue a pipeline (RUN) or the prediction of a run's piece number ``k`` (PREDICT,
        taken first: a split, or one shard of it; in a group of K GPUs it runs on the group's
        GPU k mod K, so that the splits of a run trained with DDP are generated on different
        GPUs)."""
        with self.lock:
            self.pending += 1
            self.work.put((kind, next(self.order), job, split, k, shard))

    def run(self, todo: list[Job]) -> None:
        self.work: queue.PriorityQueue[tuple[int, int, Job, str, int, int]] = queue.PriorityQueue()
        self.order, self.pending = itertools.count(), 0
        for job in todo:
            self.put(RUN, job)
        self.scoring = ThreadPoolExecutor(max_workers=self.score_workers)
        self.queued: set[tuple[str, str]] = set()
        self.scorings: list = []

        def slot(i: int) -> None:
            group = i % (self.gpus // self.gpus_per_run)
            first = self.first_gpu + group * self.gpus_per_run
            gpus = list(range(first, first + self.gpus_per_run))
            while self.left() > self.start_s:
                try:
                    kind, _, job, split, k, shard = self.work.get(timeout=0.2)
                except queue.Empty:
                    with self.lock:  # a busy slot may still queue the splits of a run it trained
                        if self.pending == 0:
                            return
                    continue
                try:
                    if kind == RUN:
                        self.pipeline(job, gpus)
                    else:
                        self.predict(job, [gpus[k % len(gpus)]], split, shard)
                except Exception as exc:  # one broken run must not stop the others
                    self.say(f"{job.name}: {type(exc).__name__}: {exc}")
                finally:
                    with self.lock:
                        self.pending -= 1

        slots = self.gpus // self.gpus_per_run * self.per_gpu
        threads = [threading.Thread(target=slot, args=(i,)) for i in range(slots)]
        for t in threads:
            t.start()
            time.sleep(self.stagger_s)
        for t in threads:
            t.join()
        self.scoring.shutdown(wait=True)  # every scoring is stopped at the deadline too
        for f in self.scorings:
            if f.exception() is not None:
                self.say(f"scoring: {type(f.exception()).__name__}: {f.exception()}")


def status_table(pipe: Pipeline, jobs: list[Job]) -> str:
    rows = ["| run | epochs | stop | best val. loss (epoch) | s/epoch | predicted | scored |",
            "|---|---|---|---|---|---|---|"]
    for job in jobs:
        info = pipe.run_info(job) or {}
        best = info.get("best_val_loss")
        old = pipe.older_objective(job)
        stop = (info.get("stop_reason") or "-") + (f" (objective v{old}: trains on)" if old else "")
        # a staged run's finished stages (ADiT Task 1)
        stop += "".join(f"; {st['stage']} converged at {st['converged_epoch']}" for st in info.get("stages") or [])
        rows.append(f"| {job.name} | {info.get('epochs', '-')} | {stop} | "
                    + (f"{best:.4g} ({info.get('best_epoch')})" if best is not None else "-")
                    + f" | {info.get('time_per_epoch') or 0:.2f} | "
                    + f"{sum(pipe.pred(job, s).exists() for s in pipe.splits)}/{len(pipe.splits)}"
                    + (f" ({partly})" if (partly := pipe.predicting(job)) else "") + " | "
                    + f"{sum(pipe.result(job, s).exists() for s in pipe.splits)}/{len(pipe.splits)} |")
    return "\n".join(rows)


#: what a lent GPU machine brings back from $OUT: at most 8 files, 64 MiB together
RETURN_FILES, RETURN_MIB = 8, 64


def pack(work: Path, out: Path, pipe: Pipeline, jobs: list[Job], keep_ckpt: bool) -> list[Path]:
    """W as 15 MiB tar parts; scored runs without checkpoints and predictions, unfinished
    predictions with the batches they have done, no temporaries of killed writes. Returns
    the parts."""
    out.mkdir(parents=True, exist_ok=True)
    exclude = []
    if not keep_ckpt:
        for job in jobs:
            if pipe.scored(job):
                exclude += [f"--exclude=runs/{job.name}/*.ckpt"]
                exclude += [f"--exclude=preds/{pipe.pred(job, s).name}" for s in pipe.splits]
    # the batches of a finished prediction, should a kill have come before their removal
    exclude += [f"--exclude=preds/{chunk_dir(pipe.pred(job, s)).name}" for job in jobs for s in pipe.splits
                if pipe.pred(job, s).exists()]
    exclude += ["--exclude=*.partial.*", "--exclude=.*.tmp"]
    tar = subprocess.Popen(["tar", "czf", "-", "-C", str(work), *exclude, "."], stdout=subprocess.PIPE)
    subprocess.run(["split", "-b", "15M", "-", str(out / f"{work.name}.tgz.part-")], stdin=tar.stdout, check=True)
    tar.wait()
    return sorted(out.glob(f"{work.name}.tgz.part-*"))


def pack_summary(parts: list[Path], pipe: Pipeline, jobs: list[Job]) -> str:
    """One line on the pack's size, and a warning when it alone is more than a lent
    machine returns (:data:`RETURN_FILES`, :data:`RETURN_MIB`): a call in session s32 lost
    a whole pack so, 8 parts beside another runner's 5. The bulk of a large pack is the
    complete predictions of runs not yet scored; scoring them on the machine first
    (``--score-only``) leaves them out."""
    mib = sum(p.stat().st_size for p in parts) / 2 ** 20
    line = (f"packed {len(parts)} part(s), {mib:.1f} MiB (a lent machine returns at most {RETURN_FILES} files "
            f"and {RETURN_MIB} MiB from $OUT, the other files there included)")
    if len(parts) <= RETURN_FILES and mib <= RETURN_MIB:
        return line
    unscored = [pipe.pred(j, s) for j in jobs if not pipe.scored(j) for s in pipe.splits if pipe.pred(j, s).exists()]
    heavy = sum(f.stat().st_size for f in unscored) / 2 ** 20
    return (f"WARNING: {line}: this pack will not come back whole. "
            f"{len(unscored)} complete prediction(s) of runs not yet scored hold {heavy:.1f} MiB before compression: "
            f"score them here first (--score-only), or pack fewer runs")


def set_aside_superseded(pipe: Pipeline, jobs: list[Job], say=print) -> None:
    """Runs finished under an older objective train on: what their old weights made is set
    aside (``Pipeline.set_aside``), so that they are predicted and scored afresh."""
    for job in jobs:
        if (version := pipe.older_objective(job)) is not None:
            moved = pipe.set_aside(job, version)
            say(f"{job.name}: finished under objective version {version}, trains on under "
                f"{objective_version(job.task, job.model)}; {len(moved)} files set aside in "
                f"{pipe.work / 'superseded' / f'objective-v{version}'}")


def store_splits(ds) -> list[str]:
    """The test splits scored for every run: ID and OOD, and on a material-held-out store
    also unseen ID and OOD (unseen materials at training radii are left out)."""
    return [s for s in ds.splits if s not in ("train", "unseen_train")]


def parse_plan(plan: str, seeds: list[int]) -> list[Job]:
    jobs = []
    for item in plan.split():
        model, _, task = item.partition(":")
        if task not in ("1", "2"):
            raise SystemExit(f"plan item {item!r}: expected MODEL:TASK with TASK 1 or 2")
        jobs += [Job(model, int(task), s) for s in seeds]
    return jobs


def families(text: str) -> frozenset[str]:
    """A comma-separated list of model families (--compile-predict, --bf16-attention)."""
    return frozenset(m for m in text.split(",") if m)


def parser() -> argparse.ArgumentParser:
    """The command line of main()."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="Work directory (carry it between calls).")
    ap.add_argument("--plan", required=True, help='MODEL:TASK items in priority order, e.g. "symat:2 cdvae:1".')
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--order", choices=["seed", "plan"], default="seed",
                    help="seed: every plan item's seed 0 first, then seed 1, ...; plan: all seeds of an item first.")
    ap.add_argument("--gpus", type=int, default=0, help="GPUs to use (default: all nvidia-smi lists; 1 without a GPU).")
    ap.add_argument("--first-gpu", type=int, default=0, help="Use GPUs FIRST .. FIRST+GPUS-1.")
    ap.add_argument("--per-gpu", type=int, default=2, help="Pipelines sharing one GPU (one GPU group).")
    ap.add_argument("--gpus-per-run", type=int, default=1,
                    help="GPUs of one training run (DDP, `c2np train --devices K`); GPUS must be a multiple. "
                         "A run's split k (0: the first) is predicted on GPU k mod K of the group whose slot "
                         "takes it, so with --per-gpu 2 or more the splits of a run go to different GPUs at once.")
    ap.add_argument("--jobs", type=int, default=0, help="Scoring processes per evaluation (default: cores / slots).")
    ap.add_argument("--score-workers", type=int, default=2,
                    help="Evaluations at once: a split is scored on the CPU as soon as its prediction is "
                         "complete, while its slot goes on predicting or training.")
    ap.add_argument("--deadline", type=float, default=0,
                    help="Seconds from now at which every command is stopped (0: none).")
    ap.add_argument("--reserve", type=float, default=40, help="Seconds kept free before the deadline for packing.")
    ap.add_argument("--compile-predict", default="mattergen,flowmm",
                    help="Families whose Task 1 generation runs `c2np predict --compile` (comma-separated; '' for "
                         "none). Default from benchmarks/predict_throughput.py on one H100 (2026-11-26): compiled "
                         "sampling ran MatterGen 1.8-2.6x and FlowMM 1.1-1.4x faster per batch at R = 20, 30 and ID "
                         "sizes (R = 10: MatterGen unchanged, FlowMM 1.1x), after 36 and 15 s of compilation; "
                         "DiffCSP 1.1x and 1.3x at R = 20, 30, unchanged at ID sizes, 1.6x slower at R = 10. Set it "
                         "before a family's first prediction: --resume refuses to mix compiled and eager batches.")
    ap.add_argument("--bf16-attention", default="adit",
                    help="Families whose Task 1 generation runs `c2np predict --attention bf16` (comma-separated; "
                         "'' for none): ADiT's attention kernels in bf16, the flash kernels on the tensor cores. "
                         "Default from benchmarks/adit_attention.py on one H200 (2026-11-27, held-out ADiT Task 1, "
                         "4 materials a radius): 2.46x (ID) and 4.06x (OOD) faster than fp32, paired RMSD "
                         "difference -0.001 +- 0.001 and +0.002 +- 0.004 A; the committed ADiT Task 1 results "
                         "were made so. A prediction under way keeps the precision of its batches on disk.")
    ap.add_argument("--predict-batch", type=int, default=0,
                    help="Particles per prediction batch for every run of the plan (0: each run's config, "
                         "[predict] batch_size), for predictions not started yet: one cut off keeps the batch "
                         "size of its batches on disk (c2np predict --resume refuses another).")
    ap.add_argument("--predict-shards", type=int, default=1,
                    help="Processes generating each split at once (c2np predict --shard K/N), on the GPUs of "
                         "the slot's group in turn: a Task 1 split whose batches would take one process longer "
                         "than the session, spread over both GPUs. Same particles as one process.")
    ap.add_argument("--score-only", action="store_true",
                    help="Only score the predictions that are complete and not scored yet, on the CPU; no "
                         "training, no prediction (e.g. at home, with W as the GPU calls brought it back).")
    ap.add_argument("--pack", type=Path, help="Write W as 15 MiB tar parts into this folder at the end.")
    ap.add_argument("--keep-ckpt", action="store_true", help="Pack the checkpoints of scored runs too.")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="Config override for every `c2np train` (repeatable), e.g. train.limit=32 for a smoke test.")
    ap.add_argument("--dry-run", action="store_true", help="Print the status table and exit.")
    ap.add_argument("--set-aside", action="store_true",
                    help="Only set aside what runs finished under an older objective made (also done before "
                         "every run), rewrite status.md and scored.txt, and exit: before bundling W at home.")
    return ap


def main() -> None:
    a = parser().parse_args()

    try:
        ds = open_dataset(a.store)  # integrity-checked: a broken store fails here, not in every run
    except StoreError as exc:
        raise SystemExit(str(exc)) from None
    pipe = Pipeline(a.work, a.store, store_splits(ds))
    jobs = parse_plan(a.plan, a.seeds)
    if a.order == "seed":
        jobs.sort(key=lambda j: a.seeds.index(j.seed))
    if a.dry_run:
        print(status_table(pipe, jobs))
        return
    set_aside_superseded(pipe, jobs)
    if a.set_aside:
        print(pipe.write_status(jobs))
        return
    gpus = a.gpus
    if gpus <= 0:
        smi = shutil.which("nvidia-smi")
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.splitlines() if smi else []
        gpus = max(1, len(listed))
    if a.gpus_per_run < 1 or gpus % a.gpus_per_run:
        raise SystemExit(f"--gpus-per-run {a.gpus_per_run}: {gpus} GPUs do not split into groups of that size")
    slots = gpus // a.gpus_per_run * a.per_gpu
    n_jobs = a.jobs or max(1, (os.cpu_count() or 2) // slots)
    c2np = [sys.executable, "-m", "c2np"]  # a module Lightning's DDP launcher can start again per rank
    deadline = time.time() + a.deadline if a.deadline > 0 else float("inf")
    compile_predict = families(a.compile_predict)
    runner = Runner(pipe, c2np, gpus, a.first_gpu, a.per_gpu, n_jobs, deadline, a.reserve, a.overrides,
                    a.gpus_per_run, compile_predict, a.predict_batch, a.score_only, a.score_workers,
                    max(1, a.predict_shards), families(a.bf16_attention))
    todo = [j for j in jobs if not pipe.scored(j)]
    runner.say(f"{len(todo)} of {len(jobs)} pipelines to do on {gpus} GPU(s)"
               + (f" in groups of {a.gpus_per_run} (DDP)" if a.gpus_per_run > 1 else "")
               + f" x {a.per_gpu}; splits {pipe.splits}")
    runner.run(todo)
    print(pipe.write_status(jobs))
    results = sorted((a.work / "results").glob("*.json"))
    if results:
        subprocess.run(c2np + ["report", *map(str, results), "--out", str(a.work / "report")],
                       stdout=subprocess.DEVNULL, check=False)
    if a.pack:
        print(pack_summary(pack(a.work, a.pack, pipe, jobs, a.keep_ckpt), pipe, jobs))
    if all(pipe.scored(j) for j in jobs):
        print(f"all done: {a.work / 'report'}")


if __name__ == "__main__":
    main()
