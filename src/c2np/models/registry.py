"""Model names -> classes per task."""

from __future__ import annotations

from c2np.models.adit import ADiTTask1, ADiTTask2
from c2np.models.cdvae import CDVAETask1, CDVAETask2
from c2np.models.diffcsp import DiffCSPTask1, DiffCSPTask2
from c2np.models.flowmm import FlowMMTask1, FlowMMTask2
from c2np.models.mattergen import MatterGenTask1, MatterGenTask2
from c2np.models.symat import SyMatTask1, SyMatTask2

MODELS = {
    "cdvae": {1: CDVAETask1, 2: CDVAETask2},
    "symat": {1: SyMatTask1, 2: SyMatTask2},
    "diffcsp": {1: DiffCSPTask1, 2: DiffCSPTask2},
    "flowmm": {1: FlowMMTask1, 2: FlowMMTask2},
    "mattergen": {1: MatterGenTask1, 2: MatterGenTask2},
    "adit": {1: ADiTTask1, 2: ADiTTask2},
}


def build_model(name: str, task: int, **hparams):
    """Instantiate ``name`` for ``task`` with the config's model section."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    if task not in MODELS[name]:
        raise ValueError(f"task must be 1 or 2, got {task}")
    return MODELS[name][task](**hparams)


def last_stage(model):
    """Take a model trained in stages (ADiT Task 1: its VAE, then its DiT) to its last stage,
    the one that generates, and return it; other models are returned as they are. For
    untrained models in benchmarks and tests: a trained run gets there by converging."""
    while hasattr(model, "advance_stage") and model.advance_stage():
        pass
    return model
