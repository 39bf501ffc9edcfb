"""What atomic adds into a few rows cost a training step, and what the contention-free
forms save; prints a table (meant for a GPU; runs anywhere).

    python benchmarks/atomic_contention.py [--atoms 25000] [--graphs 9]

On a GPU every ``index_add`` / ``scatter`` is one atomic add (or, for a minimum, a
compare-and-swap loop) per element, and the GPU serialises those to one address. Two
such hot spots of the captured CDVAE Task 1 step, each timed before and after, on a
synthetic batch the size of a typical padded one: ``--atoms`` atoms in ``--graphs``
graphs, 28 edges per atom grouped by target (the cell list's order), 10 % filler
edges, 64 features.

- *filler edges*: the unused edge slots of a padded graph as self-loops all on the last
  atom (before) or on the padding atoms in turn (``graph.filler_edges``, after): one
  message sum, ``zeros.index_add_(0, tgt, x[src] * w)``, forward and backward;
- *per-graph minimum* (the cell list's lowest corners): ``scatter_reduce(..., "amin")``
  against ``graph.graph_minimum`` (a segmented reduction per coordinate).

Milliseconds are CUDA-event (GPU) or wall (CPU) medians of ``--repeats`` runs after a
warm-up; ``--compile`` adds each case through ``torch.compile``, whose kernels (not
eager's) are what a compiled training step runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from c2np.models.graph import filler_edges, graph_index, graph_minimum


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median milliseconds of ``fn``."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def forward_backward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     compiled: bool = False) -> Callable[[], object]:
    """A closure that runs ``fn(x)`` and the backward of the sum of its output; with
    ``compiled``, ``fn`` through ``torch.compile`` (Inductor's kernels, forward and
    backward, as in a compiled training step)."""
    fn = torch.compile(fn, dynamic=False) if compiled else fn

    def run():
        out = fn(x)
        return torch.autograd.grad(out, x, torch.ones_like(out))
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atoms", type=int, default=25_000)
    ap.add_argument("--graphs", type=int, default=9)
    ap.add_argument("--padding", type=int, default=2_000, help="padding atoms of the padded batch")
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--compile", action="store_true",
                    help="also time the message sum compiled (torch.compile: Inductor's kernels, as in the step)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator(device=device).manual_seed(0)
    n, f, g = args.atoms + args.padding, args.features, args.graphs

    # edges grouped by target, sources near the target (a particle's neighbours are near in index)
    tgt = torch.arange(args.atoms, device=device).repeat_interleave(28)
    src = (tgt + torch.randint(-200, 200, tgt.shape, device=device, generator=gen)).clamp(0, args.atoms - 1)
    fill = len(tgt) // 10
    x = torch.randn(n, f, device=device, generator=gen, requires_grad=True)
    w = torch.randn(len(tgt) + fill, f, device=device, generator=gen)
    sizes = torch.full((g,), args.atoms // g)
    sizes[-1] += args.atoms - int(sizes.sum())
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(sizes, 0)]).to(device)
    graph = graph_index(ptr, args.atoms)
    pos = torch.randn(args.atoms, 3, device=device, generator=gen) * 20

    def message_sum(fillers: torch.Tensor):
        s, t = torch.cat([src, fillers[0]]), torch.cat([tgt, fillers[1]])
        return lambda h: torch.zeros_like(h).index_add_(0, t, h.index_select(0, s) * w)

    before = message_sum(torch.full((2, fill), n - 1, device=device))
    after = message_sum(filler_edges(fill, n, args.padding, device))
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"{name}: {args.atoms:,} atoms + {args.padding:,} padding, {len(tgt):,} edges + {fill:,} filler, "
          f"{g} graphs, {f} features; median of {args.repeats}\n")
    print("| operation | before ms | after ms | before / after |\n|---|---|---|---|")
    for compiled in (False, True) if args.compile else (False,):
        a = timed(forward_backward(before, x, compiled), args.repeats, device)
        b = timed(forward_backward(after, x, compiled), args.repeats, device)
        print(f"| filler edges: message sum, fwd + bwd{', compiled' if compiled else ''} | {a:.3f} | {b:.3f} | "
              f"{a / b:.1f}x |", flush=True)
    # eager only: the cell list runs outside the compiled loss (host_work.prepare_padded)
    a = timed(lambda: torch.full((g, 3), float("inf"), device=device).scatter_reduce(
        0, graph.view(-1, 1).expand(-1, 3), pos, "amin"), args.repeats, device)
    b = timed(lambda: graph_minimum(pos, graph, ptr), args.repeats, device)
    print(f"| per-graph minimum | {a:.3f} | {b:.3f} | {a / b:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
