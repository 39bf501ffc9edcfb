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

``--score`` adds each generated particle's official Task 1 scores (RMSD, RDF and LEV
errors, as `c2np evaluate` computes them) and a per-radius summary (mean, largest), to tell
whether a split's outlying mean comes from a rare particle or from every one; ``--n 0``
takes every particle of those radii, generated ``--batch`` at a time (seed SEED + batch):

    python benchmarks/particle_geometry.py --checkpoint RUN/best.ckpt --store c2np-store-materials \
        --split id --radii 11 --n 0 --batch 8 --score --out r11.csv

With ``--predictions`` it reads particles already generated instead (a `c2np predict`
parquet file, or the ``.chunks`` folder of one still in progress) and prints, per radius,
how many atoms have a neighbour closer than ``--close`` (0.5 A; in the 81 materials' reference
particles no two atoms are closer than 1.56 A), beside the references:

    python benchmarks/particle_geometry.py --predictions preds/diffcsp-task1-id-seed1.parquet.chunks \\
        --store c2np-store --split id
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from c2np.metrics.structure import nearest_distances, task1_metrics
from c2np.store.dataset import open_dataset
from c2np.tasks.targets import task1_samples
from c2np.training.chunks import MANIFEST, ChunkFolder
from c2np.training.data import load_records, task1_ids
from c2np.training.predict import generate_particles, load_module


def geometry(pos: np.ndarray, radius: float) -> tuple[int, float, float, float, float]:
    c = np.linalg.norm(pos - pos.mean(0), axis=1)
    nn = nearest_distances(pos)
    return len(pos), float(c.max()), float(np.mean(c > radius - 0.3)), float(nn.min()), float(np.median(nn))


def read_predictions(path: Path) -> pd.DataFrame:
    """A Task 1 prediction file, or the finished batches of a ``c2np predict --resume``
    prediction still in progress (its ``.chunks`` folder)."""
    if path.is_dir():
        manifest = path / MANIFEST
        if not manifest.is_file():
            raise SystemExit(f"{path}: no {MANIFEST}; not the .chunks folder of a `c2np predict --resume`")
        folder = ChunkFolder(path.with_name(path.name.removesuffix(".chunks")), json.loads(manifest.read_text()))
        files = [folder.path(b) for b in sorted(folder.finished())]
    else:
        files = [path] if path.is_file() else []
    if not files:
        raise SystemExit(f"{path}: no Task 1 predictions (a parquet file, or a .chunks folder with batches)")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def close_atoms(pos: np.ndarray, close: float) -> tuple[float, float]:
    """(fraction of atoms with a neighbour closer than ``close``, smallest neighbour distance)."""
    nn = nearest_distances(pos)
    return float(np.mean(nn < close)), float(nn.min())


def overlap_table(preds: pd.DataFrame, ds, split: str, close: float) -> str:
    """Per radius: particles, and the mean / largest fraction of close atoms and the median
    smallest neighbour distance of the generated particles and of their references."""
    index = task1_samples(ds, split).set_index("config_id")
    unknown = sorted(set(preds.config_id) - set(index.index))
    if unknown:
        raise SystemExit(f"config_id {unknown[:5]} not in the {split} split: pass the split the predictions are of")
    rows = []
    for cid, g in preds.groupby("config_id"):
        material, radius = index.loc[cid, "material"], int(index.loc[cid, "radius"])
        gen = close_atoms(g[["x", "y", "z"]].to_numpy(), close)
        ref = close_atoms(ds.canonical(material, radius).positions, close)
        rows.append((radius, *gen, *ref))
    df = pd.DataFrame(rows, columns=["R", "gen_frac", "gen_min", "ref_frac", "ref_min"])
    lines = [f"| R | particles | generated: atoms closer than {close} A to a neighbour, mean / largest | "
             "smallest distance, median (A) | references: the same | smallest distance, median (A) |",
             "|---|---|---|---|---|---|"]
    for radius, g in [*df.groupby("R"), ("all", df)]:
        lines.append(f"| {radius} | {len(g)} | {g.gen_frac.mean():.3f} / {g.gen_frac.max():.3f} | "
                     f"{g.gen_min.median():.3f} | {g.ref_frac.mean():.3f} / {g.ref_frac.max():.3f} | "
                     f"{g.ref_min.median():.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="Generate particles from this run's checkpoint.")
    what.add_argument("--predictions", type=Path,
                      help="Read generated particles: a Task 1 parquet file or its .chunks folder.")
    ap.add_argument("--close", type=float, default=0.5, help="With --predictions: 'close' in A.")
    ap.add_argument("--store", default="c2np-store")
    ap.add_argument("--split", default="ood")
    ap.add_argument("--radii", type=int, nargs="+", default=[6])
    ap.add_argument("--n", type=int, default=4, help="Particles per radius (0: all of the split's).")
    ap.add_argument("--batch", type=int, default=0, help="Particles generated at once (0: all).")
    ap.add_argument("--score", action="store_true", help="Also the official Task 1 scores of each particle.")
    ap.add_argument("--out", type=Path, help="Write the per-particle rows as CSV.")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default=None, help="Default: CUDA when present, else CPU.")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU.")
    a = ap.parse_args()
    ds = open_dataset(a.store)
    if a.predictions is not None:
        preds = read_predictions(a.predictions)
        print(f"{preds.config_id.nunique()} particles, {len(preds)} atoms ({a.predictions}, {a.split})\n")
        print(overlap_table(preds, ds, a.split, a.close))
        return
    torch.set_num_threads(a.threads)
    module = load_module(a.checkpoint, a.device)
    records = load_records(ds, a.split)
    pairs = list(zip(records, task1_ids(ds, a.split, records)))
    pick = []
    for r in a.radii:
        at = [p for p in pairs if p[0].radius == r]
        if not at:
            raise SystemExit(f"no {a.split} particle at R = {r}; this split's radii: "
                             f"{sorted({p[0].radius for p in pairs})}")
        pick += at[:: max(1, len(at) // a.n)][: a.n] if a.n > 0 else at
    t0, c0 = time.perf_counter(), time.process_time()
    size = a.batch if a.batch > 0 else len(pick)
    made = pd.concat([generate_particles(module.model, module.device, pick[i:i + size], seed=a.seed + i // size,
                                         skin=None) for i in range(0, len(pick), size)], ignore_index=True)
    print(f"{len(pick)} particles in {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} CPU-s "
          f"({module.model.__class__.__name__}, {a.checkpoint})\n")
    scored = ["rmsd", "rdf_error", "lev_error"] if a.score else []
    print("| material | R | particle | atoms | largest distance from the centroid (A) | within 0.3 A of the sphere | "
          "nearest neighbour min / median (A) |" + "".join(f" {k} |" for k in scored))
    print("|---|---|---|---|---|---|---|" + "---|" * len(scored))
    rows = []
    by_id = dict(tuple(made.groupby("config_id", sort=False)))  # one pass, not a mask per particle
    for rec, cid in pick:
        ref = ds.canonical(rec.material, int(rec.radius))
        g = by_id[cid]
        scores = task1_metrics(g[["x", "y", "z"]].to_numpy(), g["Z"].to_numpy(), ref.positions, ref.numbers) \
            if a.score else {}
        for name, pos in (("generated", g[["x", "y", "z"]].to_numpy()), ("reference", ref.positions)):
            n, far, shell, nmin, nmed = geometry(pos, rec.radius)
            cells = "".join(f" {scores[k]:.3g} |" for k in scored) if name == "generated" else " - |" * len(scored)
            print(f"| {rec.material} | {rec.radius} | {name} | {n} | {far:.2f} | {shell:.2f} | {nmin:.2f} / {nmed:.2f} |"
                  + cells)
            if name == "generated":
                rows.append({"config_id": cid, "material": rec.material, "radius": rec.radius, "atoms": n,
                             "nearest_min": nmin, **{k: scores[k] for k in scored}})
    frame = pd.DataFrame(rows)
    if a.score:
        print("\n| R | particles | " + " | ".join(f"{k} mean / largest" for k in scored) + " |")
        print("|---|---|" + "---|" * len(scored))
        for radius, g in frame.groupby("radius"):
            print(f"| {radius} | {len(g)} | " + " | ".join(f"{g[k].mean():.3g} / {g[k].max():.3g}" for k in scored) + " |")
    if a.out is not None:
        frame.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
