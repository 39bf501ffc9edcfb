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
from c2np.training.chunks import chunk_dir, chunk_missing, parse_shard
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
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run from its last.ckpt (same epoch count, stopping state and "
                         "clock; the run's own config plus any --set); a finished run is left as is; "
                         "with no checkpoint yet, start it.")] = False,
    budget: Annotated[float, typer.Option(
        help="Seconds this invocation may train: stop (pause) before an epoch that would end later; "
             "continue with --resume. 0 = no limit.")] = 0.0,
    quiet: QuietOpt = False,
) -> None:
    """Train a learned baseline until it converges (PyTorch Lightning; a GPU is used when present).

    Validation is held out of the train split (Task 1: radii 13 and 23; Task 2: a seeded
    10 % of each (material, R)'s rotations) and scored every epoch. Converged: the best
    validation loss has not improved by more than 1 % (relative) for `patience` (10) epochs.
    ADiT Task 1 trains in two stages, as ADiT does: its VAE until that converges, then its
    DiT on the frozen VAE until that converges (run.json's `stages`, metrics.csv's `stage`).
    Writes last.ckpt, best.ckpt, metrics.csv, curves.png and run.json (config, validation,
    convergence, stop reason, time per epoch, device). Then `c2np predict` and
    `c2np evaluate --run-info`.

    Examples:
      c2np train --task 2 --model cdvae --seed 0
      c2np train --task 1 --model cdvae --seed 0 --budget 500 --resume   # in 10-minute slices
      c2np train --task 2 --model cdvae --devices 2                       # DDP, same effective batch
    """
    _torch_missing()
    import json

    from c2np.training.configs import apply_overrides, load_training_config
    from c2np.training.run import run_dir
    from c2np.training.run import train as fit

    try:
        saved = run_dir(out, model, task, seed) / "run.json"
        if resume and saved.exists():
            cfg = apply_overrides(json.loads(saved.read_text())["config"], set_ or [])
        else:
            cfg = load_training_config(model, task, config, set_)
        info = fit(cfg, store, out, seed, progress=not quiet,
                   devices=int(devices) if devices.isdigit() else devices, resume=resume, budget_s=budget)
    except (C2NPError, ValueError) as exc:
        _fail(C2NPError(str(exc)))
    if not info:  # a DDP worker process; rank 0 reports
        return
    state = (f"converged at epoch {info['converged_epoch']}" if info["converged"]
             else f"not converged ({info['stop_reason']})")
    console.print(f"{info['model']} task {task} seed {seed}: {info['epochs']} epochs, {state}, "
                  f"{info['time_per_epoch']:.2f} s/epoch on {info['device']} x{info.get('devices', 1)}, "
                  f"best validation loss {info['best_val_loss']:.4g} (epoch {info['best_epoch']}); "
                  f"checkpoint {info['checkpoint']}")


@app.command("plot-run")
def plot_run(
    run: Annotated[Path, typer.Argument(help="A run directory of `c2np train` (holds metrics.csv).")],
    out: Annotated[Optional[Path], typer.Option(help="PNG to write (default RUN/curves.png).")] = None,
) -> None:
    """Plot a run's training and validation loss per epoch, its best epoch and whether it converged."""
    from c2np.training.plots import plot_run as draw

    try:
        path = draw(run, out)
    except FileNotFoundError as exc:
        _fail(C2NPError(str(exc)))
    console.print(f"wrote {path}")


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Option(help="best.ckpt (or last.ckpt) of a `c2np train` run.")],
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
    batch_size: Annotated[Optional[int], typer.Option(
        help="Particles generated (Task 1) or predicted (Task 2) at once (default: the config's "
             "[predict] batch_size kept in the checkpoint; older checkpoints: the training batch).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Keep every finished batch in OUT.chunks/ and continue from the batches an earlier, "
                         "killed call left there; OUT is written when all are done, and the folder removed. "
                         "Refused when the folder belongs to another checkpoint, split, seed or batch size.")] = False,
    compile: Annotated[bool, typer.Option(
        "--compile", help="Task 1: torch.compile the sampler's network (dynamic shapes; compiles during the "
                          "first batches). Not bit-identical to eager; --resume never mixes the two.")] = False,
    skin: Annotated[float, typer.Option(
        help="Task 1: Angstrom added to the cutoff of the neighbour lists kept across sampler steps; 0 builds "
             "every radius graph afresh. The same particles either way.", min=0.0)] = 1.0,
    shard: Annotated[Optional[str], typer.Option(
        help="K/N, with --resume: generate only batches b with b mod N = K, so that N processes (e.g. one "
             "per GPU, CUDA_VISIBLE_DEVICES) share one prediction; the last to finish writes OUT. Same "
             "bits as one process.", metavar="K/N")] = None,
    attention: Annotated[str, typer.Option(
        help="Task 1, ADiT: precision of the transformer's attention kernels while generating: fp32 (as "
             "trained) or bf16 (flash kernels on a GPU's tensor cores; fp32 elsewhere, the Loss fp32). Not "
             "bit-identical to fp32; --resume never mixes the two.", metavar="fp32|bf16")] = "fp32",
    quiet: QuietOpt = False,
) -> None:
    """Write a trained model's predictions for the ID or OOD split in the harness's format.

    Also writes the model's own loss on the whole split to test_loss-SPLIT.json beside the
    checkpoint; `c2np evaluate --run-info RUN/run.json` carries it into the result (Loss column).

    With --resume, a call cut off (a 10-minute GPU session, a kill) loses at most the batch
    it was working on: batch b is drawn with seed SEED * 100003 + b and written atomically to
    OUT.chunks/batch-NNNNN.parquet, the next --resume call (on any machine, the folder carried
    over) generates only the missing batches, and OUT is byte-identical to that of an
    uninterrupted call. The test loss is then kept when test_loss-SPLIT.json already holds
    this checkpoint, seed and batch size. Without --resume, everything is computed afresh
    (and a leftover OUT.chunks/ is removed once OUT is written).

    With --shard K/N, N such calls share the batches (b mod N = K) and the folder; the one
    that finds every batch there when it ends joins them into OUT, the others say so and
    stop (exit 0).

    Examples:
      c2np predict --checkpoint runs/cdvae-task2-seed0/best.ckpt --split ood --out preds.csv
      c2np predict --checkpoint runs/diffcsp-task1-seed0/best.ckpt --split id --out t1.parquet --resume
      CUDA_VISIBLE_DEVICES=1 c2np predict --checkpoint runs/mattergen-task1-seed0/best.ckpt \\
          --split id --out t1.parquet --resume --shard 1/2      # beside --shard 0/2 on GPU 0
      c2np predict --checkpoint runs/adit-task1-seed0/best.ckpt --split ood --out t1.parquet --attention bf16
    """
    _torch_missing()
    from c2np.training.predict import predict as run_predict

    if not checkpoint.exists():
        _fail(C2NPError(f"{checkpoint}: no such checkpoint; train first with `c2np train`"))
    try:
        part = parse_shard(shard) if shard is not None else None
        path = run_predict(checkpoint, store, split, out, seed=seed, all_rotations=all_rotations,
                           sample=sample, batch_size=batch_size, progress=not quiet, resume=resume,
                           compile=compile, skin=skin, shard=part, attention=attention)
    except (C2NPError, ValueError) as exc:
        _fail(C2NPError(str(exc)))
    if path is None:
        missing = chunk_missing(out)
        console.print(f"shard {shard}: its batches are done; {len(missing or ())} batches of other shards are still "
                      f"missing from {chunk_dir(out)}, and the shard that ends last writes {out}")
    else:
        console.print(f"wrote {path}")

