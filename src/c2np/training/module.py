"""The Lightning wrapper shared by every learned baseline (Adam with exponential decay,
gradient clipping set on the Trainer) and the run monitor: validation-based stopping,
the convergence criterion, per-epoch timing, metrics.csv and best.ckpt.

Convergence, the one definition applied to every model: a run has converged when its
best validation loss has not improved by more than ``rel_tol`` (1 %) relative for
``patience`` consecutive epochs. A run stopped by ``max_epochs`` or by the wall-time
safety net ``max_time_s`` before that is recorded as NOT converged.

A model trained in stages (ADiT Task 1: its VAE, then its latent DiT; a model with
``advance_stage()``) applies the rule to each stage in turn: when a stage converges, the
model goes back to that stage's best weights and on to the next stage, whose epochs count
afresh for the rule, with the learning rate back at ``train.lr``. The run has converged
when its last stage has.

The rule compares validation losses of one training objective. A run resumed under a
newer version of its task's objective (``c2np.config.OBJECTIVE_VERSIONS``; Task 1 version 2 dropped
the composition cross-entropy's constant floor) starts the count afresh at the epoch it
resumes from, so it trains at least ``patience`` more epochs and its best.ckpt is of the
new objective; run.json lists such changes under ``objective_changes``.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from c2np.errors import ConfigError
from c2np.models.registry import build_model


def seeded_loss(model: torch.nn.Module, batch, seed: int) -> dict[str, torch.Tensor]:
    """``model.loss(batch)`` with its random draws (noise levels, perturbations, latents)
    fixed by ``seed`` and the global RNG left untouched: validation and test losses are
    then the same numbers every time they are computed."""
    devices = [batch.pos.device] if batch.pos.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return model.loss(batch)


@torch.no_grad()
def mean_objective(model: torch.nn.Module, batches, seed: int = 0) -> dict[str, float]:
    """Every term of the model's own loss averaged over graphs (batch means weighted by
    the batch's graph count) on ``batches``: the Loss column of Table 5."""
    totals: dict[str, float] = {}
    n = 0
    for b, batch in enumerate(batches):
        out = seeded_loss(model, batch, seed * 1000003 + b)
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v) * batch.n_graphs
        n += batch.n_graphs
    return {k: v / n for k, v in totals.items()} | {"graphs": n}


class BaselineModule(pl.LightningModule):
    """Any model of ``c2np.models.MODELS``; ``model.loss(batch)`` returns a dict with ``loss``.

    ``predict``: the config's ``[predict]`` section, kept in the checkpoint for ``c2np
    predict`` (its ``batch_size``; checkpoints written before it was kept have none)."""

    def __init__(self, model: dict, train: dict, seed: int = 0, predict: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        params = {k: v for k, v in model.items() if k not in ("name", "task")}
        self.model = build_model(model["name"], int(model["task"]), **params)
        # train.capture: the whole step (loss, backward, clipping, Adam) replayed as CUDA
        # graphs (c2np.training.captured), so Lightning's automatic optimisation is off
        self.automatic_optimization = not train.get("capture")
        self._captured = None

    def _setting(self, key: str):
        """``train[key]`` with ``"gpu"`` (the configs' default for ``compile`` and
        ``fused_adam``) resolved on this module's device: on for CUDA, off elsewhere. On an
        H100 compiling took CDVAE Task 1 from 6.40 to 4.43 s/epoch for 53 s of compilation;
        on a CPU the Inductor build costs minutes, and tests and CI run there."""
        value = self.hparams.train.get(key)
        return (self.device.type == "cuda") if value == "gpu" else value

    def on_fit_start(self) -> None:
        from c2np.models.components import schnet_encoders

        mode = self._setting("compile")
        graphs = "reduce-overhead" if self.hparams.train.get("cuda_graphs") else None
        if mode in ("loss", "static"):
            compile_loss(self.model, dynamic=mode == "loss", mode=graphs)
        elif mode == "triton":
            fuse_interactions(self.model, self.device)
        elif mode:  # true or "edges"
            compile_interactions(self.model)
        if self.hparams.train.get("bf16_edges"):
            for encoder in schnet_encoders(self.model):
                encoder.edge_dtype = torch.bfloat16

    def training_step(self, batch, batch_idx):
        if self.hparams.train.get("cuda_graphs"):
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are free to reuse
        out = self._captured_step()(batch) if self.hparams.train.get("capture") else self.model.loss(batch)
        for k, v in out.items():
            self.log(f"train_{k}", v.detach(), on_step=False, on_epoch=True, batch_size=_graphs(batch),
                     sync_dist=True, prog_bar=k == "loss")
        return out["loss"]

    def _captured_step(self):
        """The :class:`~c2np.training.captured.CapturedStep` of ``train.capture``, made at the
        first step (after a resumed checkpoint restored the optimizer): it owns the
        optimizer's step, gradient clipping included."""
        if self._captured is None:
            from c2np.training.captured import CapturedStep, edge_buckets, tensor_lr

            t = self.hparams.train
            opt = self.optimizers().optimizer
            if self.device.type == "cuda":
                tensor_lr(opt, self.device)  # a checkpoint's learning rate comes back as a CPU tensor or float
            self._captured = CapturedStep(self.model, opt, float(t["grad_clip"]) if t.get("grad_clip") else None,
                                          self.model.host_plan(), edge_buckets(t))
        return self._captured

    def prefetched(self, loader):
        """``loader``'s batches prepared by the captured step's thread (``train.capture``)."""
        from c2np.training.captured import PrefetchedLoader

        return PrefetchedLoader(loader, self._captured_step)

    def on_train_epoch_end(self) -> None:
        if self.hparams.train.get("capture"):  # manual optimisation: the schedule is ours to step
            self.lr_schedulers().step()

    def validation_step(self, batch, batch_idx):
        # the same noise draws every epoch, so epochs differ only by the weights
        out = seeded_loss(self.model, batch, self.hparams.seed * 1000003 + batch_idx)
        for k, v in out.items():
            self.log(f"val_{k}", v, on_step=False, on_epoch=True, batch_size=_graphs(batch),
                     sync_dist=True, prog_bar=k == "loss")

    def configure_optimizers(self):
        t = self.hparams.train
        if t.get("capture"):
            from c2np.training.captured import make_adam

            opt = make_adam(self.parameters(), float(t["lr"]), self.device, self.device.type == "cuda")
        else:
            fused = True if self._setting("fused_adam") else None
            opt = torch.optim.Adam(self.parameters(), lr=float(t["lr"]), fused=fused)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=float(t["lr_decay"]))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if self.hparams.train.get("capture") and self.trainer.training:
            return batch  # prepared on the device by the captured step's thread
        return batch.to(device, non_blocking=True)


def _graphs(batch) -> int:
    """The real graphs of a batch (a padded one has empty slots): the logging weight."""
    return getattr(batch, "real_graphs", None) or batch.n_graphs


def compile_interactions(model: torch.nn.Module, backend: str = "inductor") -> None:
    """``torch.compile`` the SchNet interaction stacks in place (``train.compile = "edges"``
    or ``true``): ``SchNetEncoder.interact``, the edge pipeline (cutoff envelope, filter
    network, gather x message x scatter) of every block, which Inductor fuses into a few
    kernels instead of materialising several (edges x filters) tensors each way.

    Its inputs are (nodes, features) and (edges, ...) tensors whose sizes change every
    batch; ``dynamic=True`` makes those sizes symbols: after a second graph at the second
    batch (Inductor specialises the first to its small edge count), batches of other sizes
    compile nothing (dynamo's counters, tests/test_models.py). Radius graphs and per-graph
    bookkeeping stay eager: their sizes depend on the data.
    """
    from c2np.models.components import schnet_encoders

    for encoder in schnet_encoders(model):
        encoder.interact = torch.compile(encoder.interact, backend=backend, dynamic=True)


def fuse_interactions(model: torch.nn.Module, device: torch.device) -> None:
    """The SchNet interaction stacks' messages from the fused Triton kernels, in place
    (``train.compile = "triton"``, ``c2np.models.cfconv_triton``); the rest of the step
    stays eager. Their backward is the symmetric one where the encoder's graphs are
    symmetric (``SchNetEncoder.symmetric_graphs``, true of every model here).
    ``ConfigError`` when the kernels cannot run on ``device``."""
    from c2np.models import cfconv_triton
    from c2np.models.components import schnet_encoders

    if not cfconv_triton.available(device):
        raise ConfigError(f'train.compile = "triton": {cfconv_triton.unavailable_reason(device)}')
    for encoder in schnet_encoders(model):
        encoder.fused_cfconv = True


def compile_loss(model: torch.nn.Module, backend: str = "inductor", dynamic: bool = True,
                 mode: str | None = None, pair_filters: bool = True, cpp_wrapper: bool = False) -> None:
    """``torch.compile`` the whole ``model.loss`` in place (``train.compile = "loss"``),
    with dynamic shapes. The step first makes on the device what the model's
    ``host_plan()`` names and the batch lacks (radius graphs, noise draws:
    ``host_work.prepare_in_step``; nothing with ``train.host_work``, whose workers made
    them), so the compiled loss has no data-dependent shape and traces to one graph for
    every batch instead of breaking at every radius graph's host wait. Duck shaping is
    turned off (process-wide): it ties equal sizes to one symbol, so a first batch of 2 or 3 graphs (``ptr`` of length 3,
    like the xyz axis) would compile a graph that every later batch fails.

    ``dynamic=False`` (``train.compile = "static"``, padded batches: ``train.pad_buckets``)
    compiles one graph per bucket; dynamo's cache then holds one entry per bucket, so its
    limit is raised to 64. ``mode="reduce-overhead"`` (``train.cuda_graphs``) replays each
    graph as a CUDA graph.

    ``pair_filters`` turns on ``SchNetEncoder.pair_filters`` (each SchNet filter once per
    unordered pair of atoms): inside the compiled graph it costs no host work and cut the
    kernels of a CDVAE Task 1 step from 17.3 to 14.4 ms on an H100 (docs/models.md,
    "Throughput"); same values, gradients to float rounding.

    The unit-cell encoder stays eager (``UnitCellEncoder.forward``): its max pool's
    gradient came out NaN when Inductor compiled it inside the whole loss.

    ``cpp_wrapper`` (Inductor only, not with ``mode``): the compiled graphs launch their
    kernels from generated C++ instead of Python, for a step whose host issues its kernels
    more slowly than the GPU runs them (docs/models.md, "Throughput"); compiled and equal to
    eager on the CPU, not yet timed on a GPU.
    """
    from torch._dynamo import config as dynamo_config
    from torch.fx.experimental import _config as fx_config

    fx_config.use_duck_shape = False
    if not dynamic:
        for key in ("recompile_limit", "cache_size_limit"):  # the name changed across versions
            if hasattr(dynamo_config, key):
                setattr(dynamo_config, key, max(64, getattr(dynamo_config, key)))
    if pair_filters:
        from c2np.models.components import schnet_encoders

        for encoder in schnet_encoders(model):
            encoder.pair_filters = True
    if cpp_wrapper and mode:
        raise ValueError("compile_loss: cpp_wrapper and mode cannot be combined (torch.compile takes one)")
    options = {"mode": mode} if mode else {"options": {"cpp_wrapper": True}} if cpp_wrapper else {}
    compiled = torch.compile(model.loss, backend=backend, dynamic=dynamic, **options)
    if dynamic and hasattr(model, "host_plan"):
        from c2np.models.host_work import prepare_in_step

        plan = model.host_plan()

        def loss(batch):
            return compiled(prepare_in_step(batch, plan))

        model.loss = loss
    else:
        model.loss = compiled


def stage_of(model: torch.nn.Module) -> str | None:
    """The training stage a staged model is in (ADiT Task 1: "vae" or "dit"; a model with
    ``STAGES``, a ``stage`` buffer and ``advance_stage()``); None for a model of one stage."""
    return model.STAGES[int(model.stage)] if hasattr(model, "STAGES") else None


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere): for ``c2np
    train`` the start-up before training, imports included."""
    try:
        # field 22 of /proc/self/stat, counted after the parenthesised command name
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# a dynamic-shape compile makes a second graph at the second step; the third is a plain one
FIRST_STEPS_TIMED = 3


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _gpu_in_use(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_initialized()


def peak_gpu_gb(device: torch.device) -> float | None:
    """This process's peak GPU memory on ``device`` since the last reset, in GiB (2 decimals);
    None where no GPU is in use. Per process, so a run sharing a GPU with others gets its own."""
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if _gpu_in_use(device) else None


class RunMonitor(pl.Callback):
    """Times the training and validation parts of every epoch, writes ``metrics.csv``
    and ``best.ckpt``, and stops the fit: converged (see the module docstring), the
    wall-time safety net ``max_time_s`` (all invocations of a resumed run together), or
    ``budget_s``, the time left to this invocation, which pauses a run to be resumed.
    Its state is part of every checkpoint, so a resumed run continues the same counts.
    """

    def __init__(self, run_dir: Path, patience: int, rel_tol: float = 0.01, max_time_s: float = 0.0,
                 budget_s: float = 0.0, objective_version: int = 1, entered: float | None = None):
        self.run_dir, self.patience, self.rel_tol = Path(run_dir), int(patience), float(rel_tol)
        self.max_time_s, self.budget_s = float(max_time_s), float(budget_s)
        self.objective_version = int(objective_version)
        # time.perf_counter() when this invocation's train() began: its set-up time
        self.entered = time.perf_counter() if entered is None else float(entered)
        self.state = {"epoch_seconds": [], "val_seconds": [], "elapsed_s": 0.0, "best_val_loss": None,
                      "best_epoch": None, "since_best": 0, "converged": False, "converged_epoch": None,
                      "stop_reason": None, "invocations": 0, "stages": [], "objective_version": None,
                      "objective_changes": [], "invocation_log": []}
        self._clock = self._epoch_start = self._val_start = 0.0
        self._first = 0
        self._steps_to_time = 0

    # -- checkpointed state ------------------------------------------------------------
    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state_dict: dict) -> None:
        self.state.update(state_dict)

    def _check_objective(self, epoch: int) -> None:
        """A run resumed under another objective version starts the rule's count afresh."""
        s = self.state
        old = s["objective_version"]
        if old is None and s["best_val_loss"] is not None:
            old = 1  # a checkpoint written before the version was recorded
        if old is not None and old != self.objective_version:
            # the losses before and after differ by more than the rule's tolerance: no comparison
            s["objective_changes"].append({"epoch": epoch, "from": old, "to": self.objective_version,
                                           "best_val_loss_before": s["best_val_loss"],
                                           "best_epoch_before": s["best_epoch"]})
            s.update(best_val_loss=None, best_epoch=None, since_best=0, converged=False, converged_epoch=None)
        s["objective_version"] = self.objective_version

    # -- timing ------------------------------------------------------------------------
    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_start(self, trainer, module):  # after a resumed checkpoint is restored
        self._clock, self._first = self._now(), trainer.current_epoch
        self.state["invocations"] += 1
        # a resumed call pays its start-up again; on the lent GPU machines that was a large
        # share of a short call, so each invocation's share is kept apart from the epochs
        self.state["invocation_log"].append(
            {"epoch": trainer.current_epoch, "process_s": _round(process_age()),
             "setup_s": _round(self._clock - self.entered), "first_steps_s": [], "first_steps_atoms": [],
             "peak_gb": None})
        if _gpu_in_use(module.device):
            torch.cuda.reset_peak_memory_stats(module.device)  # this invocation's own peak
        self._steps_to_time = FIRST_STEPS_TIMED
        self.state["stop_reason"] = None
        self._check_objective(trainer.current_epoch)
        if trainer.is_global_zero:
            self._trim_csv(trainer.current_epoch)

    def on_train_epoch_start(self, trainer, module):
        self._epoch_start = self._now()
        self._val_start = 0.0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        # the first steps of the invocation's first epoch: its only extra synchronisations
        if self._steps_to_time and trainer.current_epoch == self._first:
            self._steps_to_time -= 1
            entry = self.state["invocation_log"][-1]
            entry["first_steps_s"].append(_round(self._now() - self._epoch_start))
            # batches are shuffled: a slow first step may be a large batch, not start-up
            atoms = getattr(batch, "real_atoms", None)  # a padded or prefetched (captured) batch's own
            if atoms is None and hasattr(batch, "z"):
                atoms = int(batch.z.shape[0])
            entry["first_steps_atoms"].append(atoms)

    def on_validation_start(self, trainer, module):
        if not trainer.sanity_checking:
            self._val_start = self._now()
            self.state["epoch_seconds"].append(self._val_start - self._epoch_start)

    def on_validation_end(self, trainer, module):
        if not trainer.sanity_checking:
            self.state["val_seconds"].append(self._now() - self._val_start)

    # -- stopping ----------------------------------------------------------------------
    def on_train_epoch_end(self, trainer, module):
        epoch, s = trainer.current_epoch, self.state
        stage = stage_of(module.model)  # the one this epoch trained
        s["elapsed_s"] += self._now() - self._epoch_start
        if s["invocation_log"]:  # training and validation so far, so a paused call keeps its peak
            s["invocation_log"][-1]["peak_gb"] = peak_gpu_gb(module.device)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        t = module.hparams.train
        if t.get("pad_buckets") and not t.get("capture") and not math.isfinite(metrics.get("train_loss", 0.0)):
            # before any checkpoint of this epoch is written
            raise ConfigError(f"epoch {epoch}: training loss {metrics['train_loss']}: with train.pad_buckets "
                              "a radius graph may have overflowed its fixed edge buffer (c2np.models.padding)")
        val = metrics.get("val_loss")
        if val is not None and (s["best_val_loss"] is None
                                or s["best_val_loss"] - val > self.rel_tol * abs(s["best_val_loss"])):
            s["best_val_loss"], s["best_epoch"], s["since_best"] = val, epoch, 0
            # weights only: prediction needs nothing else, and a third of the bytes is what lets
            # paused runs travel to and from the lent GPU machines (about 64 MiB per call)
            trainer.save_checkpoint(self.run_dir / "best.ckpt", weights_only=True)
        else:
            s["since_best"] += 1
        row = self._row(epoch, metrics, trainer, stage)
        reason = None
        if s["since_best"] >= self.patience and not self._next_stage(trainer, module, epoch):
            reason, s["converged"], s["converged_epoch"] = "converged", True, epoch
        elif self.max_time_s > 0 and s["elapsed_s"] >= self.max_time_s:
            reason = "max_time"
        elif epoch + 1 >= trainer.max_epochs:
            reason = "max_epochs"
        elif self.budget_s > 0:
            spent = self._now() - self._clock
            per_epoch = spent / max(1, epoch + 1 - self._first)
            if spent + per_epoch > self.budget_s:
                reason = "paused"
        # every rank takes part in the vote; only the clock-based reasons can differ by rank
        if trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
            s["stop_reason"] = reason or "paused"
            trainer.should_stop = True
        if trainer.is_global_zero:
            self._append_csv(row)

    def _next_stage(self, trainer, module, epoch: int) -> bool:
        """A converged stage of a staged model: restore its best weights, go on to the next
        stage and start the rule's count again. False when there is no next stage."""
        model = module.model
        stage = stage_of(model)
        if stage is None or stage == model.STAGES[-1]:
            return False  # unstaged, or the last stage
        s = self.state
        # best.ckpt is written by rank 0 only; every rank reads it once it is there (a run
        # without validation batches has none, and goes on from its current weights)
        trainer.strategy.barrier("c2np-stage")
        if (self.run_dir / "best.ckpt").exists():
            best = torch.load(self.run_dir / "best.ckpt", map_location=module.device, weights_only=False)
            module.load_state_dict(best["state_dict"])
        s["stages"].append({"stage": stage, "converged_epoch": epoch,
                            "best_epoch": s["best_epoch"], "best_val_loss": s["best_val_loss"]})
        model.advance_stage()
        s["best_val_loss"], s["best_epoch"], s["since_best"] = None, None, 0
        for opt in trainer.optimizers:  # a fresh schedule, as a separate run of the stage would have
            for group in opt.param_groups:
                if torch.is_tensor(group["lr"]):  # train.capture: the replayed graphs read this tensor
                    group["lr"].fill_(float(module.hparams.train["lr"]))
                else:
                    group["lr"] = float(module.hparams.train["lr"])
        return True

    # -- metrics.csv -------------------------------------------------------------------
    def _csv(self) -> Path:
        return self.run_dir / "metrics.csv"

    def _trim_csv(self, epoch: int) -> None:
        """A run killed after an epoch's row but before its checkpoint repeats that epoch."""
        if not self._csv().exists():
            return
        with self._csv().open() as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if int(r["epoch"]) < epoch]
        if len(kept) != len(rows):
            self._write_rows(kept, list(rows[0].keys()) if rows else [])

    def _write_rows(self, rows: list[dict], columns: list[str]) -> None:
        with self._csv().open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)

    def _row(self, epoch: int, metrics: dict, trainer, stage: str | None = None) -> dict:
        """metrics.csv's row of this epoch, taken before a stage switch resets the best loss
        and the learning rate: the row tells what the epoch trained with and reached."""
        s = self.state
        row = {"epoch": epoch, "train_loss": metrics.get("train_loss"), "val_loss": metrics.get("val_loss"),
               "best_val_loss": s["best_val_loss"], "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
               "epoch_s": round(s["epoch_seconds"][-1], 4) if s["epoch_seconds"] else None,
               "val_s": round(s["val_seconds"][-1], 4) if s["val_seconds"] else None,
               "elapsed_s": round(s["elapsed_s"], 3)}
        if stage is not None:
            row["stage"] = stage
        return row | {k: v for k, v in sorted(metrics.items()) if k not in row and k.startswith(("train_", "val_"))}

    def _append_csv(self, row: dict) -> None:
        rows = []
        if self._csv().exists():
            with self._csv().open() as f:
                rows = list(csv.DictReader(f))
        columns = list(dict.fromkeys([*(rows[0].keys() if rows else []), *row]))
        self._write_rows(rows + [row], columns)
