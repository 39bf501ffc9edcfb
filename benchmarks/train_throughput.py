"""Training throughput and generation speed of the learned baselines; prints a table.

    python benchmarks/train_throughput.py --store c2np-store --label after --models cdvae:1,cdvae:2
    python benchmarks/train_throughput.py --store c2np-store --label after --variants 32,bf16,32+compile
    PYTHONPATH=old/src python benchmarks/train_throughput.py --label before --no-bucket   # earlier code

One epoch = every (material, R) of the train split once (1,215 particles, 3.85 M atoms
on the bundled set), batch size from the bundled config, Adam + clipping as in
`c2np train`, timed with CUDA synchronised at both ends. The first epoch (or the first
--warmup-steps steps) is a warm-up and not counted. GPU utilisation is nvidia-smi's
utilization.gpu sampled every 0.2 s during the timed epochs. "loss" is the model's loss on one fixed batch at fixed noise
(seeded) with the initial weights, in fp32 and under the run's precision: equal
columns mean the precision leaves the objective unchanged. The script only uses what
the earlier code also had (load_records, COLLATE, RecordDataset, build_model), plus
the size-bucketed sampler when present, so one script measures before and after.

Generation: seconds per particle of `model.generate` (20 noise levels x 5 Langevin
steps) for one particle at each of --gen-radii, with the size head pinned to the
true atom count so that every version generates the same number of atoms.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from c2np.models.registry import build_model
from c2np.store.dataset import open_dataset
from c2np.training import data as tdata
from c2np.training.configs import load_training_config


class GpuSampler:
    """Mean nvidia-smi utilisation of one GPU while active."""

    def __init__(self, index: int):
        self.index, self.values, self._stop = index, [], threading.Event()

    def _run(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", str(self.index)], capture_output=True, text=True, timeout=5)
                self.values.append(float(out.stdout.strip()))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else float("nan")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_model(name: str, task: int, records, device):
    cfg = load_training_config(name, task)
    params = {k: v for k, v in cfg["model"].items() if k not in ("name", "task")}
    torch.manual_seed(0)
    model = build_model(name, task, **params)
    if task == 2:
        model.fit_targets(torch.tensor(np.stack([r.lattice for r in records]), dtype=torch.float32),
                          torch.tensor([r.spacegroup for r in records]))
    return model.to(device), cfg


def loader_for(task: int, records, batch_size: int, bucket: bool, workers: int) -> DataLoader:
    dataset = tdata.RecordDataset(records, rotate=task == 2, seed=0)
    common = {"collate_fn": tdata.COLLATE[task], "num_workers": workers, "persistent_workers": workers > 0,
              "pin_memory": torch.cuda.is_available()}
    if bucket and hasattr(tdata, "BucketBatchSampler"):
        sampler = tdata.BucketBatchSampler([len(r.numbers) for r in records], batch_size, True, 0)
        return DataLoader(dataset, batch_sampler=sampler, **common)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(0), **common)


def fixed_loss(model, batch, dtype) -> float:
    torch.manual_seed(123)
    with torch.autocast(batch.pos.device.type, dtype=dtype, enabled=dtype is not None), torch.no_grad():
        return float(model.loss(batch)["loss"])


def train_step(model, batch, opt, scaler, dtype) -> None:
    """One optimisation step as in `c2np train` (Adam, clipping 1.0)."""
    with torch.autocast(batch.pos.device.type, dtype=dtype, enabled=dtype is not None):
        loss = model.loss(batch)["loss"]
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()


def profile_steps(model, loader, opt, scaler, dtype, device, steps: int) -> None:
    """Where a step's time goes: torch.profiler over ``steps`` steps, the top operators by
    self device time and by self CPU time (host work that can starve the GPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    batches = [b for _, b in zip(range(steps), loader)]
    sync()
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for batch in batches:
            train_step(model, batch.to(device), opt, scaler, dtype)
        sync()
    wall = time.perf_counter() - t0
    atoms = sum(int(b.pos.shape[0]) for b in batches)
    print(f"\nprofile: {steps} steps, {atoms:,} atoms, {wall:.3f} s wall under the profiler", flush=True)
    for key in (["self_cuda_time_total"] if device.type == "cuda" else []) + ["self_cpu_time_total"]:
        print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=48), flush=True)


def train_epochs(name, task, records, args, device, precision: str, compiled: bool) -> dict:
    model, cfg = make_model(name, task, records, device)
    if compiled:
        from c2np.training.module import compile_blocks

        compile_blocks(model)
    batch_size = int(cfg["train"]["batch_size"])
    dtype = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    probe = tdata.COLLATE[task]([(r, 0 if task == 2 else -1) for r in records[:: max(1, len(records) // 8)][:8]])
    probe = probe.to(device)
    loss32, loss_p = fixed_loss(model, probe, None), fixed_loss(model, probe, dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(enabled=dtype is torch.float16)
    loader = loader_for(task, records, batch_size, not args.no_bucket, args.workers)
    times, util = [], GpuSampler(args.gpu)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    for epoch in range(args.epochs + 1):
        if epoch == 1:
            util.__enter__()
        sampler = getattr(loader, "batch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        sync()
        t0 = time.perf_counter()
        for step, batch in enumerate(loader):
            if epoch == 0 and args.warmup_steps and step == args.warmup_steps:
                break
            train_step(model, batch.to(device), opt, scaler, dtype)
        sync()
        times.append(time.perf_counter() - t0)
    util.__exit__()
    if args.profile:
        profile_steps(model, loader, opt, scaler, dtype, device, args.profile)
    per_epoch = float(np.mean(times[1:]))
    atoms = sum(len(r.numbers) for r in records)
    return {"label": args.label, "model": name, "task": task, "precision": precision,
            "bucket": not args.no_bucket and hasattr(tdata, "BucketBatchSampler"), "compile": compiled,
            "batch_size": batch_size, "epoch_s": per_epoch, "epochs_timed": args.epochs,
            "particles_per_s": len(records) / per_epoch, "atoms_per_s": atoms / per_epoch,
            "gpu_util": util.mean, "peak_mem_gb": (torch.cuda.max_memory_allocated() / 2**30
                                                   if torch.cuda.is_available() else float("nan")),
            "loss_fp32": loss32, "loss_precision": loss_p, "epoch_times": [round(t, 3) for t in times]}


def generation_speed(name, ds, radii, device, args) -> list[dict]:
    rows = []
    for radius in radii:
        split = ds.index.loc[ds.index["radius"] == radius, "split"].iloc[0]
        rec = tdata.load_records(ds, split, radii=[radius], limit=1)[0]
        model, _ = make_model(name, 1, [rec], device)
        model.eval()
        batch = tdata.COLLATE[1]([(rec, -1)]).to(device)
        true_log_n = batch.log_n

        def pinned(b, cond, lat, _orig=model.size_and_species):
            log_n, logits = _orig(b, cond, lat)
            return true_log_n.to(log_n.dtype), logits

        model.size_and_species = pinned
        model.generate(batch, seed=0)  # warm-up (kernels, allocator)
        sync()
        t0 = time.perf_counter()
        (z, pos), = model.generate(batch, seed=1)
        sync()
        rows.append({"label": args.label, "model": name, "radius": radius, "atoms": len(z),
                     "s_per_particle": time.perf_counter() - t0})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="c2np-store")
    ap.add_argument("--label", default="run")
    ap.add_argument("--models", default="cdvae:1,cdvae:2,symat:1,symat:2", help="name:task,...")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--variants", default="32", help="comma list of 32 | bf16 | fp16, each optionally +compile")
    ap.add_argument("--compile-models", default="cdvae:1", help="models of the +compile variants")
    ap.add_argument("--no-bucket", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--gen-radii", default="10,20,30", help="empty for none")
    ap.add_argument("--gen-model", default="cdvae")
    ap.add_argument("--limit", type=int, default=0, help="first N train records only (CPU smoke tests)")
    ap.add_argument("--warmup-steps", type=int, default=0,
                    help="warm up with this many steps instead of a whole epoch (0 = one epoch)")
    ap.add_argument("--profile", type=int, default=0,
                    help="after timing, profile this many steps and print the top operators")
    ap.add_argument("--gpu", type=int, default=0, help="nvidia-smi index sampled for utilisation")
    ap.add_argument("--json", help="append the rows to this JSON-lines file")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in every row
    ds = open_dataset(args.store)
    records = tdata.load_records(ds, "train", limit=args.limit or None)
    print(f"{args.label}: {len(records)} particles, {sum(len(r.numbers) for r in records):,} atoms per epoch, "
          f"{torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}", flush=True)
    print("| label | model | task | precision | bucket | s/epoch | particles/s | atoms/s | GPU util % "
          "| peak mem GB | loss fp32 | loss prec. |\n|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for variant in args.variants.split(","):
        precision, _, compiled = variant.partition("+")
        for item in (args.compile_models if compiled else args.models).split(","):
            name, task = item.split(":")
            try:
                r = train_epochs(name, int(task), records, args, device, precision, bool(compiled))
            except Exception as exc:  # one failing variant (e.g. a compiler error) keeps the others
                print(f"| {args.label} | {name} | {task} | {variant} | failed: {exc!r:.200} |", flush=True)
                continue
            print(f"| {r['label']} | {name} | {task} | {precision}{' +compile' if compiled else ''} | "
                  f"{'yes' if r['bucket'] else 'no'} | {r['epoch_s']:.2f} | {r['particles_per_s']:.0f} | "
                  f"{r['atoms_per_s'] / 1e6:.2f} M | {r['gpu_util']:.0f} | {r['peak_mem_gb']:.1f} | "
                  f"{r['loss_fp32']:.5g} | {r['loss_precision']:.5g} |", flush=True)
            if args.json:  # row by row, so a run cut short by a timeout keeps what it measured
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    radii = [int(x) for x in args.gen_radii.split(",") if x]
    if radii:
        print("\n| label | model | R | atoms | s/particle |\n|---|---|---|---|---|", flush=True)
        for g in generation_speed(args.gen_model, ds, radii, device, args):
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(g) + "\n")
            print(f"| {g['label']} | {g['model']} | {g['radius']} | {g['atoms']:,} | {g['s_per_particle']:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
