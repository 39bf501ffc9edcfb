"""The Lightning wrapper shared by every learned baseline: Adam with exponential decay,
gradient clipping (set on the Trainer), per-epoch timing."""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch

from c2np.models.registry import build_model


class BaselineModule(pl.LightningModule):
    """Any model of ``c2np.models.MODELS``; ``model.loss(batch)`` returns a dict with ``loss``."""

    def __init__(self, model: dict, train: dict):
        super().__init__()
        self.save_hyperparameters()
        params = {k: v for k, v in model.items() if k not in ("name", "task")}
        self.model = build_model(model["name"], int(model["task"]), **params)

    def training_step(self, batch, batch_idx):
        out = self.model.loss(batch)
        for k, v in out.items():
            self.log(f"train_{k}", v.detach(), on_step=False, on_epoch=True, batch_size=batch.n_graphs,
                     prog_bar=k == "loss")
        return out["loss"]

    def configure_optimizers(self):
        t = self.hparams.train
        opt = torch.optim.Adam(self.parameters(), lr=float(t["lr"]))
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=float(t["lr_decay"]))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device)


class EpochTimer(pl.Callback):
    """Wall-clock seconds of every training epoch (CUDA synchronised at both ends)."""

    def __init__(self):
        self.seconds: list[float] = []
        self._start = 0.0

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_epoch_start(self, trainer, module):
        loader = trainer.train_dataloader
        if hasattr(loader, "dataset") and hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(trainer.current_epoch)  # rotation draws differ per epoch
        self._sync()
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self._sync()
        self.seconds.append(time.perf_counter() - self._start)
