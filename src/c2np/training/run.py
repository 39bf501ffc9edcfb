"""``c2np train``: fit one (model, task, seed) and leave a run directory behind:

    runs/{model}-task{t}-seed{s}/
        last.ckpt        weights, target scaling, config (Lightning checkpoint)
        run.json         config, seed, epochs, time per epoch, device, parameter count
        metrics.csv      per-epoch losses (Lightning's CSVLogger)
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from c2np.store.dataset import Dataset, open_dataset
from c2np.training.data import COLLATE, RecordDataset, load_records


def run_dir(out: Path, model: str, task: int, seed: int) -> Path:
    """Where a run is written."""
    return Path(out) / f"{model}-task{task}-seed{seed}"


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def train(cfg: dict, store: str | Path | Dataset, out: Path, seed: int, progress: bool = True,
          devices: int | str = "auto") -> dict:
    """Train ``cfg`` (see ``c2np.training.configs``) with ``seed``; returns run.json's content."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from c2np.training.module import BaselineModule, EpochTimer

    _quiet_lightning()
    m, t = cfg["model"], cfg["train"]
    task = int(m["task"])
    ds = store if isinstance(store, Dataset) else open_dataset(store)
    records = load_records(ds, "train", t["materials"] or None, t["radii"] or None, t["limit"] or None)
    pl.seed_everything(seed, workers=True, verbose=False)
    module = BaselineModule(m, t)
    if task == 2:
        module.model.fit_targets(torch.tensor(np.stack([r.lattice for r in records]), dtype=torch.float32),
                                 torch.tensor([r.spacegroup for r in records]))
    loader = DataLoader(RecordDataset(records, rotate=task == 2, seed=seed), batch_size=int(t["batch_size"]),
                        shuffle=True, collate_fn=COLLATE[task],
                        generator=torch.Generator().manual_seed(seed))
    where = run_dir(out, m["name"], task, seed)
    if where.exists():
        shutil.rmtree(where)  # a run directory describes exactly one fit
    where.mkdir(parents=True)
    timer = EpochTimer()
    max_time = float(t.get("max_time_s") or 0)
    trainer = pl.Trainer(
        max_epochs=int(t["epochs"]), max_time={"seconds": max_time} if max_time > 0 else None,
        accelerator="auto", devices=devices, gradient_clip_val=float(t["grad_clip"]),
        logger=CSVLogger(where, name="", version=""), default_root_dir=where,
        callbacks=[timer, ModelCheckpoint(dirpath=where, save_last=True, save_top_k=0)],
        enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(module, loader)
    losses = trainer.callback_metrics
    info = {
        "model": m["name"], "task": task, "seed": seed, "config": cfg,
        "train_records": len(records), "train_atoms": int(sum(len(r.numbers) for r in records)),
        "epochs": len(timer.seconds),
        # the first epoch pays for CUDA start-up and kernel selection
        "time_per_epoch": float(np.mean(timer.seconds[1:] if len(timer.seconds) > 1 else timer.seconds)),
        "epoch_seconds": [round(s, 3) for s in timer.seconds],
        "final_train_loss": float(losses["train_loss"]) if "train_loss" in losses else None,
        "parameters": int(sum(p.numel() for p in module.parameters())),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "max_time_s": max_time,
        "checkpoint": str(where / "last.ckpt"),
    }
    (where / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    return info
