"""Task 1 metric speed on the largest particle, and whole-split evaluation times.

Single-particle times are wall and CPU seconds of one process (on a shared machine the
CPU time is the figure to compare); whole-split times are wall seconds and the CPU
seconds of this process and its workers together.

    python benchmarks/metrics_speed.py STORE [--jobs 2] [--skip-splits]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

import c2np
from c2np.evaluation.evaluator import Evaluator
from c2np.metrics.structure import features, task1_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--skip-splits", action="store_true")
    args = parser.parse_args()
    ds = c2np.open_dataset(args.store)
    idx = ds.index[ds.index["rotation_id"] == 0]
    big = idx.loc[idx["n_atoms"].idxmax()]
    ref = ds.canonical(big["material"], int(big["radius"]))
    rng = np.random.default_rng(0)
    rot = Rotation.random(rng=rng).as_matrix()
    perm = rng.permutation(len(ref))
    print(f"largest particle: {big['material']} R={big['radius']}, {len(ref):,} atoms; one core\n")
    print(f"{'prediction':<26} {'all Task 1 metrics: wall / CPU (s)':>34} {'ref features cached: wall / CPU (s)':>36}"
          f" {'RMSD (A)':>9} {'exact embedding':>16} {'degenerate':>11}")
    cases = []
    for label, noise in (("rotated + permuted", 0.0), ("... + 0.05 A noise", 0.05), ("... + 0.2 A noise", 0.2)):
        cases.append((label, (ref.positions @ rot.T + 2.0)[perm] + rng.normal(0, noise, ref.positions.shape),
                      ref.numbers[perm]))
    # What a poor learned model costs: the largest particle of another material, rotated.
    same_r = idx[(idx["radius"] == big["radius"]) & (idx["material"] != big["material"])]
    name = same_r.loc[same_r["n_atoms"].idxmax(), "material"]
    other = ds.canonical(name, int(big["radius"]))
    cases.append((f"{name}, {len(other):,} atoms", other.positions @ rot.T, other.numbers))
    # Sizes that differ: the particle one radius smaller (it embeds exactly), and another
    # material's at that radius.
    for material in (big["material"], name):
        smaller = ds.canonical(material, int(big["radius"]) - 1)
        cases.append((f"{material} R={int(big['radius']) - 1}, {len(smaller):,}", smaller.positions @ rot.T,
                      smaller.numbers))
    # Degenerate predictions of early-trained generative models: every atom within 3 A of
    # the centre, and the particle stretched 10x (docs/metrics.md, bounded cost).
    d = rng.normal(size=ref.positions.shape)
    d *= 3.0 * rng.uniform(size=(len(d), 1)) ** (1 / 3) / np.linalg.norm(d, axis=1, keepdims=True)
    cases.append(("collapsed: all within 3 A", d, ref.numbers))
    cases.append(("stretched 10x", ref.positions @ rot.T * 10.0, ref.numbers))
    warm = ds.canonical(big["material"], 6)  # one-off costs (the seeded start grid) before timing
    task1_metrics(warm.positions @ rot.T, warm.numbers, warm.positions, warm.numbers)
    for label, pred, z in cases:
        w0, c0 = time.perf_counter(), time.process_time()
        m = task1_metrics(pred, z, ref.positions, ref.numbers)
        w1, c1 = time.perf_counter(), time.process_time()
        f = features(ref.positions)
        w2, c2 = time.perf_counter(), time.process_time()
        task1_metrics(pred, z, ref.positions, ref.numbers, f)
        w3, c3 = time.perf_counter(), time.process_time()
        print(f"{label:<26} {f'{w1 - w0:.3f} / {c1 - c0:.3f}':>34} {f'{w3 - w2:.3f} / {c3 - c2:.3f}':>36}"
              f" {m['rmsd']:>9.4f} {m['exact_embedding']!s:>16} {m['degenerate']!s:>11}")
    if args.skip_splits:
        return
    print(f"\nwhole-split evaluation, {args.jobs} processes; Task 1 predictions: perfect (the target itself) or"
          "\nmixed (seeded: half rotated, permuted copies with 0.1 A noise, half another material's particle"
          "\nof the same R, rotated)")
    print(f"{'task':<6} {'split':<6} {'predictions':<12} {'samples':>8} {'wall (s)':>9} {'CPU (s)':>8}"
          f" {'mean RMSD (A)':>14}")
    for split in ("id", "ood"):
        ev1 = Evaluator(1, split, ds)
        for kind in ("perfect", "mixed"):
            preds = _task1_predictions(ds, ev1.targets(), kind)
            cpu = _cpu()
            res = ev1.evaluate(preds, jobs=args.jobs)
            print(f"{1:<6} {split:<6} {kind:<12} {res['n_samples']:>8,} {res['seconds']:>9.1f} {_cpu() - cpu:>8.1f}"
                  f" {res['metrics']['rmsd']:>14.4f}")
        ev2 = Evaluator(2, split, ds)
        cpu = _cpu()
        res = ev2.evaluate(ev2.targets())
        print(f"{2:<6} {split:<6} {'perfect':<12} {res['n_samples']:>8,} {res['seconds']:>9.1f} {_cpu() - cpu:>8.1f}")


def _task1_predictions(ds, targets, kind: str) -> dict:
    """Task 1 predictions for every target: the targets themselves, or the mixed set."""
    preds = {int(r.config_id): ds.canonical(r.material, int(r.radius)) for r in targets.itertuples()}
    if kind == "perfect":
        return preds
    rng = np.random.default_rng(0)
    materials = sorted(targets["material"].unique())
    for i, r in enumerate(targets.sort_values("config_id").itertuples()):
        if i % 2:  # the next material in name order, same R
            atoms = ds.canonical(materials[(materials.index(r.material) + 1) % len(materials)], int(r.radius))
        else:
            atoms = preds[int(r.config_id)].copy()
            atoms.positions = atoms.positions + rng.normal(0, 0.1, (len(atoms), 3))
        atoms = atoms[rng.permutation(len(atoms))]
        atoms.positions = atoms.positions @ Rotation.random(rng=rng).as_matrix().T
        preds[int(r.config_id)] = atoms
    return preds


def _cpu() -> float:
    """CPU seconds of this process and its finished worker processes."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
