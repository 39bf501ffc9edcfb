"""Loss curves of a run (``c2np plot-run RUN_DIR``; also written at the end of every fit)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def plot_run(run: Path, out: Path | None = None) -> Path:
    """Training and validation loss per epoch from ``run/metrics.csv`` into ``curves.png``,
    with the best epoch, the end of each finished training stage of a staged model and, if
    the run converged, where it did."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run)
    if not (run / "metrics.csv").exists():
        raise FileNotFoundError(f"{run / 'metrics.csv'}: no such file; is {run} a `c2np train` run?")
    frame = pd.read_csv(run / "metrics.csv")
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for column, label in (("train_loss", "training"), ("val_loss", "validation")):
        if column in frame and frame[column].notna().any():
            ax.plot(frame["epoch"], frame[column], marker=".", label=label)
    if info.get("best_epoch") is not None:
        ax.axvline(info["best_epoch"], color="grey", ls="--", lw=1, label=f"best (epoch {info['best_epoch']})")
    for st in info.get("stages") or []:  # a staged run (ADiT Task 1): its loss changes meaning here
        ax.axvline(st["converged_epoch"] + 0.5, color="black", ls=":", lw=1,
                   label=f"{st['stage']} stage converged (epoch {st['converged_epoch']})")
    state = ("converged at epoch %d" % info["converged_epoch"] if info.get("converged")
             else f"not converged ({info.get('stop_reason', 'running')})")
    ax.set(xlabel="epoch", ylabel="loss", title=f"{info.get('model', run.name)} task {info.get('task', '?')} "
           f"seed {info.get('seed', '?')}: {state}")
    losses = frame[["train_loss", "val_loss"]].to_numpy(float)
    if (losses > 0).all() and losses.max() > 10 * losses.min():  # log only where it helps
        ax.set_yscale("log")
    ax.legend()
    out = Path(out) if out is not None else run / "curves.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
