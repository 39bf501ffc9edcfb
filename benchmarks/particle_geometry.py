"""Geometry of generated Task 1 particles beside their references, from a checkpoint, on the
CPU or a GPU; prints a table. A quick look at whether a sampler makes particle-like output
before a whole split is generated and scored (e.g. atoms piled on the carving sphere, or
atoms on top of each other).

    python benchmarks/particle_geometry.py --checkpoint RUN/best.ckpt --store c2np-store \\
        --split ood --radii 6 7 --n 4

Per particle: atoms, the largest distance of an atom from the centroid, the fraction of
atoms within 0.3 A of the carving sphere (|r| > R - 0.3), and the smallest and median
nearest-neighbour distances; the reference's row below each generated one. Materials are
every k-th of the split at each radius (k chosen to spread N over the materials).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.spatial import cKDTree

from c2np.store.dataset import open_dataset
from c2np.training.data import load_records, task1_ids
from c2np.training.predict import generate_particles, load_module


def geometry(pos: np.ndarray, radius: float) -> tuple[int, float, float, float, float]:
    c = np.linalg.norm(pos - pos.mean(0), axis=1)
    nn = cKDTree(pos).query(pos, k=2)[0][:, 1]
    return len(pos), float(c.max()), float(np.mean(c > radius - 0.3)), float(nn.min()), float(np.median(nn))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--store", default="c2np-store")
    ap.add_argument("--split", default="ood")
    ap.add_argument("--radii", type=int, nargs="+", default=[6])
    ap.add_argument("--n", type=int, default=4, help="Particles per radius.")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default=None, help="Default: CUDA when present, else CPU.")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU.")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    module = load_module(a.checkpoint, a.device)
    ds = open_dataset(a.store)
    records = load_records(ds, a.split)
    pairs = list(zip(records, task1_ids(ds, a.split, records)))
    pick = []
    for r in a.radii:
        at = [p for p in pairs if p[0].radius == r]
        if not at:
            raise SystemExit(f"no {a.split} particle at R = {r}; this split's radii: "
                             f"{sorted({p[0].radius for p in pairs})}")
        pick += at[:: max(1, len(at) // a.n)][: a.n]
    t0, c0 = time.perf_counter(), time.process_time()
    made = generate_particles(module.model, module.device, pick, seed=a.seed, skin=None)
    print(f"{len(pick)} particles in {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} CPU-s "
          f"({module.model.__class__.__name__}, {a.checkpoint})\n")
    print("| material | R | particle | atoms | largest distance from the centroid (A) | within 0.3 A of the sphere | "
          "nearest neighbour min / median (A) |")
    print("|---|---|---|---|---|---|---|")
    for rec, cid in pick:
        ref = ds.canonical(rec.material, int(rec.radius))
        gen = made.loc[made.config_id == cid, ["x", "y", "z"]].to_numpy()
        for name, pos in (("generated", gen), ("reference", ref.positions)):
            n, far, shell, nmin, nmed = geometry(pos, rec.radius)
            print(f"| {rec.material} | {rec.radius} | {name} | {n} | {far:.2f} | {shell:.2f} | {nmin:.2f} / {nmed:.2f} |")


if __name__ == "__main__":
    main()
