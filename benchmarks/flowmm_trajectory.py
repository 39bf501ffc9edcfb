"""FlowMM Task 1: how a particle's atoms crowd together along the sampler's ODE, beside the
training paths x_t = (1 - kappa) x_data + kappa x_base at the same times.

    python benchmarks/flowmm_trajectory.py CHECKPOINT [--store c2np-store] [--material BaAlH3]
        [--radius 21] [--steps 200] [--anneal-slope 0] [--device cpu]

For one test particle it prints, every tenth of the steps, the median nearest-neighbour
distance of the atoms, the share of atoms within 0.5 A of another and the radius of
gyration, for the sampled state and for a training-path state of the real particle (one
seeded base draw), and at the end the same for the generated particle and the reference.
The sampler is the model's own (``sample_positions``, EMA weights). A model
that collapses a particle shows it here: objective version 2's seed 0 (in the history:
git show 0bf331d:results/learned/runs/flowmm-task1-seed0/best.ckpt) at R = 21 ends at 0.20 A
and 56 % where the reference has 2.03 A and 0 %; version 3's seed 0
(git show efc1d13:results/learned/runs/flowmm-task1-seed0/best.ckpt; it left the tree once its
test splits were scored) at 1.13 A and 22 % (docs/models.md, "FlowMM").
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from c2np.metrics.structure import VALID_MIN_DISTANCE, nearest_distances
from c2np.models.flowmm import _uniform_ball
from c2np.models.graph import DEFAULT_SKIN, reused_neighbours
from c2np.store.dataset import open_dataset
from c2np.training.data import COLLATE, load_records
from c2np.training.predict import load_module


def crowding(x: torch.Tensor) -> tuple[float, float, float]:
    """Median nearest-neighbour distance, share of atoms within 0.5 A of another, radius of
    gyration (A)."""
    pts = x.detach().cpu().double().numpy()
    d = nearest_distances(pts)
    rg = np.sqrt(((pts - pts.mean(0)) ** 2).sum(1).mean())
    return float(np.median(d)), float((d < VALID_MIN_DISTANCE).mean()), float(rg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a FlowMM Task 1 best.ckpt or last.ckpt")
    ap.add_argument("--store", default="c2np-store")
    ap.add_argument("--material", default="BaAlH3")
    ap.add_argument("--radius", type=int, default=21, help="a test radius (ID or OOD)")
    ap.add_argument("--steps", type=int, default=0, help="Euler steps (default: the model's)")
    ap.add_argument("--anneal-slope", type=float, default=None,
                    help="FlowMM's inference annealing, velocity x (1 + slope (1 - t)) "
                         "(default: the model's, 0 as in FlowMM's configs)")
    ap.add_argument("--seed", type=int, default=12345, help="sampler seed")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    model = load_module(a.checkpoint, a.device).model
    if type(model).__name__ != "FlowMMTask1":
        ap.error(f"{a.checkpoint} holds a {type(model).__name__}, not a FlowMM Task 1 model")
    ds = open_dataset(a.store)
    record = None
    for split in ("id", "ood"):
        try:
            record = load_records(ds, split, [a.material], [a.radius])[0]
            break
        except ValueError:  # not a radius (or material) of this split
            continue
    if record is None:
        ap.error(f"no test particle of {a.material} at R = {a.radius} in {a.store}")
    model.sample_steps = a.steps or model.sample_steps
    if a.anneal_slope is not None:
        model.anneal_slope = a.anneal_slope
    every = max(model.sample_steps // 10, 1)
    batch = COLLATE[1]([(record, -1)]).to(a.device)
    torch.manual_seed(a.seed)
    started = time.perf_counter()
    print(f"{a.material} R = {a.radius}, {model.sample_steps} Euler steps, drift {getattr(model, 'drift', 'none')}"
          + (f", anneal slope {model.anneal_slope:g}" if model.anneal_slope else ""))
    print("| step | t | sampled: median NN (A), share < 0.5 A, Rg (A) | training path: the same |")
    print("|---|---|---|---|")

    def report(i: int, t: torch.Tensor, x: torch.Tensor) -> None:
        if i % every == 0:
            kappa, _ = model.interpolant(t)
            s, p = crowding(x), crowding((1 - kappa) * batch.pos + kappa * base)
            print(f"| {i} | {float(t):.2f} | {s[0]:.2f}, {s[1]:.2f}, {s[2]:.1f} | {p[0]:.2f}, {p[1]:.2f}, {p[2]:.1f} |")

    # the model's own sampler, with the neighbour lists of generation
    with torch.no_grad(), model.averaged_weights(), reused_neighbours(model, DEFAULT_SKIN):
        start = model.start_sampling(batch, a.seed)
        base = _uniform_ball(batch.radius[batch.batch])
        x = model.sample_positions(start, on_step=report)
    s, r = crowding(x), crowding(batch.pos)
    print(f"| end | 0 | {s[0]:.2f}, {s[1]:.2f}, {s[2]:.1f} | reference: {r[0]:.2f}, {r[1]:.2f}, {r[2]:.1f} |")
    print(f"{len(x)} atoms generated ({len(batch.pos)} in the reference), "
          f"{time.perf_counter() - started:.0f} s wall on {a.device}")


if __name__ == "__main__":
    main()
