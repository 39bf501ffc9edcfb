"""Host cost of one training step (loss + backward + Adam), on the CPU; prints a table.

    python benchmarks/step_host_cost.py --store c2np-store
    PYTHONPATH=/path/to/main/src python benchmarks/step_host_cost.py --variants device   # earlier code

On a GPU a step of these models is bound by host work, not arithmetic (~25k atoms and
~0.5 M edges per CDVAE Task 1 step, hidden 64). This script counts that host work where
it can be counted without a GPU, with ``torch.profiler`` over the timed steps:

- aten ops per step: every ``aten::`` event (nested ones included) of loss + backward and,
  apart, of clipping + Adam; each is a kernel launch or a host-side call on a GPU;
- host waits of loss + backward: events that make a GPU step wait for the device:
  ``aten::_local_scalar_dense`` (``.item()``, ``int(t)``, ``.tolist()``, ``repeat_interleave``
  without ``output_size``, data-dependent sizes), ``aten::nonzero`` (boolean-mask indexing),
  ``aten::bincount`` and ``aten::unique`` (output sized by the data). Not counted for
  the optimizer: its ``.item()`` calls read the step counters, which Adam keeps on the
  CPU (``capturable=False``), so they do not wait for a GPU;
- CPU step time (median, wall and process CPU time) and, for ``host``, the collate
  function's CPU time per batch (what a DataLoader worker spends on the host work).

Variants: ``device`` (plain batches: the model builds its graphs and draws its noise),
``host`` (batches prepared by ``c2np.models.host_work``), ``pad`` (plain batches padded to
static shapes, ``c2np.models.padding``, 2 sizes per doubling; CDVAE Task 1), each with
Adam ``foreach`` (the CUDA default) or ``fused``, and optionally ``+bf16`` (the SchNet edge
pipeline in bf16, ``train.bf16_edges``). The batches are realistic: CDVAE/SyMat Task 1 batch 8
and Task 2 batch 16 from the size-bucketed sampler (seed 0), the batch nearest the
epoch's mean atom count.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from c2np.models.components import SchNetEncoder
from c2np.models.padding import PaddedCollate, pad_spec
from c2np.models.registry import build_model
from c2np.store.dataset import open_dataset
from c2np.training import data as tdata
from c2np.training.configs import load_training_config

WAITS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::bincount", "aten::_unique2", "aten::unique_dim",
         "aten::unique_consecutive")


def typical_batch(records, task: int, batch_size: int) -> list:
    """The items of the bucketed batch (epoch 0, seed 0) nearest the mean atoms per batch."""
    sizes = [len(r.numbers) for r in records]
    sampler = tdata.BucketBatchSampler(sizes, batch_size, True, 0)
    batches = [b for b in sampler.global_batches() if len(b) == batch_size]
    mean = np.mean([sum(sizes[i] for i in b) for b in batches])
    best = min(batches, key=lambda b: abs(sum(sizes[i] for i in b) - mean))
    dataset = tdata.RecordDataset(records, rotate=task == 2, seed=0)
    return [dataset[int(i)] for i in best]


def model_for(name: str, task: int, records):
    cfg = load_training_config(name, task)
    torch.manual_seed(0)
    model = build_model(name, task, **{k: v for k, v in cfg["model"].items() if k not in ("name", "task")})
    if task == 2:
        model.fit_targets(torch.tensor(np.stack([r.lattice for r in records]), dtype=torch.float32),
                          torch.tensor([r.spacegroup for r in records]))
    return model, int(cfg["train"]["batch_size"])


def measure(name: str, task: int, records, variant: str, steps: int) -> dict:
    model, batch_size = model_for(name, task, records)
    items = typical_batch(records, task, batch_size)
    tokens = set(variant.split("+"))
    plan = model.host_plan() if "host" in tokens else None
    collate = tdata.make_collate(task, plan, 0) if plan is not None else tdata.COLLATE[task]
    if "pad" in tokens:
        collate = PaddedCollate(collate, pad_spec(records, batch_size, 2))
    for module in model.modules():
        if "bf16" in tokens and isinstance(module, SchNetEncoder):
            module.edge_dtype = torch.bfloat16
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    cpu = time.process_time()
    batch = collate(items)
    prep = time.process_time() - cpu
    torch.set_num_threads(threads)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, **({"fused": True} if "fused" in tokens else {"foreach": True}))

    def forward_backward():
        loss = model.loss(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()

    def update():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    forward_backward()  # warm-up
    update()
    counts = {}
    for part, fn in (("model", forward_backward), ("optimizer", update)):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        events = [e.name for e in prof.events() if e.name.startswith("aten::")]
        counts[part] = (len(events), {k: events.count(k) for k in WAITS if k in events})
    walls, cpus = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        forward_backward()
        update()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    graphs = batch.real_graphs or batch.n_graphs if task == 1 else batch.n_graphs
    return {"model": name, "task": task, "variant": variant, "graphs": graphs, "atoms": int(batch.ptr[graphs]),
            "counts": counts, "wall": statistics.median(walls), "cpu": statistics.median(cpus),
            "prep_cpu": prep if plan else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="c2np-store")
    ap.add_argument("--models", default="cdvae:1,symat:2", help="name:task,...")
    ap.add_argument("--variants", default="device+foreach,host+foreach,host+fused")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per row (median)")
    ap.add_argument("--limit", type=int, default=0, help="first N train records only (a quick look)")
    args = ap.parse_args()
    records = tdata.load_records(open_dataset(args.store), "train", limit=args.limit or None)
    print(f"{len(records)} train records, {args.steps} timed steps per row (median), one profiled, "
          f"{torch.get_num_threads()} threads")
    print("| model | task | variant | graphs | atoms | aten ops: loss + backward | host waits: loss + backward "
          "| aten ops: clip + Adam | CPU step wall s | CPU step CPU s | collate CPU s (1 thread) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")
    for item in args.models.split(","):
        name, task = item.split(":")
        for variant in args.variants.split(","):
            try:
                r = measure(name, int(task), records, variant, args.steps)
            except AttributeError as exc:  # the earlier code has no host_plan
                print(f"| {name} | {task} | {variant} | not available: {exc} |")
                continue
            (ops, waits), (opt_ops, _) = r["counts"]["model"], r["counts"]["optimizer"]
            kinds = ", ".join(f"{k.removeprefix('aten::')} {v}" for k, v in waits.items())
            print(f"| {name} | {task} | {variant} | {r['graphs']} | {r['atoms']:,} | {ops:,} | "
                  f"{sum(waits.values())} ({kinds or 'none'}) | {opt_ops:,} | {r['wall']:.2f} | {r['cpu']:.2f} | "
                  f"{r['prep_cpu']:.2f} |", flush=True)

if __name__ == "__main__":
    main()
