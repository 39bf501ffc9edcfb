"""Cost of one training step (loss + backward) of every registered family with its bundled
config, on the same batch, as wall and CPU seconds and as a ratio to CDVAE.

    python benchmarks/model_step_cost.py --store c2np-store [--radius 10] [--materials 2] [--steps 3]

Ratios within one run are what to compare: absolute times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time

import torch

from c2np.models.registry import MODELS, build_model, last_stage
from c2np.store.dataset import open_dataset
from c2np.training.configs import load_training_config
from c2np.training.data import COLLATE, load_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="c2np-store")
    parser.add_argument("--split", default="id")
    parser.add_argument("--radius", type=int, default=10)
    parser.add_argument("--materials", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    records = load_records(open_dataset(args.store), args.split, radii=[args.radius])[: args.materials]
    atoms = sum(len(r.numbers) for r in records)
    rows = []
    for task in (1, 2):
        batch = COLLATE[task]([(r, 0 if task == 2 else -1) for r in records])
        for name in MODELS:
            cfg = load_training_config(name, task)["model"]
            torch.manual_seed(0)
            # ADiT Task 1 in its DiT stage (frozen VAE forward + DiT), the costlier of its two
            model = last_stage(build_model(name, task, **{k: v for k, v in cfg.items() if k not in ("name", "task")}))
            if task == 2:
                model.fit_targets(batch.lattice, batch.spacegroup)
            model.loss(batch)["loss"].backward()  # warm-up
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                model.zero_grad()
                model.loss(batch)["loss"].backward()
            rows.append((task, name, sum(p.numel() for p in model.parameters()),
                         (time.perf_counter() - wall) / args.steps, (time.process_time() - cpu) / args.steps))
    print(f"{len(records)} particles at R = {args.radius} ({atoms} atoms), {args.steps} steps, "
          f"{torch.get_num_threads()} threads")
    print("| task | model | parameters | wall s/step | CPU s/step | CPU ratio to cdvae |")
    print("|---|---|---|---|---|---|")
    for task, name, params, wall, cpu in rows:
        ref = next(c for t, n, _, _, c in rows if t == task and n == "cdvae")
        print(f"| {task} | {name} | {params:,} | {wall:.2f} | {cpu:.2f} | {cpu / ref:.1f} |")


if __name__ == "__main__":
    main()
