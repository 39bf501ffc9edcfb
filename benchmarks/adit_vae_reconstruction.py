"""ADiT Task 1: the VAE's reconstruction RMSD (Angstrom) per epoch of a short `c2np train` run,
next to the DiT's flow loss, so that the latents can be checked before the DiT is trusted.

    python benchmarks/adit_vae_reconstruction.py --store c2np-store [--epochs 20] [--set model.hidden=64]

The run trains the VAE first until it converges (the training loop's rule), then the DiT
on the frozen VAE's latents (the ``stage`` column); the RMSD is that of the training
step's decoded posterior samples, atoms in order, logged as ``train_recon_rmsd`` (epoch
means). The flow loss is empty while the VAE trains.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from c2np.training.configs import load_training_config
from c2np.training.run import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="c2np-store")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override, e.g. model.hidden=64 (repeatable)")
    args = parser.parse_args()
    cfg = load_training_config("adit", 1, overrides=[f"train.epochs={args.epochs}", *args.overrides])
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        info = train(cfg, args.store, Path(tmp), args.seed, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        log = pd.read_csv(Path(tmp) / f"adit-task1-seed{args.seed}" / "metrics.csv")
    cols = ["epoch", "stage", "train_recon_rmsd", "train_type_accuracy", "train_flow", "train_loss"]
    log = log.dropna(subset=["train_loss"])[[c for c in cols if c in log]].astype({"epoch": int})
    print(f"ADiT Task 1 on {info['device']}: {info['train_records']} particles, {info['parameters']:,} "
          f"parameters, {info['epochs']} epochs in {wall:.0f} s wall / {cpu:.0f} s CPU")
    print(log.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
