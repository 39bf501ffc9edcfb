"""``c2np train``: fit one (model, task, seed) and leave a run directory behind:

    runs/{model}-task{t}-seed{s}/
        last.ckpt        weights, optimiser, epoch and stopping state (resume from here)
        best.ckpt        the weights of the best validation loss (used for prediction)
        run.json         config, seed, validation protocol, convergence, time per epoch, device
        metrics.csv      per-epoch training and validation losses, learning rate, seconds
        curves.png       the loss curves (``c2np plot-run``)

Validation never touches the ID/OOD radii: it is carved out of the train split
(``c2np.training.data.split_validation``). A run stops when it has converged (see
``c2np.training.module``), at ``max_epochs``, at the wall-time safety net, or when the
invocation's ``budget_s`` runs out; the last is a pause, and ``resume=True`` goes on
from last.ckpt with the same epoch count, stopping state and clock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from c2np.config import objective_version, recorded_objective
from c2np.errors import ConfigError
from c2np.models.padding import pad_spec
from c2np.store.dataset import Dataset, open_dataset
from c2np.training.captured import edge_buckets
from c2np.training.data import RecordsData, load_records, split_validation


def run_dir(out: Path, model: str, task: int, seed: int) -> Path:
    """Where a run is written."""
    return Path(out) / f"{model}-task{task}-seed{seed}"


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")


def _finished(info: dict, t: dict, version: int) -> bool:
    """Whether a run stopped for good under the train settings ``t`` (raising train.epochs
    or train.max_time_s lets a run that hit the old limit go on) and the model's current
    objective, ``version`` (a run of an older one goes on under the new one)."""
    if recorded_objective(info) != version:
        return False
    reason = info.get("stop_reason")
    return (reason == "converged"
            or reason == "max_epochs" and int(t["epochs"]) <= info["epochs"]
            or reason == "max_time" and 0 < float(t.get("max_time_s") or 0) <= info["elapsed_s"])


def train(cfg: dict, store: str | Path | Dataset, out: Path, seed: int, progress: bool = True,
          devices: int | str = "auto", resume: bool = False, budget_s: float = 0.0) -> dict:
    """Train ``cfg`` (see ``c2np.training.configs``) with ``seed``; returns run.json's content.

    ``resume``: continue the run in ``out`` from its last.ckpt (a finished run is returned
    as is; without a checkpoint the run starts afresh). ``budget_s``: stop (pause) before
    an epoch that would end after this many seconds of this invocation.
    """
    entered = time.perf_counter()
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from c2np.training.module import BaselineModule, RunMonitor, stage_of
    from c2np.training.plots import plot_run

    _quiet_lightning()
    m, t = cfg["model"], cfg["train"]
    _check_compile(t)
    task = int(m["task"])
    where = run_dir(out, m["name"], task, seed)
    ckpt = where / "last.ckpt"
    version = objective_version(task, m["name"])
    if resume and ckpt.exists() and (where / "run.json").exists():
        info = json.loads((where / "run.json").read_text())
        if _finished(info, t, version):
            return info
    resume = resume and ckpt.exists()
    ds = store if isinstance(store, Dataset) else open_dataset(store)
    records = load_records(ds, "train", t["materials"] or None, t["radii"] or None, t["limit"] or None)
    split = split_validation(records, t["val_radii"], float(t["val_fraction"]), seed)
    pl.seed_everything(seed, workers=True, verbose=False)
    module = BaselineModule(m, t, seed, cfg.get("predict"))
    if task == 2:
        module.model.fit_targets(torch.tensor(np.stack([r.lattice for r in split.train]), dtype=torch.float32),
                                 torch.tensor([r.spacegroup for r in split.train]))
    plan = module.model.host_plan() if t.get("host_work") else None
    _check_capture(module.model, t, devices)
    data = RecordsData(task, split, int(t["batch_size"]), seed, int(t["workers"]), plan,
                       _pad_spec(module.model, t, records), pad_validation=not t.get("capture"),
                       prefetch=module.prefetched if t.get("capture") and t.get("prefetch", True) else None)
    if not resume:
        if where.exists():
            shutil.rmtree(where)  # a run directory describes exactly one fit
        where.mkdir(parents=True)
    monitor = RunMonitor(where, int(t["patience"]), float(t["rel_tol"]), float(t.get("max_time_s") or 0),
                         budget_s, version, entered)
    # DDP reduces every parameter's gradient; a staged model (ADiT Task 1) leaves one
    # stage's parameters without any, which plain DDP takes for an error
    staged = stage_of(module.model) is not None
    strategy = "ddp_find_unused_parameters_true" if staged and _many(devices) else "auto"
    trainer = pl.Trainer(
        max_epochs=int(t["epochs"]), accelerator="auto", devices=devices, strategy=strategy,
        precision=str(t["precision"]),
        # train.capture clips inside its captured step (Lightning clips only in automatic optimisation)
        gradient_clip_val=None if t.get("capture") else float(t["grad_clip"]),
        logger=False, default_root_dir=where, num_sanity_val_steps=0, use_distributed_sampler=False,
        # enable_version_counter=False: a resumed fit must overwrite last.ckpt; Lightning's
        # default writes last-v1.ckpt beside it, and the next --resume would then go back to
        # the stale last.ckpt (seen on a GPU: epoch 43 instead of 69)
        callbacks=[monitor, ModelCheckpoint(dirpath=where, save_last=True, save_top_k=0,
                                            save_on_train_epoch_end=True, enable_version_counter=False)],
        enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=1)
    with tf32_matmuls(bool(t.get("tf32"))):
        trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if resume else None)
    if not trainer.is_global_zero:
        return {}
    s = monitor.state
    seconds = s["epoch_seconds"]
    info = {
        "model": m["name"], "task": task, "seed": seed, "config": cfg,
        "train_records": len(split.train), "train_atoms": int(sum(len(r.numbers) for r in split.train)),
        "validation": split.describe() | {"val_fraction": float(t["val_fraction"])},
        "epochs": len(seconds),
        # the first epoch pays for CUDA start-up and kernel selection
        "time_per_epoch": float(np.mean(seconds[1:] if len(seconds) > 1 else seconds)),
        "epoch_seconds": [round(x, 3) for x in seconds],
        "val_seconds": [round(x, 3) for x in s["val_seconds"]],
        "final_train_loss": _last(where, "train_loss"),
        "final_val_loss": _last(where, "val_loss"),
        "best_val_loss": s["best_val_loss"], "best_epoch": s["best_epoch"],
        "converged": s["converged"], "converged_epoch": s["converged_epoch"],
        "stop_reason": s["stop_reason"] or "interrupted",
        "convergence_rule": (f"best validation loss not improved by more than {100 * monitor.rel_tol:g} % "
                             f"(relative) for {monitor.patience} consecutive epochs"
                             + (", in each training stage" if staged else "")),
        "stages": s["stages"],
        "objective_version": s["objective_version"], "objective_changes": s["objective_changes"],
        "elapsed_s": round(s["elapsed_s"], 2), "invocations": s["invocations"],
        # per invocation from this one's record on: its first epoch, seconds from the process's
        # start and from train()'s to the first epoch, and the ends of its first steps
        # (the DataLoader's first batch and, on a GPU, compilation) after the epoch's start
        "invocation_log": s["invocation_log"],
        "parameters": int(sum(p.numel() for p in module.parameters())),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "devices": trainer.world_size, "precision": str(t["precision"]),
        "max_time_s": float(t.get("max_time_s") or 0),
        "checkpoint": str(where / ("best.ckpt" if (where / "best.ckpt").exists() else "last.ckpt")),
    }
    (where / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    plot_run(where)
    return info


def _many(devices: int | str | list) -> bool:
    """Whether Lightning's ``devices`` asks for more than one process (-1: all of them)."""
    if devices == "auto":
        return torch.cuda.device_count() > 1
    if isinstance(devices, str) and "," in devices:  # a list of device indices, "0,1"
        devices = [d for d in devices.split(",") if d.strip()]
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    return int(devices) != 1


#: the string values of ``train.compile`` (besides true and false); see the bundled configs
COMPILE_MODES = ("gpu", "edges", "loss", "static", "triton")


def _check_compile(t: dict) -> None:
    """``train.compile`` is a known value, and ``"triton"`` can run here (before any data is read)."""
    mode = t.get("compile")
    if mode is not None and not isinstance(mode, bool) and mode not in COMPILE_MODES:
        raise ConfigError(f"train.compile must be true, false or one of {', '.join(map(repr, COMPILE_MODES))}, "
                          f"got {mode!r}")
    if mode == "triton":
        from c2np.models import cfconv_triton

        if t.get("bf16_edges"):
            raise ConfigError('train.bf16_edges: the fused kernels of train.compile = "triton" are fp32 only')
        if not cfconv_triton.available():
            raise ConfigError(f'train.compile = "triton": {cfconv_triton.unavailable_reason("cpu")}')


#: atom sizes per doubling of ``train.capture`` when ``train.pad_buckets`` is 0 (about 9 % padding)
CAPTURE_PAD_BUCKETS = 4


@contextlib.contextmanager
def tf32_matmuls(on: bool):
    """Within the block, fp32 matrix products (and cuDNN convolutions) on the tensor cores
    when ``on`` (``train.tf32``): inputs rounded to a 10-bit mantissa, accumulation fp32.
    Process-wide PyTorch flags, put back afterwards; the compiled loss reads them when it
    compiles, inside the fit."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _check_capture(model, t: dict, devices) -> None:
    """``train.capture`` (c2np.training.captured) can run this model and setting."""
    if not t.get("capture"):
        return
    why = None
    if not getattr(model, "pads", False) or not hasattr(model, "host_plan"):
        why = f"{type(model).__name__} does not take padded batches (CDVAE Task 1 does)"
    elif t.get("host_work"):
        why = "it makes the graphs and noise draws itself; set train.host_work = false"
    elif t.get("compile") in ("static", "triton") or t.get("cuda_graphs"):
        why = 'it captures the step itself; use train.compile = "loss", "edges" or false and cuda_graphs = false'
    elif _many(devices):
        why = "one device only (a captured step has no DDP gradient reduction)"
    elif str(t.get("precision", "32-true")) not in ("32", "32-true"):
        why = "fp32 only (precision = \"32-true\")"
    elif edge_buckets(t) < 1:
        why = f"train.edge_buckets must be at least 1, got {t.get('edge_buckets')}"
    if why:
        raise ConfigError(f"train.capture: {why}")


def _pad_spec(model, t: dict, records):
    """The static shapes of ``train.pad_buckets`` (sizes per doubling; 0: unpadded;
    ``train.capture`` pads with :data:`CAPTURE_PAD_BUCKETS` then)."""
    per_octave = int(t.get("pad_buckets") or 0) or (CAPTURE_PAD_BUCKETS if t.get("capture") else 0)
    if not per_octave:
        if t.get("compile") == "static":
            raise ConfigError("train.compile = \"static\" needs train.pad_buckets (without it every batch "
                              "has new shapes and compiles again)")
        return None
    if not getattr(model, "pads", False) or t.get("host_work"):
        raise ConfigError(f"train.pad_buckets: {type(model).__name__} does not take padded batches"
                          + (" with train.host_work" if t.get("host_work") else "") + " (CDVAE Task 1 does)")
    # a DDP rank's share of a batch is smaller: its extra empty graph slots cost little
    return pad_spec(records, int(t["batch_size"]), per_octave)


def _last(where: Path, column: str) -> float | None:
    """The last value of a metrics.csv column."""
    import csv

    with (where / "metrics.csv").open() as f:
        values = [r[column] for r in csv.DictReader(f) if r.get(column)]
    return float(values[-1]) if values else None
