"""DiffCSP and FlowMM Task 1 cost on one large particle, bundled default configs.

For each family: one training step (loss + backward) and one network call without
gradients (a sampler step is 2 calls for DiffCSP's predictor-corrector, 1 for FlowMM's
Euler step), on the largest particle of the store's OOD split (or --material/--radius),
with wall and CPU time.

    python benchmarks/models_diffcsp_flowmm.py STORE [--material LiBeH3 --radius 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import c2np
from c2np.models.registry import build_model
from c2np.training.configs import load_training_config
from c2np.training.data import COLLATE, load_records


def timed(fn, *args) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", type=Path)
    parser.add_argument("--material")
    parser.add_argument("--radius", type=int)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = c2np.open_dataset(args.store)
    idx = ds.index[(ds.index["rotation_id"] == 0) & (ds.index["split"] == "ood")]
    if args.material:
        idx = idx[idx["material"] == args.material]
    if args.radius:
        idx = idx[idx["radius"] == args.radius]
    big = idx.loc[idx["n_atoms"].idxmax()]
    rec = load_records(ds, "ood", materials=[big["material"]], radii=[int(big["radius"])])[0]
    batch = COLLATE[1]([(rec, -1)])
    print(f"{big['material']} R={big['radius']}: {len(rec.numbers):,} atoms; "
          f"{args.threads} thread(s), default configs\n")
    print(f"{'family':<8} {'params':>9} {'edges':>9} {'train step wall/CPU (s)':>24} "
          f"{'network call wall/CPU (s)':>26}")
    for name in ("diffcsp", "flowmm"):
        cfg = load_training_config(name, 1)["model"]
        torch.manual_seed(0)
        model = build_model(name, 1, **{k: v for k, v in cfg.items() if k not in ("name", "task")})
        net = model.denoiser if name == "diffcsp" else model.velocity
        edges = net.net.edges(batch.pos, batch.ptr).shape[1]
        train = timed(lambda m: m.loss(batch)["loss"].backward(), model)
        model.eval()
        call = getattr(model, "predict_noise" if name == "diffcsp" else "displacement")
        with torch.no_grad():
            cond = model.cell_condition(batch)
            sample = timed(call, batch, batch.pos, cond, torch.full((1,), 0.5))
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name:<8} {n_params:>9,} {edges:>9,} {train[0]:>11.2f} / {train[1]:<10.2f} "
              f"{sample[0]:>12.2f} / {sample[1]:<10.2f}")


if __name__ == "__main__":
    main()
