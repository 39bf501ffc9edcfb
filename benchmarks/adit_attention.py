"""ADiT Task 1 generation with its attention kernels in fp32 and in bf16 (``c2np predict
--attention``), on a trained checkpoint: the speed and the particles' scores; prints a table.

    python benchmarks/adit_attention.py CHECKPOINT --store STORE [--splits id ood] [--sample 4]

ADiT attends over every atom of a particle: its compute grows with the square of the atom
count, and an fp32 attention runs on the GPU's CUDA cores (the memory-efficient kernel),
where a bf16 one reaches the flash kernels on the tensor cores. Both precisions generate
the same seeded sample of each split (``--sample`` materials per radius, the evaluator's),
bf16 first, so that the GPU's start counts against it; only the sampler's batches are
timed (``generate_particles``, synchronised; wall and CPU seconds alike), not the model's
load, the store's reading or the test Loss. Both are then scored by the harness
(``Evaluator``), and the table compares them particle by particle: the mean RMSD difference
with twice its standard error. The rule the table applies ("same scores"): the paired mean
RMSD difference lies within twice its standard error (or under 0.01 A), and bf16 has no
more degenerate particles and no larger share of atoms closer than 0.5 A to another (plus
0.01).

The checkpoint is copied to a temporary folder with its test_loss files, so nothing of
the run's folder (its prediction-SPLIT.json) is touched. ``--out FILE`` adds the rows as
JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from c2np.evaluation.evaluator import Evaluator
from c2np.store.dataset import open_dataset
from c2np.training import predict as predict_mod

PRECISIONS = ("bf16", "fp32")  # bf16 first: the GPU's warm-up counts against it


def timed_generation(rows: list[float], cpu_rows: list[float]):
    """``generate_particles`` that appends each batch's seconds (GPU synchronised) to ``rows``
    and the process's CPU seconds over the same span to ``cpu_rows``."""
    real = predict_mod.generate_particles

    def timed(model, device, chunk, seed, skin):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, cpu = time.perf_counter(), time.process_time()
        out = real(model, device, chunk, seed, skin)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rows.append(time.perf_counter() - start)
        cpu_rows.append(time.process_time() - cpu)
        return out

    return timed


def generate(checkpoint: Path, store, split: str, sample: int, attention: str, out: Path,
             batch_size: int | None) -> dict:
    """One precision's generation of ``split``'s sample: its time and size."""
    seconds: list[float] = []
    cpu_seconds: list[float] = []
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # each precision's own peak, not the run's so far
    real = predict_mod.generate_particles
    predict_mod.generate_particles = timed_generation(seconds, cpu_seconds)
    try:
        predict_mod.predict(checkpoint, store, split, out, sample=sample, attention=attention, resume=True,
                            batch_size=batch_size, progress=False)
    finally:
        predict_mod.generate_particles = real
    frame = pd.read_parquet(out)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"split": split, "attention": attention, "particles": int(frame["config_id"].nunique()),
            "atoms": len(frame), "batches": len(seconds), "seconds": sum(seconds),
            "cpu_seconds": sum(cpu_seconds), "peak_gb": peak}


def compare(rows: dict, scores: dict, split: str) -> dict:
    """bf16 against fp32 on ``split``: speed-up, the paired RMSD difference and the rule."""
    a, b = scores[split, "fp32"], scores[split, "bf16"]
    both = a[["config_id", "rmsd"]].merge(b[["config_id", "rmsd"]], on="config_id", suffixes=("_fp32", "_bf16"))
    diff = both["rmsd_bf16"] - both["rmsd_fp32"]
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    mean = float(diff.mean())
    degenerate = {p: int(scores[split, p]["degenerate"].sum()) for p in PRECISIONS}
    close = {p: float(scores[split, p]["close_atom_fraction"].mean()) for p in PRECISIONS}
    same = ((abs(mean) <= 2 * se or abs(mean) < 0.01) and degenerate["bf16"] <= degenerate["fp32"]
            and close["bf16"] <= close["fp32"] + 0.01)
    return {"split": split, "speedup": rows[split, "fp32"]["seconds"] / rows[split, "bf16"]["seconds"],
            "rmsd_diff_mean": mean, "rmsd_diff_2se": 2 * se, "degenerate": degenerate, "close_atom_fraction": close,
            "same_scores": bool(same)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="best.ckpt of a trained ADiT Task 1 run")
    ap.add_argument("--store", default="c2np-store")
    ap.add_argument("--splits", nargs="+", default=["id", "ood"])
    ap.add_argument("--sample", type=int, default=4, help="materials per radius (the evaluator's seeded sample)")
    ap.add_argument("--batch-size", type=int, default=None, help="particles a batch (default: the checkpoint's)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="scoring processes")
    ap.add_argument("--out", type=Path, help="append the rows here as JSON lines")
    args = ap.parse_args(argv)
    if not args.checkpoint.is_file():
        raise SystemExit(f"{args.checkpoint}: no such checkpoint")
    ds = open_dataset(args.store)
    rows, scores, paired = {}, {}, []
    with tempfile.TemporaryDirectory(prefix="adit-attention-") as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        ckpt = run / args.checkpoint.name
        shutil.copy2(args.checkpoint, ckpt)
        for loss in args.checkpoint.parent.glob("test_loss-*.json"):
            shutil.copy2(loss, run)  # the test Loss is not what is timed: reuse it where it is there
        for split in args.splits:
            for attention in PRECISIONS:
                out = Path(tmp) / f"{split}-{attention}.parquet"
                rows[split, attention] = generate(ckpt, ds, split, args.sample, attention, out, args.batch_size)
                result, scores[split, attention] = Evaluator(1, split, ds, sample_per_group=args.sample) \
                    .evaluate_with_scores(out, jobs=args.jobs)
                rows[split, attention].update(rmsd_mean=result["metrics"]["rmsd"],
                                              rmsd_median=float(scores[split, attention]["rmsd"].median()),
                                              close_atom_fraction=result["validity"]["close_atom_fraction"],
                                              degenerate_fraction=result["certificate"]["degenerate_fraction"])
            paired.append(compare(rows, scores, split))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"ADiT Task 1, {args.checkpoint}, {device}, {args.sample} materials a radius\n")
    print("| split | attention | particles | atoms | s (generation) | particles/s | atoms/s | CPU s | peak GB | "
          "RMSD mean (A) | RMSD median (A) | close-atom share | degenerate share |\n" + "|---" * 13 + "|")
    for (split, attention), r in rows.items():
        peak = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "-"
        print(f"| {split} | {attention} | {r['particles']} | {r['atoms']:,} | {r['seconds']:.2f} | "
              f"{r['particles'] / r['seconds']:.3g} | {r['atoms'] / r['seconds']:.3g} | {r['cpu_seconds']:.1f} | "
              f"{peak} | {r['rmsd_mean']:.3f} | {r['rmsd_median']:.3f} | {r['close_atom_fraction']:.4f} | "
              f"{r['degenerate_fraction']:.3f} |")
    print("\n| split | bf16 speed-up | RMSD bf16 - fp32 (paired mean ± 2 SE, A) | degenerate fp32 / bf16 | "
          "same scores |\n|---|---|---|---|---|")
    for c in paired:
        print(f"| {c['split']} | {c['speedup']:.2f}x | {c['rmsd_diff_mean']:+.3f} ± {c['rmsd_diff_2se']:.3f} | "
              f"{c['degenerate']['fp32']} / {c['degenerate']['bf16']} | {'yes' if c['same_scores'] else 'no'} |")
    if args.out:
        with args.out.open("a") as fh:
            for (split, attention), r in rows.items():
                fh.write(json.dumps({"device": device, "checkpoint": str(args.checkpoint), "sample": args.sample,
                                     **r}) + "\n")
            for c in paired:
                fh.write(json.dumps({"device": device, "checkpoint": str(args.checkpoint), "sample": args.sample,
                                     "comparison": c}) + "\n")


if __name__ == "__main__":
    main()
