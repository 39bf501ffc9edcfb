"""Task 1 metric speed on the largest particle, and whole-split evaluation times.

    python benchmarks/metrics_speed.py STORE [--jobs 2] [--skip-splits]
"""

from __future__ import annotations

import argparse
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
    print(f"{'prediction':<34} {'all Task 1 metrics (s)':>22} {'ref features cached (s)':>24} {'RMSD (A)':>9}")
    for label, noise in (("rotated + permuted", 0.0), ("... + 0.05 A noise", 0.05), ("... + 0.2 A noise", 0.2)):
        pred = (ref.positions @ rot.T + 2.0)[perm] + rng.normal(0, noise, ref.positions.shape)
        t0 = time.perf_counter()
        m = task1_metrics(pred, ref.numbers[perm], ref.positions, ref.numbers)
        t1 = time.perf_counter()
        f = features(ref.positions)
        t2 = time.perf_counter()
        task1_metrics(pred, ref.numbers[perm], ref.positions, ref.numbers, f)
        t3 = time.perf_counter()
        print(f"{label:<34} {t1 - t0:>22.3f} {t3 - t2:>24.3f} {m['rmsd']:>9.4f}")
    if args.skip_splits:
        return
    print(f"\nwhole-split evaluation, perfect predictions, {args.jobs} processes")
    print(f"{'task':<6} {'split':<6} {'samples':>8} {'seconds':>8}")
    for split in ("id", "ood"):
        ev1 = Evaluator(1, split, ds)
        preds = {int(r.config_id): ds.canonical(r.material, int(r.radius)) for r in ev1.targets().itertuples()}
        res = ev1.evaluate(preds, jobs=args.jobs)
        print(f"{1:<6} {split:<6} {res['n_samples']:>8,} {res['seconds']:>8.1f}")
        ev2 = Evaluator(2, split, ds)
        res = ev2.evaluate(ev2.targets())
        print(f"{2:<6} {split:<6} {res['n_samples']:>8,} {res['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
