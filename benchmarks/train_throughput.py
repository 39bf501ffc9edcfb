"""Training throughput of the learned baselines, variant against variant in one call; prints a table.

    python benchmarks/train_throughput.py --store c2np-store --json out/throughput.jsonl
    python benchmarks/train_throughput.py --store c2np-store --cpu-dry-run      # the script's paths, tiny, on the CPU
    PYTHONPATH=OLD/src python benchmarks/train_throughput.py --variants base --label before  # earlier code

Variants (``--variants``, comma-separated; tokens joined by ``+``):

- ``base``: the training defaults on a CPU (on a GPU ``c2np train`` adds ``edges+fused``): plain batches (the model builds its radius graphs and
  draws its noise on the device; the unit cells' atom pairs and inverse lattices come with
  the batch), Adam ``foreach``, eager, ``--base-workers`` DataLoader workers (2, the
  configs' ``workers``). The SchNet interactions run ``SchNetEncoder.interact`` (one
  first-layer filter product per block, the cutoff envelope once,
  ``index_select`` x filter -> ``index_add_`` messages) and CDVAE's edge MLP is split by
  input block (``edge_mlp``);
- ``before``: ``base`` as the step was before those changes, reproduced in this script:
  PyG's ``InteractionBlock.forward`` (``propagate``: ``scatter_add_`` with an expanded
  index) block by block, CDVAE's edge MLP on the concatenated (edges, 2 hidden +
  gaussians) input, the cell pairs and inverse lattices made on the device inside the
  step. The radius graph is the current one (one host wait fewer per graph than before);
- ``edges``: ``torch.compile`` of ``SchNetEncoder.interact``, ``dynamic=True``
  (``train.compile = "edges"``); the rest of the step stays eager. The row reports the
  graphs dynamo compiled during the warm-up and during the timed steps (0 means no
  recompilation across batch sizes);
- ``host``: batches prepared by ``c2np.models.host_work`` in ``--host-workers`` workers
  (``train.host_work``): graphs, cell pairs and noise draws made on the CPU, no host wait
  in the step;
- ``fused``: ``torch.optim.Adam(fused=True)`` (``train.fused_adam``);
- ``compile``: ``torch.compile`` of the whole loss, ``dynamic=True`` (``train.compile =
  "loss"``): the radius graphs and noise draws are made on the device before the loss
  (``host_work.prepare_in_step``; with ``host`` in the workers), so the loss has no
  data-dependent shape and compiles to one graph (the unit-cell encoder runs eager).
  Inductor specialises its code to ranges of the sizes, so the epoch's smallest and
  largest batches are stepped before the warm-up (their compilations count as setup);
  Inductor's random numbers fall back to eager's (``fallback_random``), so the fixed-batch
  loss is comparable;
- ``tf32``: fp32 matrix products on the tensor cores (``torch.backends.cuda.matmul.allow_tf32``,
  10-bit mantissa inputs): not exact, the fixed-batch loss shows by how much;
- ``pad``: Task 1 batches padded to static shapes (``train.pad_buckets``,
  ``c2np.models.padding``; ``--pad-buckets`` sizes per doubling): exact, no host wait in
  the step (the radius graphs go into fixed-capacity buffers);
- ``static``: ``pad`` and ``torch.compile`` of the whole loss with ``dynamic=False``
  (``train.compile = "static"``): one compiled graph per bucket. The warm-up then steps
  one batch of each bucket of the epoch, most frequent first, until
  ``--static-warmup-s``; the timed steps are the epoch's batches whose bucket was
  compiled (the others are left out, never compiled in the timed part), and s/epoch is
  the mean step time of each bucket times its steps in an epoch, summed over the
  compiled buckets and scaled to the whole epoch by steps ("steps covered" says which
  share of the epoch's steps that estimate rests on). With ``compile`` instead of
  ``static`` the padded loss compiles once with dynamic shapes;
- ``graphs``: with ``static`` or ``compile``, ``mode="reduce-overhead"`` (CUDA graphs,
  ``train.cuda_graphs``): each bucket's step is captured once and replayed;
- ``capture``: the whole step (loss, backward, clipping, Adam) replayed as a CUDA graph
  per shape (``train.capture``, ``c2np.training.captured``): padded batches (atoms:
  ``--pad-buckets`` sizes per doubling), both radius graphs made exactly on a side
  stream and padded to ``--edge-buckets`` sizes per doubling, the first batch of each
  shape stepped eagerly and captured, the later ones replayed; Adam is fused and
  capturable whatever the tokens. With ``compile`` the captured loss is the compiled
  one. The warm-up is ``--capture-warmup-epochs`` whole epochs (the shapes of a run's
  first epochs), the timed steps the following ones; the row counts the timed steps that
  met a new shape ("eager in timed steps": stepped eagerly and captured, inside the
  timing). Without CUDA the same path runs uncaptured;
- ``thread``: with ``capture``, the batches are prepared by a background thread
  (``CapturedStep.prefetch``, ``--prefetch-depth`` batches ahead) while the main thread
  copies and replays: the same batches and draws, the host's two jobs side by side;
- ``cpp``: with ``compile``, Inductor's C++ wrapper (``cpp_wrapper``): the compiled graphs
  launch their kernels from C++ instead of Python (ignored by ``--cpu-dry-run``);
- ``pairs``: every SchNet filter computed once per unordered pair of atoms and used for
  both directions (``SchNetEncoder.pair_filters``): the same values, half the filter
  network's rows;
- ``bf16``: the SchNet edge pipeline in bf16 (``train.bf16_edges``; node updates and the
  loss fp32): not exact, the fixed-batch loss shows by how much;
- ``triton``: the SchNet interactions' messages from the fused Triton kernels
  (``train.compile = "triton"``, ``c2np.models.cfconv_triton``): fp32, no (edges x
  filters) tensor; the rest of the step eager. ``triton+fused`` is the step ``c2np train``
  runs with that setting. The kernels are built at the fixed-batch loss ("setup s");
  exact to float rounding, so the fixed-batch loss equals ``base``'s. With
  ``--cpu-dry-run`` Triton's interpreter runs them (slow: use ``--models cdvae:1``).
  Their backward is the symmetric one, as in ``c2np train`` (the radius graphs are
  symmetric); ``triton+atomic`` takes the atomic backward instead
  (``SchNetEncoder.symmetric_graphs`` off), to compare the two in a whole step.

``--gen-radii 10,20,30`` also times Task 1 generation (``model.generate``, one particle
per radius, size pinned to the true atom count).

Every variant runs the same bucketed batches (seed 0, fp32, batch size of the bundled
config, Adam lr 1e-4, clipping 1.0 as in ``c2np train``): the fixed-batch loss below (a
compiled variant compiles at this first loss: "setup s"), ``--warmup`` steps (a warning
says when they take long), then ``--steps`` timed steps, CUDA
synchronised at both ends; batches stream from the DataLoader during the timed steps,
so the workers' host work counts. "s/epoch" is the mean timed step times the steps of one epoch
(extrapolated, not a whole epoch); particles/s and atoms/s count the timed batches. GPU
busy is nvidia-smi's utilization.gpu (time with a kernel running) sampled every 0.2 s
over the timed steps. "loss" is the loss of one fixed batch (8 records across the
sizes) at fixed noise (host-prepared draws, seeded; Task 1's latent draw a fixed
pattern, the same for padded and unpadded batches), initial weights, fp32: equal
values mean the variant leaves the objective unchanged. "gradient vs eager" compares the
gradients of that batch with those of an eager copy of the model taken before the
variant's changes (the largest ||g - g_eager|| / ||g_eager|| over the parameters; inf
when one is not finite): about 1e-6 is float rounding; a compiled graph that breaks the
gradients shows here, not in the loss. A variant that fails or passes
its time limit (``--limit-s``, ``--compile-limit-s``) is reported as such and the others
still run. With the earlier code (``git archive 7a18657 src``, no ``host_plan``) only
``base`` runs, and its fixed-batch loss uses that code's own noise draws.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import faulthandler
import gc
import itertools
import json
import os
import signal
import subprocess
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from c2np.models.components import schnet_encoders
from c2np.models.padding import PaddedCollate, pad_spec, pad_task1
from c2np.models.registry import build_model, last_stage
from c2np.store.dataset import open_dataset
from c2np.training import data as tdata
from c2np.training.configs import load_training_config

TOKENS = {"base", "before", "host", "fused", "compile", "edges", "tf32", "pad", "static", "graphs", "bf16", "triton",
          "atomic", "pairs", "cpp", "capture", "thread"}
#: tokens whose variant builds kernels before it runs (compilation or Triton's JIT): a longer time limit
BUILDING = {"compile", "edges", "static", "triton"}
#: a step's host phases timed by the benchmark: waiting for the batch, issuing the loss (with
#: whatever waits for the device inside it), the backward, clipping and the optimizer
HOST_PHASES = ("data", "loss", "backward", "optimizer")
HOST_FIELDS = ("cell_pairs", "lattice_inv", "edge_index", "graph_cutoff", "score_edges", "score_cutoff")


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


class WithoutCellWork:
    """The collate function of ``task`` without the cells' pairs and inverse lattices
    (``before``: the model makes them on the device); a class, so that workers can pickle it."""

    def __init__(self, task: int):
        self.task = task

    def __call__(self, items):
        batch = tdata.COLLATE[self.task](items)
        return dataclasses.replace(batch, cell_pairs=None, lattice_inv=None) if self.task == 1 else batch


def _before_forward(self, z, pos, ptr, node_cond=None, graph=None, attr=None):
    """``SchNetEncoder.forward`` before ``interact``: PyG's blocks one by one."""
    h = self.embedding(z)
    if node_cond is not None:
        h = h + node_cond
    edge_index, length = graph if graph is not None else self.edges(pos, ptr)
    attr = self.distance(length)
    for block in self.blocks:
        h = h + block(h, edge_index, length, attr)
    return self.norm(h)


def _before_score(self, batch, pos, node_cond, sigma_node, edges=None):
    """``CDVAETask1.score`` before ``edge_mlp``: the MLP on the concatenated edge input."""
    from c2np.models.generation import equivariant_vectors

    graph = self.score_net.edges(pos, batch.ptr, edges)
    node_cond = node_cond + self.site_condition(batch, pos)
    h = self.score_net(batch.z, pos, batch.ptr, node_cond, graph)
    (src, tgt), length = graph
    w = self.edge_out(torch.cat([h.index_select(0, src), h.index_select(0, tgt),
                                 self.score_net.distance(length)], -1))
    return equivariant_vectors(w, pos, graph[0]) / sigma_node


@contextlib.contextmanager
def before_step(active: bool):
    """Inside, the models compute the step as before ``interact`` and ``edge_mlp`` (``before``)."""
    from c2np.models.cdvae import CDVAETask1
    from c2np.models.components import SchNetEncoder

    saved = SchNetEncoder.forward, CDVAETask1.score
    if active:
        SchNetEncoder.forward, CDVAETask1.score = _before_forward, _before_score
    try:
        yield
    finally:
        SchNetEncoder.forward, CDVAETask1.score = saved


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class VariantTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise VariantTimeout


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_model(name: str, task: int, records, device, overrides: list[str]):
    cfg = load_training_config(name, task, overrides=overrides)
    params = {k: v for k, v in cfg["model"].items() if k not in ("name", "task")}
    torch.manual_seed(0)
    # ADiT Task 1 in its DiT stage: the one that generates, and the costlier one to train
    model = last_stage(build_model(name, task, **params))
    if task == 2:
        model.fit_targets(torch.tensor(np.stack([r.lattice for r in records]), dtype=torch.float32),
                          torch.tensor([r.spacegroup for r in records]))
    return model.to(device), cfg


def fixed_loss(loss_fn, model, records, task: int, device, host: bool, collate=None,
               pad=None, prepared=None) -> tuple[float, list[torch.Tensor | None]]:
    """The loss of 8 records spread over the sizes at fixed noise (host-prepared, seeded
    draws) and the gradient of every parameter (left zeroed); without ``host`` the model
    builds the graphs itself from the same draws. ``prepared`` ((plan, edge buckets),
    with ``pad``): the padded batch's graphs made as a captured step makes them
    (``host_work.prepare_padded``)."""
    probe = [(r, 0 if task == 2 else -1) for r in records[:: max(1, len(records) // 8)][:8]]
    if not hasattr(model, "host_plan"):  # earlier code: its own noise draws, a different loss value
        batch = tdata.COLLATE[task](probe)
    else:
        batch = tdata.make_collate(task, model.host_plan(), 0)(probe)
    if not host and hasattr(model, "host_plan"):
        # the variant's own collate for what comes with a plain batch, the draws kept
        plain = (collate or tdata.COLLATE[task])(probe)
        batch = dataclasses.replace(batch, **{f: getattr(plain, f, None) for f in HOST_FIELDS if hasattr(batch, f)})
    if pad is not None:
        batch = pad_task1(batch, pad)
    # with gradients, as in training: a compiled loss then needs no second graph for no_grad
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), fixed_latent(task):
        torch.manual_seed(123)
        batch = batch.to(device)
        if prepared is not None:
            from c2np.models.host_work import prepare_padded

            batch = prepare_padded(batch, *prepared)
        loss = loss_fn(batch)["loss"]
        loss.backward()
    grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def gradient_deviation(grads: list, want: list) -> float:
    """The largest ||g - g_eager|| / ||g_eager|| over the parameters (inf when a gradient is
    missing or not finite): a variant that is exact to float rounding shows about 1e-6."""
    worst = 0.0
    for g, w in zip(grads, want, strict=True):
        if w is None and g is None:
            continue
        if g is None or w is None or not bool(torch.isfinite(g).all()):
            return float("inf")
        worst = max(worst, float((g - w).norm() / w.norm().clamp_min(1e-30)))
    return worst


@contextlib.contextmanager
def fixed_latent(task: int):
    """Task 1: the latent's draw (``torch.randn_like`` in ``gaussian_latent``, the one draw
    a host-prepared batch leaves to the model) replaced by a fixed pattern whose first rows
    do not depend on the row count, so that padded and unpadded batches see the same latent."""
    if task != 1:
        yield
        return
    saved = torch.randn_like
    torch.randn_like = lambda t: torch.sin(1.3 * torch.arange(t.numel(), device=t.device, dtype=t.dtype)).view_as(t)
    try:
        yield
    finally:
        torch.randn_like = saved


def run_variant(name: str, task: int, records, variant: str, args, device) -> dict:
    tokens = set(variant.split("+"))
    if tokens - TOKENS:
        raise ValueError(f"unknown variant token(s) {sorted(tokens - TOKENS)} (known: {sorted(TOKENS)})")
    if "atomic" in tokens and "triton" not in tokens:
        raise ValueError(f"variant {variant!r}: atomic chooses the backward of the triton kernels; add +triton")
    if "capture" in tokens and tokens & {"static", "graphs", "host", "pad", "cpp"}:
        raise ValueError(f"variant {variant!r}: capture pads and prepares its own batches and replays its own "
                         "CUDA graphs; it takes compile, pairs, edges, tf32, fused")
    if "thread" in tokens and "capture" not in tokens:
        raise ValueError(f"variant {variant!r}: thread prepares a captured step's batches; add +capture")
    if "cpp" in tokens and ("compile" not in tokens or "graphs" in tokens):
        raise ValueError(f"variant {variant!r}: cpp is a wrapper of the compiled loss; add +compile (not with graphs)")
    torch.backends.cuda.matmul.allow_tf32 = "tf32" in tokens  # fp32 means fp32 in every other row
    with before_step("before" in tokens):
        return _run_variant(name, task, records, tokens, variant, args, device)


def real_size(batch) -> tuple[int, int]:
    """(graphs, atoms) of a batch, without the padding of a padded one (whose real sizes
    are plain ints: a prefetched batch is already on the device)."""
    graphs = getattr(batch, "real_graphs", None) or batch.n_graphs
    atoms = getattr(batch, "real_atoms", None)
    return graphs, int(batch.ptr[graphs]) if atoms is None else atoms


def _run_variant(name: str, task: int, records, tokens: set, variant: str, args, device) -> dict:
    t_setup = time.perf_counter()
    model, cfg = make_model(name, task, records, device, args.model_set)
    batch_size = int(cfg["train"]["batch_size"])
    plan = model.host_plan() if "host" in tokens else None
    spec = None
    if tokens & {"pad", "static", "capture"}:
        if not getattr(model, "pads", False):
            raise ValueError(f"{name} task {task} does not take padded batches")
        spec = pad_spec(records, batch_size, args.pad_buckets)
    plain_collate = WithoutCellWork(task) if "before" in tokens else tdata.COLLATE[task]
    loss_fn = model.loss
    eager = copy.deepcopy(model)  # before any change to the model: the gradients to compare with
    graphs0 = compiled_graphs()
    cuda_graphs = "graphs" in tokens and device.type == "cuda"
    for encoder in schnet_encoders(model):
        encoder.pair_filters = "pairs" in tokens
        encoder.edge_dtype = torch.bfloat16 if "bf16" in tokens else None
    if "triton" in tokens:
        from c2np.training.module import fuse_interactions

        if args.cpu_dry_run:  # Triton's interpreter: checks the path, slowly
            os.environ["TRITON_INTERPRET"] = "1"
        fuse_interactions(model, device)
        if "atomic" in tokens:
            for encoder in schnet_encoders(model):
                encoder.symmetric_graphs = False
    if "edges" in tokens:
        from torch._inductor import config as inductor_config

        from c2np.training.module import compile_interactions

        inductor_config.fallback_random = True
        compile_interactions(model, backend="eager" if args.cpu_dry_run else "inductor")
    if tokens & {"compile", "static"}:
        from torch._inductor import config as inductor_config

        from c2np.training.module import compile_loss

        inductor_config.fallback_random = True  # the same draws as eager: comparable losses
        compile_loss(model, backend="eager" if args.cpu_dry_run else "inductor", dynamic="static" not in tokens,
                     mode="reduce-overhead" if cuda_graphs else None,
                     cpp_wrapper="cpp" in tokens and not args.cpu_dry_run)  # dynamo's eager backend has no wrapper
        loss_fn = model.loss
    if cuda_graphs:
        compiled = loss_fn

        def loss_fn(batch):
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs may be reused
            return compiled(batch)
    # a compiled variant compiles here, at its first loss: the setup time is the compile time
    capture = "capture" in tokens
    prepared = (model.host_plan(), args.edge_buckets) if capture else None
    loss_value, grads = fixed_loss(loss_fn, model, records, task, device, plan is not None, plain_collate, spec,
                                   prepared)
    setup = time.perf_counter() - t_setup
    # capture: against the eager model on the unpadded batch (which also checks the padding)
    deviation = gradient_deviation(grads, fixed_loss(eager.loss, eager, records, task, device, plan is not None,
                                                     plain_collate, None if capture else spec)[1])
    del eager, grads
    if capture:
        from c2np.training.captured import CapturedStep, make_adam

        opt = make_adam(model.parameters(), 1e-4, device, device.type == "cuda")
        captured = CapturedStep(model, opt, 1.0, prepared[0], args.edge_buckets, loss=loss_fn)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-4,
                               **({"fused": True} if "fused" in tokens else {"foreach": device.type == "cuda"}))
    # thread: the batches prepared by the captured step's background thread, ahead of the step
    feed = (lambda batches: captured.prefetch(batches, args.prefetch_depth)) if "thread" in tokens else iter
    workers = args.host_workers if plan else args.base_workers
    sizes = [len(r.numbers) for r in records]
    sampler = tdata.BucketBatchSampler(sizes, batch_size, True, 0)
    collate = tdata.make_collate(task, plan, 0) if plan else plain_collate

    def make_loader(batch_sampler):
        return DataLoader(tdata.RecordDataset(records, rotate=task == 2, seed=0), batch_sampler=batch_sampler,
                          collate_fn=PaddedCollate(collate, spec) if spec else collate, num_workers=workers,
                          persistent_workers=False, pin_memory=device.type == "cuda",
                          prefetch_factor=4 if workers else None, timeout=args.batch_timeout_s if workers else 0)

    steps_per_epoch = len(sampler)
    bad = torch.zeros((), dtype=torch.bool, device=device)

    def step(batch):
        # host seconds spent issuing each phase (the device runs behind): where a step
        # whose kernels take less than its wall time spends the host's time
        nonlocal bad
        t0 = time.perf_counter()
        if capture:  # one phase: preparation, copies and the replay (or the first step of a shape)
            bad = bad | ~torch.isfinite(captured(batch)["loss"])
            step.host["loss"] += time.perf_counter() - t0
            return
        loss = loss_fn(batch.to(device, non_blocking=True))["loss"]
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step.host["loss"] += t1 - t0
        step.host["backward"] += t2 - t1
        step.host["optimizer"] += time.perf_counter() - t2
        bad = bad | ~torch.isfinite(loss.detach())  # read once at the end: no wait per step

    step.host = dict.fromkeys(HOST_PHASES, 0.0)

    if capture:
        # the shapes of a run's first epochs, untimed (a long run meets few new ones later)
        args = copy.copy(args)
        args.warmup = args.capture_warmup_epochs * steps_per_epoch
    if "compile" in tokens and not ("static" in tokens or cuda_graphs):
        # Inductor guards its code on ranges of the sizes it saw (32-bit indexing, fusion
        # choices: "81920 <= score edges" on an H200), so a much smaller or larger batch
        # compiles once more; the epoch's smallest and largest batches first keep those
        # compilations out of the timed steps (they count as setup)
        t0 = time.perf_counter()
        by_atoms = sorted(sampler, key=lambda b: sum(sizes[i] for i in b))
        for batch in make_loader([by_atoms[0], by_atoms[-1]]):
            step(batch)
        sync()
        setup += time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    util = GpuSampler(args.gpu)
    if "static" in tokens or cuda_graphs:
        timing = _time_by_bucket(step, make_loader, sampler, sizes, spec, args, util, 3 if cuda_graphs else 1)
    else:
        timing = _time_stream(step, make_loader(sampler), sampler, args, util, feed,
                              captured.stats if capture else None)
    if timing["warmup_s"] > args.warn_warmup_s:
        print(f"  warning: {name} task {task} {variant}: warm-up took {timing['warmup_s']:.0f} s "
              f"({'compilation' if tokens & BUILDING else 'loader start and first kernels'})",
              flush=True)
    graphs_warm = timing.pop("graphs_warm") - graphs0
    if args.profile and not ("static" in tokens or cuda_graphs):
        # "_" for "+" in the name: the lent GPU machines return no file whose name has a "+"
        table = Path(args.profile) / f"{name}-task{task}-{variant.replace('+', '_')}.txt"
        timing["kernel_ms_per_step"] = profile_steps(step, make_loader(sampler), args.profile_steps, table, feed)
    if bool(bad):
        raise RuntimeError("a training step's loss was not finite (padded: a radius graph overflowed its buffer?)")
    return {"label": args.label, "model": name, "task": task, "variant": variant, "workers": workers,
            "batch_size": batch_size, "setup_s": setup, **timing, "steps_per_epoch": steps_per_epoch,
            "gpu_util": util.mean,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
            "graphs_compiled_warmup": graphs_warm,
            "graphs_compiled_timed": compiled_graphs() - graphs0 - graphs_warm, "loss": loss_value,
            "grad_deviation": deviation}


def _time_stream(step, loader, sampler, args, util, feed=iter, counts=None) -> dict:
    """``--warmup`` steps, then ``--steps`` timed steps streaming from the loader (through
    ``feed``: a prefetching thread); s/epoch is the mean step times the steps of an epoch.
    ``counts``: a captured step's counters, read before and after the timed steps."""

    def batches():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    stream = feed(batches())
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step(next(stream))
    sync()
    warm, graphs_warm = time.perf_counter() - t0, compiled_graphs()
    graphs = atoms = 0
    step.host = dict.fromkeys(HOST_PHASES, 0.0)
    before = counts() if counts else {}
    with util:  # batches keep streaming from the workers: their host work is part of the time
        sync()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            t = time.perf_counter()
            batch = next(stream)
            step.host["data"] += time.perf_counter() - t
            g, a = real_size(batch)
            graphs, atoms = graphs + g, atoms + a
            step(batch)
        sync()
        wall = time.perf_counter() - t0
    if hasattr(stream, "close"):
        stream.close()  # a prefetching thread stops here, not when the garbage collector finds it
    return {"warmup_s": warm, "graphs_warm": graphs_warm, "steps_timed": args.steps, "step_s": wall / args.steps,
            "epoch_s": wall / args.steps * len(sampler), "particles_per_s": graphs / wall, "atoms_per_s": atoms / wall,
            "steps_covered": 1.0, "host_ms": {k: round(1000 * v / args.steps, 2) for k, v in step.host.items()},
            **({"capture_timed": {k: v - before[k] for k, v in counts().items()}, "capture_total": counts(),
                "gpu_reserved_gb": torch.cuda.memory_reserved() / 2**30 if torch.cuda.is_available() else None}
               if counts else {})}


def profile_steps(step, loader, steps: int, out: Path, feed=iter) -> float:
    """``steps`` more steps under ``torch.profiler`` (after the timed ones, so compiled and
    warm): the profiler's tables by device time and by the host's own time go to ``out``;
    returns the device's kernel time per step in ms (its busy time, whatever the host did
    meanwhile)."""
    from torch.profiler import ProfilerActivity, profile

    stream = feed(batch for _ in itertools.count() for batch in loader)  # again and again: small dry runs
    step(next(stream))  # the loader's first batch: its start-up is not a step's time
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step(next(stream))
        sync()
        wall = time.perf_counter() - t0
    if hasattr(stream, "close"):
        stream.close()
    events = prof.key_averages()
    gpu = torch.cuda.is_available()
    # on a GPU the kernels' own rows (a CPU op's row holds its kernels' time too); on the CPU the ops
    key, kind = ("self_device_time_total", "CUDA") if gpu else ("self_cpu_time_total", "CPU")
    kernels = sum(getattr(e, key) for e in events if e.device_type.name == kind) / 1000 / steps
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{steps} steps, {1000 * wall / steps:.1f} ms per step (wall, profiled), "
                   f"{kernels:.1f} ms of kernels per step\n\n"
                   + events.table(sort_by=key, row_limit=40, max_name_column_width=90)
                   + "\n\nBy the host's own time:\n\n"
                   + events.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=90))
    return kernels


def _time_by_bucket(step, make_loader, sampler, sizes, spec, args, util, repeats: int) -> dict:
    """Static shapes (``static``, ``graphs``): a step's cost depends on its bucket only.
    Warm-up: one batch of each bucket of the epoch, most frequent first, three with CUDA
    graphs (warm-up, capture, replay), until ``--static-warmup-s``. Timed: for every
    warmed bucket, ``--bucket-steps`` of its batches back to back (synchronised at both
    ends); s/epoch sums each bucket's step time times its steps in an epoch over the
    warmed buckets and scales by the share of the epoch's steps they cover."""
    sampler.set_epoch(0)
    by_bucket: dict[int, list] = {}
    n = len(sizes)
    for b in sampler.global_batches():
        by_bucket.setdefault(spec.atoms(int(sum(sizes[i] for i in b))), []).append(b.tolist())
    order = sorted(by_bucket, key=lambda k: -len(by_bucket[k]))
    warmed, t0 = [], time.perf_counter()
    for bucket in order:
        if time.perf_counter() - t0 > args.static_warmup_s:
            break
        for batch in make_loader([by_bucket[bucket][0]] * repeats):
            step(batch)
        sync()
        warmed.append(bucket)
    warm, graphs_warm = time.perf_counter() - t0, compiled_graphs()
    plan = [(k, (by_bucket[k] * args.bucket_steps)[:args.bucket_steps]) for k in warmed]
    seconds, graphs_of, atoms_of = {}, {}, {}
    loader = make_loader([[i + n for i in b] for _, group in plan for b in group])  # epoch 1's draws
    stream = iter(loader)
    with util:
        for bucket, group in plan:
            sync()
            t1 = time.perf_counter()
            g = a = 0
            for _ in group:
                batch = next(stream)
                gb, ab = real_size(batch)
                g, a = g + gb, a + ab
                step(batch)
            sync()
            seconds[bucket] = (time.perf_counter() - t1) / len(group)
            graphs_of[bucket], atoms_of[bucket] = g / len(group), a / len(group)
    steps = {k: len(by_bucket[k]) for k in warmed}
    covered = sum(steps.values())
    wall = sum(steps[k] * seconds[k] for k in warmed)
    return {"warmup_s": warm, "graphs_warm": graphs_warm, "steps_timed": sum(len(g) for _, g in plan),
            "step_s": wall / covered, "epoch_s": wall / covered * len(sampler),
            "particles_per_s": sum(steps[k] * graphs_of[k] for k in warmed) / wall,
            "atoms_per_s": sum(steps[k] * atoms_of[k] for k in warmed) / wall,
            "steps_covered": covered / len(sampler), "buckets": f"{len(warmed)}/{len(by_bucket)}",
            "bucket_seconds": {str(k): seconds[k] for k in warmed}}


def generation_speed(name: str, ds, radii: list[int], device, args) -> list[dict]:
    """Seconds per particle of ``model.generate`` (the bundled sampler) for one particle at
    each radius, the size head pinned to the true atom count so that every version
    generates the same number of atoms."""
    rows = []
    for radius in radii:
        split = ds.index.loc[ds.index["radius"] == radius, "split"].iloc[0]
        rec = tdata.load_records(ds, split, radii=[radius], limit=1)[0]
        model, _ = make_model(name, 1, [rec], device, args.model_set)
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
        (z, _), = model.generate(batch, seed=1)
        sync()
        rows.append({"label": args.label, "model": name, "radius": radius, "atoms": len(z),
                     "s_per_particle": time.perf_counter() - t0})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="c2np-store")
    ap.add_argument("--label", default="run")
    ap.add_argument("--models", default="cdvae:1,symat:2,cdvae:2", help="name:task,...")
    ap.add_argument("--variants", default="before,base,edges,edges+fused",
                    help="comma list; tokens before | base | host | fused | compile | edges | tf32 | pad | static | "
                         "graphs | bf16 | triton | atomic (with triton) | pairs | cpp (with compile) | capture joined by +")
    ap.add_argument("--compile-models", default="cdvae:1,symat:2",
                    help="models that run the variants with compile (the whole loss; compilation takes minutes)")
    ap.add_argument("--total-s", type=int, default=0,
                    help="skip (and report) a variant that could end past this many seconds from the start; 0: no limit")
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps after the setup (a compiled variant compiles in the setup)")
    ap.add_argument("--steps", type=int, default=60, help="timed steps per variant")
    ap.add_argument("--base-workers", type=int, default=2, help="DataLoader workers without host work")
    ap.add_argument("--host-workers", type=int, default=min(10, max(1, (os.cpu_count() or 2) - 4)),
                    help="DataLoader workers with host work (default: CPU cores - 4, at most 10)")
    ap.add_argument("--limit-s", type=int, default=60, help="time limit of an eager variant, seconds")
    ap.add_argument("--compile-limit-s", type=int, default=120,
                    help="time limit of a compile, edges, static or triton variant (compilation included), seconds")
    ap.add_argument("--warn-warmup-s", type=float, default=30.0)
    ap.add_argument("--pad-buckets", type=int, default=2,
                    help="pad, static, capture: atom bucket sizes per doubling (README's capture rows: 4 on the H100, 2 on the H200)")
    ap.add_argument("--static-warmup-s", type=int, default=90,
                    help="static, graphs: stop compiling / capturing further buckets after this many seconds")
    ap.add_argument("--bucket-steps", type=int, default=4, help="static, graphs: timed steps per bucket")
    ap.add_argument("--edge-buckets", type=int, default=4,
                    help="capture: radius-graph edge capacities per doubling (at most 2 ** (1 / K) - 1 padding)")
    ap.add_argument("--prefetch-depth", type=int, default=2,
                    help="thread: batches the preparing thread may be ahead of the step")
    ap.add_argument("--capture-warmup-epochs", type=int, default=3,
                    help="capture: untimed whole epochs before the timed steps (their new shapes are captured)")
    ap.add_argument("--batch-timeout-s", type=int, default=60,
                    help="a DataLoader worker that delivers no batch for this long fails the variant")
    ap.add_argument("--limit", type=int, default=0, help="first N train records only")
    ap.add_argument("--model-set", action="append", default=[],
                    help="config override for every model, e.g. model.hidden=16 (repeatable)")
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="every variant on the CPU with tiny models and few records (compile with dynamo's "
                         "eager backend, no code generation): checks the script, measures nothing")
    ap.add_argument("--gen-radii", default="", help="also time Task 1 generation at these radii, e.g. 10,20,30")
    ap.add_argument("--gen-model", default="cdvae")
    ap.add_argument("--gpu", type=int, default=0, help="nvidia-smi index sampled for utilisation")
    ap.add_argument("--json", help="append the rows to this JSON-lines file")
    ap.add_argument("--profile", help="after a variant's timed steps, profile --profile-steps more and write "
                                      "its kernel table here (one file per variant; not static/graphs)")
    ap.add_argument("--profile-steps", type=int, default=10)
    args = ap.parse_args()
    if args.cpu_dry_run:
        args.limit = args.limit or 24
        args.warmup, args.steps, args.host_workers, args.base_workers = 2, 3, 2, 1
        args.capture_warmup_epochs = min(args.capture_warmup_epochs, 1)
        args.limit_s, args.compile_limit_s = max(args.limit_s, 300), max(args.compile_limit_s, 900)
        args.model_set += ["model.hidden=16", "model.interactions=1", "model.gaussians=8"]
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_dry_run else "cpu")
    ds = open_dataset(args.store)
    records = tdata.load_records(ds, "train", limit=args.limit or None)
    if args.limit:
        records = sorted(records, key=lambda r: len(r.numbers))
    print(f"{args.label}: {len(records)} particles, {sum(len(r.numbers) for r in records):,} atoms per epoch, "
          f"{torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}, {os.cpu_count()} CPU cores",
          flush=True)
    print("| model | task | variant | workers | s/epoch (extrapolated) | step ms | particles/s | atoms/s "
          "| GPU busy % | peak mem GB | setup s (compiles) | warm-up s | graphs compiled: setup + warm-up / timed "
          "| buckets warmed / in epoch (steps covered) | fixed-batch loss | gradient vs eager |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    compiled = set(args.compile_models.split(","))
    signal.signal(signal.SIGALRM, _alarm)
    start = time.perf_counter()
    for item in args.models.split(","):
        name, task = item.split(":")
        for variant in args.variants.split(","):
            tokens = set(variant.split("+"))
            if "compile" in tokens and item not in compiled:
                continue
            limit = args.compile_limit_s if tokens & BUILDING else args.limit_s
            if tokens & {"static", "graphs"}:  # a compile (or capture) per bucket, capped by --static-warmup-s
                limit += args.static_warmup_s
            if args.total_s and time.perf_counter() - start + limit > args.total_s:
                print(f"| {name} | {task} | {variant} | skipped: its {limit} s limit would pass --total-s "
                      f"{args.total_s} |", flush=True)
                continue
            signal.alarm(limit)
            try:
                r = run_variant(name, int(task), records, variant, args, device)
            except VariantTimeout:
                faulthandler.dump_traceback(all_threads=True)  # where it was stuck, on stderr
                print(f"| {name} | {task} | {variant} | exceeded its {limit} s limit |", flush=True)
                continue
            except Exception as exc:  # one failing variant (a compiler error, memory) keeps the others
                traceback.print_exc()
                print(f"| {name} | {task} | {variant} | failed: {exc!r:.200} |", flush=True)
                continue
            finally:
                signal.alarm(0)
                gc.collect()  # a step function refers to itself (step.host): a cycle that holds its CUDA graphs
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            kernel = f" ({r['kernel_ms_per_step']:.1f} kernels)" if "kernel_ms_per_step" in r else ""
            if "capture_timed" in r:
                timed, total = r["capture_timed"], r["capture_total"]
                kernel += (f" [eager in timed steps: {timed['eager']} ({timed['first_s']:.1f} s), replayed "
                           f"{timed['replayed']}; shapes {total['captured']}, reserved "
                           f"{r['gpu_reserved_gb'] or float('nan'):.1f} GB; preparing a batch "
                           f"{1000 * timed['prepare_s'] / max(timed['prepared'], 1):.1f} ms of host time]")
            if "host_ms" in r:
                kernel += " [host: " + ", ".join(f"{k} {v:.1f}" for k, v in r["host_ms"].items()) + "]"
            print(f"| {name} | {task} | {variant} | {r['workers']} | {r['epoch_s']:.2f} | {1000 * r['step_s']:.1f}{kernel} | "
                  f"{r['particles_per_s']:.0f} | {r['atoms_per_s'] / 1e6:.2f} M | {r['gpu_util']:.0f} | "
                  f"{r['peak_mem_gb']:.1f} | {r['setup_s']:.1f} | {r['warmup_s']:.1f} | {r['graphs_compiled_warmup']} / "
                  f"{r['graphs_compiled_timed']} | {r.get('buckets', '-')} ({r['steps_covered']:.0%}) | "
                  f"{r['loss']:.6g} | {r['grad_deviation']:.1e} |", flush=True)
            if args.json:  # row by row, so a run cut short by a timeout keeps what it measured
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    radii = [int(x) for x in args.gen_radii.split(",") if x]
    if radii:
        print("\n| model | R | atoms | s/particle |\n|---|---|---|---|", flush=True)
        for g in generation_speed(args.gen_model, ds, radii, device, args):
            print(f"| {g['model']} | {g['radius']} | {g['atoms']:,} | {g['s_per_particle']:.2f} |", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(g) + "\n")


if __name__ == "__main__":
    main()
