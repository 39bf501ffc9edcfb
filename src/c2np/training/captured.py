"""A whole Task 1 training step replayed as a CUDA graph (``train.capture``).

Why: on the lent GPU machines a CDVAE Task 1 step is bound by the host, not the GPU.
Compiled (``train.compile = "loss"``) its kernels take about 13 ms, but Python needs about
41 ms to issue them (some 830 launches, the radius graphs' waits, the backward, clipping
and Adam; docs/models.md, "Throughput"). A captured CUDA graph issues the same kernels
with one call. It needs fixed shapes, and the earlier static path (``train.pad_buckets``
with ``compile = "static"``) paid for them with edge buffers sized for the densest batch:
1.8x the real edges, 2.2x the GPU work.

How, per step:

1. The batch comes padded from the workers (``c2np.models.padding``: atoms to a ladder
   size, graph slots, cell atoms, pairs and species to fixed widths).
2. On a side stream, while the GPU still runs the previous step's graph, it goes to the
   device and :func:`~c2np.models.host_work.prepare_padded` makes the noise draws and both
   radius graphs of the real atoms (exact, the model's own edges), padded to one edge
   capacity of a ladder (``edges_per_octave`` sizes per doubling: at most 19 % filler
   edges at 4, about 10 % on the bundled train split). The graphs' waits for their edge
   counts wait for this stream only.
3. The batch's shapes (atom slots, edge slots) name its graph. The first batch of a
   shape is stepped eagerly on the capture stream (a real step: it also compiles and
   warms what the shape needs), then the step is captured for it (recording only,
   nothing runs). Later batches of that shape are copied into the captured step's input
   tensors and the graph is replayed: the loss, its gradients (copied into the
   parameters' gradient tensors), gradient clipping and Adam (``fused``, ``capturable``,
   learning rate a tensor, so that the schedule reaches the replays).

All graphs share one memory pool (only one runs at a time) and the gradients (held by
the step, whoever drops ``p.grad``) and optimizer state live outside it, shared by every
graph; a graph's outputs are copied out right after its replay. The loss of a batch is
the unpadded batch's at the same draws (tests/test_captured.py). The preparation's draws
(noise levels, perturbations) come from the step's own generator on the device, seeded
once; the loss's own (the latent) from the global CUDA generator, which CUDA graphs
advance at each replay.

Preparation in a thread (:meth:`CapturedStep.prefetch`): issuing one replay holds the
host for about 6 ms (a graph of about 900 kernels at the time) and preparing the next
batch for about as long again, one after the other in one thread. ``prefetch`` prepares the
coming batches in a background thread instead, on the side stream, while the main
thread copies and replays; the replay and the graphs' waits for the device release
Python's lock, so the two overlap. The batches, their order and their draws are those
of the one-thread path. (Measured on an H100 the step was by then bound by the GPU, and
the thread moved it only from 17.8 to 17.6 ms. On a later H100 host the step waited
9-10 ms for the thread instead: there the preparation set the pace. The benchmark
reports it from :meth:`CapturedStep.stats`. docs/models.md, "Throughput".)

Without CUDA (tests, a CPU) the same path runs uncaptured: padded batches, the same
preparation, eager steps.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields

import torch

from c2np.models.host_work import HostPlan, prepare_padded

#: batch fields that the loss does not read (bookkeeping of the padding): not part of a shape's name
_BOOKKEEPING = {"real_graphs", "real_atoms", "graph_capacity"}


def shape_key(batch) -> tuple:
    """What a captured step depends on: every tensor field's shape and dtype and every
    other field's value (cutoffs), bookkeeping apart."""
    key = []
    for f in fields(batch):
        v = getattr(batch, f.name)
        if f.name in _BOOKKEEPING:
            continue
        key.append((f.name, (tuple(v.shape), v.dtype)) if torch.is_tensor(v) else (f.name, v))
    return tuple(key)


def _tensors(batch) -> dict[str, torch.Tensor]:
    return {f.name: getattr(batch, f.name) for f in fields(batch) if torch.is_tensor(getattr(batch, f.name))}


@dataclass
class Prepared:
    """A batch made ready on the device by :meth:`CapturedStep.prefetch`: pass it to the
    step in place of the loader's batch. ``ready``: recorded on the side stream after its
    last kernel (None without CUDA)."""

    batch: object
    ready: torch.cuda.Event | None = None

    @property
    def real_graphs(self) -> int:
        return self.batch.real_graphs

    @property
    def real_atoms(self) -> int:
        return self.batch.real_atoms


@dataclass
class _Captured:
    batch: object  # the graph's input tensors (a batch whose tensors are copied into)
    graph: torch.cuda.CUDAGraph
    out: dict[str, torch.Tensor]


class CapturedStep:
    """One optimisation step per call: ``step(batch)`` -> the loss terms (detached copies).

    ``model``: its ``loss(batch)`` (or ``loss``, e.g. a compiled one) returns a dict with
    ``"loss"``; ``optimizer``: for capture, ``torch.optim.Adam(..., fused=True,
    capturable=True)`` with a tensor learning rate on the device (:func:`make_adam`);
    ``clip``: the gradient-norm clip (``None``: none); ``plan``: ``model.host_plan()``.
    ``capture``: replay CUDA graphs (default: when the model is on a CUDA device).
    ``seed``: of the preparation's generator (default ``torch.initial_seed()``, the run's seed).
    ``max_graphs``: shapes captured at most; a new shape beyond them is stepped eagerly
    every time it comes (a long run keeps meeting a few new shapes, and each graph keeps
    its input tensors and a share of the pool; a count bounds the memory only loosely:
    captures of the eager loss filled 53.7 GiB inside one epoch). ``counts`` says
    how many steps ran eagerly (first of their shape, or past the cap), were captured and
    were replayed.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, clip: float | None,
                 plan: HostPlan, edges_per_octave: int = 4, loss: Callable | None = None,
                 capture: bool | None = None, max_graphs: int = 256, seed: int | None = None):
        self.model, self.optimizer, self.clip, self.plan = model, optimizer, clip, plan
        self.edges_per_octave = int(edges_per_octave)
        self.loss = loss or model.loss
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device = self.params[0].device
        self.capture = self.device.type == "cuda" if capture is None else bool(capture)
        if self.capture and self.device.type != "cuda":
            raise ValueError("CapturedStep(capture=True) needs the model on a CUDA device")
        # the gradients, made here, outside any graph's pool, and held here: every graph
        # copies its step's gradients into these tensors, also after someone else dropped
        # ``p.grad`` (Lightning sets it to None before each validation). Held by the
        # parameters only, they were freed there while the graphs kept writing them: the
        # illegal memory access of the first GPU runs of ``c2np train`` (shown on a GPU by
        # tests/test_captured.py, docs/models.md "The capture crash found and fixed")
        self.grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
        self._hold_grads()
        self.graphs: dict[tuple, _Captured] = {}
        self.max_graphs = int(max_graphs)
        self.counts = {"eager": 0, "captured": 0, "replayed": 0}
        #: host seconds spent in the first steps of new shapes (eager step + capture)
        self.first_s = 0.0
        #: batches prepared and the host seconds that took (its two waits for the device
        #: included): with ``prefetch``, a preparation slower than a replay sets the pace
        self.prepared, self.prepare_s = 0, 0.0
        # the preparation's own draws: a thread (prefetch) must not take them from the
        # generator that the replays advance, or their order would depend on timing
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(torch.initial_seed() if seed is None else int(seed))
        if self.capture:
            # high priority: the preparation's few small kernels go ahead of the running
            # replay's queue, so that its waits for the edge counts end sooner
            self.prep_stream = torch.cuda.Stream(self.device, priority=-1)
            self.capture_stream = torch.cuda.Stream(self.device)
            self.pool = torch.cuda.graph_pool_handle()

    # -- the step itself -----------------------------------------------------------------
    def _step(self, batch) -> dict[str, torch.Tensor]:
        """Loss, its gradients copied into the parameters' own (their tensors stay put:
        every graph writes the same ones), clipping, optimizer."""
        self._hold_grads()  # for clipping and the optimizer
        out = self.loss(batch)
        # autograd.grad and one copy, not zero + backward: backward adds into existing
        # gradients with one kernel per parameter (141 for CDVAE Task 1, about 2 us each)
        new = torch.autograd.grad(out["loss"], self.params, allow_unused=True)
        used = [(held, g) for held, g in zip(self.grads, new) if g is not None]
        if used:
            torch._foreach_copy_([held for held, _ in used], [g for _, g in used])
        unused = [held for held, g in zip(self.grads, new) if g is None]
        if unused:  # as a zeroed gradient that the backward left alone
            torch._foreach_zero_(unused)
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=self.device.type == "cuda")
        self.optimizer.step()
        return {k: v.detach() for k, v in out.items()}

    def stats(self) -> dict:
        """The step's counters so far: ``counts``, ``first_s``, and the batches prepared
        with their host seconds (``prepared``, ``prepare_s``)."""
        return dict(self.counts, first_s=round(self.first_s, 2), prepared=self.prepared,
                    prepare_s=round(self.prepare_s, 3))

    def _hold_grads(self) -> None:
        """Every ``p.grad`` is the step's held gradient tensor again (Lightning drops them
        before each validation): after a step, the gradients are that step's."""
        if any(p.grad is not held for p, held in zip(self.params, self.grads)):
            for p, held in zip(self.params, self.grads):
                p.grad = held

    def prepare(self, batch) -> Prepared:
        """``batch`` (padded, on the CPU or the device) on the device with its noise draws
        and padded radius graphs (:func:`~c2np.models.host_work.prepare_padded`), made on
        the side stream when capturing."""
        if not self.capture:
            return Prepared(self._prepare(batch))
        with torch.cuda.stream(self.prep_stream):
            ready = Prepared(self._prepare(batch), torch.cuda.Event())
            ready.ready.record(self.prep_stream)
        return ready

    def _prepare(self, batch):
        t0 = time.perf_counter()
        ready = prepare_padded(batch.to(self.device, non_blocking=True), self.plan, self.edges_per_octave,
                               self.generator)
        self.prepared, self.prepare_s = self.prepared + 1, self.prepare_s + time.perf_counter() - t0
        return ready

    def prefetch(self, batches: Iterable, depth: int = 2) -> Iterator[Prepared]:
        """``batches`` (padded, from the loader) prepared by a background thread, at most
        ``depth`` ahead of the step, in order: pass each to the step. An error in the
        thread (the loader's too) is raised here; leaving the loop early stops the thread."""
        out: queue.Queue = queue.Queue(max(1, int(depth)))
        stop, end = threading.Event(), object()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for batch in batches:
                    if not put(self.prepare(batch)):
                        return
                put(end)
            except BaseException as error:  # raised again in the consuming thread
                put(error)

        thread = threading.Thread(target=work, name="c2np-prepare", daemon=True)
        thread.start()
        try:
            while (item := out.get()) is not end:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        """One step of ``batch``: the loader's (prepared here) or one from :meth:`prefetch`."""
        item = batch if isinstance(batch, Prepared) else self.prepare(batch)
        ready = item.batch
        if not self.capture:
            self.counts["eager"] += 1
            return self._step(ready)
        main = torch.cuda.current_stream(self.device)
        main.wait_event(item.ready)
        new = _tensors(ready)
        for t in new.values():
            t.record_stream(main)  # made on the side stream, read on this one
        key = shape_key(ready)
        entry = self.graphs.get(key)
        if entry is None:
            t0 = time.perf_counter()
            out = self._first(key, ready, main)
            self.first_s += time.perf_counter() - t0
            return out
        # one call for every input instead of a Python call per copy
        torch._foreach_copy_([getattr(entry.batch, name) for name in new], list(new.values()), non_blocking=True)
        entry.graph.replay()
        self.counts["replayed"] += 1
        self._hold_grads()
        return {k: v.clone() for k, v in entry.out.items()}

    def _first(self, key: tuple, ready, main: torch.cuda.Stream) -> dict[str, torch.Tensor]:
        """The first batch of a shape: an eager step on the capture stream (it compiles and
        warms whatever the shape needs), then the step captured for the shape."""
        side = self.capture_stream
        side.wait_stream(main)
        with torch.cuda.stream(side):
            out = {k: v.clone() for k, v in self._step(ready).items()}
        self.counts["eager"] += 1
        if len(self.graphs) >= self.max_graphs:
            main.wait_stream(side)
            return out
        # the captured graph's inputs: this batch's tensors, kept (later batches are copied in)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=side, capture_error_mode="thread_local"):
            captured = self._step(ready)
        main.wait_stream(side)
        self.graphs[key] = _Captured(ready, graph, captured)
        self.counts["captured"] += 1
        return out


class PrefetchedLoader:
    """A training loader whose batches the captured step's thread prepares
    (:meth:`CapturedStep.prefetch`): what ``c2np train`` with ``train.capture`` hands
    Lightning in place of the DataLoader. Its length and samplers are the loader's, so
    Lightning counts the steps and sets the epoch as before; ``step`` gives the captured
    step (made at the first batch, after a resumed checkpoint is restored)."""

    def __init__(self, loader, step: Callable[[], CapturedStep], depth: int = 2):
        self.loader, self.step, self.depth = loader, step, depth

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def sampler(self):
        return self.loader.sampler

    @property
    def batch_sampler(self):
        return self.loader.batch_sampler

    def __iter__(self) -> Iterator[Prepared]:
        # lazily: Lightning calls iter() once at set-up only to check the loader, before a
        # resumed checkpoint's optimizer state is restored; the step is made at the first batch
        yield from self.step().prefetch(self.loader, self.depth)


def edge_buckets(train: dict) -> int:
    """``train.edge_buckets`` of a config (4 for a config written before the setting)."""
    value = train.get("edge_buckets")
    return 4 if value is None else int(value)


def make_adam(params, lr: float, device: torch.device, capture: bool) -> torch.optim.Adam:
    """Adam for :class:`CapturedStep`: with ``capture``, fused and capturable with the
    learning rate a tensor on ``device`` (a learning-rate schedule then reaches the
    replays: ``torch.optim.lr_scheduler`` fills the tensor in place); otherwise plain."""
    if capture:
        return torch.optim.Adam(params, lr=torch.tensor(float(lr), device=device), fused=True, capturable=True)
    return torch.optim.Adam(params, lr=float(lr))


def tensor_lr(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Every param group's learning rate a tensor on ``device``, in place: what a captured
    Adam step reads at each replay (a resumed checkpoint brings it back as a CPU tensor)."""
    for group in optimizer.param_groups:
        lr = group["lr"]
        if not torch.is_tensor(lr) or lr.device != device:
            group["lr"] = torch.tensor(float(lr), device=device)
