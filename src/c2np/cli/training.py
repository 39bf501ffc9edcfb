"""Commands of the learned baselines: train, predict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from c2np.cli.common import (
    DEFAULT_STORE,
    EvalSplitOpt,
    QuietOpt,
    StoreOpt,
    TaskOpt,
    _fail,
    app,
    console,
    fail_line,
)
from c2np.errors import C2NPError
from c2np.training.configs import bundled_models

ModelOpt = Annotated[str, typer.Option(help=f"Model family: {', '.join(bundled_models())}.")]


def _torch_missing() -> None:
    try:
        import pytorch_lightning  # noqa: F401
        import torch_geometric  # noqa: F401
    except ImportError:
        fail_line("the learned baselines need PyTorch, PyG and Lightning: pip install -e '.[torch]'")
        raise typer.Exit(2) from None


@app.command()
def train(
    task: TaskOpt,
    model: ModelOpt,
    seed: Annotated[int, typer.Option(help="Seed of weights, batches, noise and rotations.")] = 0,
    store: StoreOpt = DEFAULT_STORE,
    out: Annotated[Path, typer.Option(help="Runs directory; the run goes to OUT/{model}-task{t}-seed{s}.")] = Path("runs"),
    config: Annotated[Optional[Path], typer.Option(
        help="TOML config (default: the bundled c2np/training/configs/{model}_task{t}.toml).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a config key: --set train.epochs=5 --set model.hidden=32 (repeatable).")] = None,
    devices: Annotated[str, typer.Option(
        help="Lightning devices: auto, a count (2 = DDP on two GPUs) or a list like 0,1.")] = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Train a learned baseline (PyTorch Lightning; a GPU is used when present).

    Writes last.ckpt, metrics.csv (losses per epoch) and run.json (config, time per
    epoch, device, parameters). Then `c2np predict` and `c2np evaluate --run-info`.

    Example: c2np train --task 2 --model cdvae --seed 0 --set train.epochs=20
    """
    _torch_missing()
    from c2np.training.configs import load_training_config
    from c2np.training.run import train as fit

    try:
        cfg = load_training_config(model, task, config, set_)
        info = fit(cfg, store, out, seed, progress=not quiet,
                   devices=int(devices) if devices.isdigit() else devices)
    except (C2NPError, ValueError) as exc:
        _fail(C2NPError(str(exc)))
    console.print(f"{info['model']} task {task} seed {seed}: {info['epochs']} epochs, "
                  f"{info['time_per_epoch']:.2f} s/epoch on {info['device']}, final loss "
                  f"{info['final_train_loss']:.4g}; checkpoint {info['checkpoint']}")


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Option(help="last.ckpt of a `c2np train` run.")],
    split: EvalSplitOpt,
    out: Annotated[Path, typer.Option(help="Prediction file: Task 1 .parquet; Task 2 .csv or .parquet.")],
    store: StoreOpt = DEFAULT_STORE,
    seed: Annotated[int, typer.Option(help="Sampling seed (Task 1 latents, species order, Langevin noise).")] = 0,
    all_rotations: Annotated[bool, typer.Option(
        "--all-rotations", help="Task 2: run the model on every rotated configuration instead of once "
                                "per (material, R) (same numbers for these invariant models, 60-164x slower).")] = False,
    sample: Annotated[Optional[int], typer.Option(help=(
        "Task 1: generate only k seeded random materials per radius (score with "
        "`c2np evaluate --sample k`)."))] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a trained model's predictions for the ID or OOD split in the harness's format.

    Example: c2np predict --checkpoint runs/cdvae-task2-seed0/last.ckpt --split ood --out preds.csv
    """
    _torch_missing()
    from c2np.training.predict import predict as run_predict

    if not checkpoint.exists():
        _fail(C2NPError(f"{checkpoint}: no such checkpoint; train first with `c2np train`"))
    try:
        path = run_predict(checkpoint, store, split, out, seed=seed, all_rotations=all_rotations,
                           sample=sample, progress=not quiet)
    except (C2NPError, ValueError) as exc:
        _fail(C2NPError(str(exc)))
    console.print(f"wrote {path}")

