"""One SchNet interaction block, forward and backward: eager vs Inductor vs the fused
Triton kernels (``c2np.models.cfconv_triton``, ``train.compile = "triton"``); prints a table.

    python benchmarks/cfconv_kernel.py                               # one GPU, ~0.5 M edges, < 60 s
    python benchmarks/cfconv_kernel.py --variants eager,triton --blocks 64/32,128/32,64/64,32/16
    python benchmarks/cfconv_kernel.py --variants eager,triton --precisions tf32x3,tf32
    python benchmarks/cfconv_kernel.py --variants eager,triton --backward atomic,symmetric,symmetric-fused
    python benchmarks/cfconv_kernel.py --cpu-check                   # the script's paths, tiny, interpreter

The graph is a realistic one: ``--atoms`` points uniformly in a ball at the density that
gives about ``--neighbours`` neighbours within the 4 A cutoff (a CDVAE Task 1 batch of 8
particles has ~24k atoms and ~0.49 M edges: ~20 per atom), its edges from the model's own
cell list (``radius_edges``: sorted by target and symmetric, as in training; the header
says whether it is). The block is
``SchNetEncoder.interact`` with one interaction at the bundled sizes (hidden 64, 32
Gaussians): ``h + lin(act(lin2(msg)))`` with msg the continuous-filter convolution.

Per variant: ``--warmup`` untimed steps, then ``--repeats`` timed forward passes (with
autograd on, as in training) and ``--repeats`` timed forward + backward passes (the
gradient of a fixed projection of the output for h and every weight), CUDA
synchronised at both ends, median of the repeats; peak memory of one forward + backward;
and the largest deviation from eager of the output and of every gradient, relative to
the tensor's largest entry. ``inductor`` is ``torch.compile(interact, dynamic=False)``
(``train.compile = "edges"`` compiles with ``dynamic=True``); its compile time is the
"setup s" column. ``--blocks F/B,...`` adds one Triton row per (forward, backward) edge
tile size, ``--precisions`` one per ``tl.dot`` fp32 mode (``DOT_PRECISION``; "ieee", the
default, is exact fp32; "tf32x3" and "tf32" use the tensor cores and round differently).
``--backward`` gives every Triton row once per backward mode: "atomic" (grad_x added at
the sources with atomics), "symmetric" (grad_x as the forward kernel's message sum over
grad_msg, then a kernel for the weight gradients: ``cfconv(..., symmetric=True)`` with
``SYMMETRIC_BACKWARD = "split"``), "symmetric-fused" (one backward kernel adding
``grad_msg[src] * w`` at the targets: ``SYMMETRIC_BACKWARD = "fused"``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch

from c2np.models import cfconv_triton
from c2np.models.components import SchNetEncoder
from c2np.models.graph import is_symmetric, radius_edges

#: --backward modes: (SchNetEncoder.symmetric_graphs, cfconv_triton.SYMMETRIC_BACKWARD)
BACKWARDS = {"atomic": (False, "split"), "symmetric": (True, "split"), "symmetric-fused": (True, "fused")}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ball_graph(atoms: int, neighbours: float, cutoff: float, device: torch.device, seed: int = 0):
    """(h input, src, tgt, lengths) of ``atoms`` uniform points in a ball whose density
    gives ``neighbours`` points within ``cutoff`` of an interior point."""
    gen = torch.Generator().manual_seed(seed)
    density = neighbours / (4 / 3 * math.pi * cutoff ** 3)
    radius = (atoms / density / (4 / 3 * math.pi)) ** (1 / 3)
    direction = torch.randn(atoms, 3, generator=gen)
    direction /= direction.norm(dim=1, keepdim=True)
    pos = direction * radius * torch.rand(atoms, 1, generator=gen) ** (1 / 3)
    pos = pos.to(device)
    src, tgt = radius_edges(pos, torch.tensor([0, atoms], device=device), cutoff)
    length = (pos[src] - pos[tgt]).norm(dim=-1)
    return src, tgt, length


def step_fn(enc: SchNetEncoder, interact, h0, src, tgt, length, attr, projection):
    """One forward (+ backward): the output and the gradients of h and every weight."""
    params = list(enc.blocks.parameters())

    def forward():
        return interact(h0, src, tgt, length, attr)

    def forward_backward():
        out = forward()
        grads = torch.autograd.grad((out * projection).sum(), [h0] + params)
        return out, grads

    return forward, forward_backward


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls, each synchronised at both ends."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def deviation(got, want) -> float:
    """Largest |got - want| over the tensors, each relative to its reference's largest entry."""
    return max(float((g - w).abs().max() / w.abs().max().clamp_min(1e-30)) for g, w in zip(got, want, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atoms", type=int, default=25_000)
    ap.add_argument("--neighbours", type=float, default=22.0, help="mean neighbours of an interior atom")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--gaussians", type=int, default=32)
    ap.add_argument("--variants", default="eager,inductor,triton", help="comma list of eager | inductor | triton")
    ap.add_argument("--blocks", default="",
                    help="extra Triton rows: forward/backward edge tiles, e.g. 128/32,64/64 (powers of two >= 16)")
    ap.add_argument("--precisions", default="", help="extra Triton rows: tl.dot fp32 modes, e.g. tf32x3,tf32")
    ap.add_argument("--backward", default="atomic,symmetric,symmetric-fused",
                    help="each Triton row once per backward mode: atomic | symmetric | symmetric-fused")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--cpu-check", action="store_true",
                    help="on the CPU with Triton's interpreter and 300 atoms (Inductor -> dynamo's eager "
                         "backend): checks the script, measures nothing")
    args = ap.parse_args()
    backwards = [b for b in args.backward.split(",") if b]
    if not backwards or set(backwards) - set(BACKWARDS):
        ap.error(f"--backward: a comma list of {' | '.join(BACKWARDS)}, not {args.backward!r}")
    if args.cpu_check:
        os.environ["TRITON_INTERPRET"] = "1"
        args.atoms, args.warmup, args.repeats = 300, 1, 2
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_check else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in every row

    torch.manual_seed(0)
    enc = SchNetEncoder(hidden=args.hidden, interactions=1, cutoff=4.0, gaussians=args.gaussians).to(device)
    src, tgt, length = ball_graph(args.atoms, args.neighbours, enc.cutoff, device)
    attr = enc.distance(length)
    h0 = torch.randn(args.atoms, args.hidden, device=device, requires_grad=True)
    projection = torch.randn(args.atoms, args.hidden, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (interpreter check)"
    print(f"{name}: {args.atoms:,} atoms, {len(src):,} edges ({len(src) / args.atoms:.1f} per atom), "
          f"hidden {args.hidden}, {args.gaussians} Gaussians, one interaction block, fp32; the graph is "
          f"{'' if is_symmetric(torch.stack([src, tgt])) else 'NOT '}symmetric", flush=True)
    print("| variant | tiles fwd/bwd, dot | backward | setup s | forward ms | forward + backward ms | peak memory GB "
          "| max deviation from eager (output, gradients) |\n|---|---|---|---|---|---|---|---|", flush=True)

    default = (cfconv_triton.FORWARD_BLOCK, cfconv_triton.BACKWARD_BLOCK, cfconv_triton.DOT_PRECISION,
               cfconv_triton.SYMMETRIC_BACKWARD)
    settings = [default[:3]]
    settings += [(*map(int, spec.split("/")), default[2]) for spec in args.blocks.split(",") if spec]
    settings += [(*default[:2], mode) for mode in args.precisions.split(",") if mode]
    rows = []
    for v in (v for v in args.variants.split(",") if v):
        rows += [(v, default[:3], "-")] if v != "triton" else [(v, settings[0], b) for b in backwards]
    rows += [("triton", setting, b) for setting in settings[1:] for b in backwards]
    reference = None
    for variant, setting, backward in rows:
        enc.fused_cfconv = variant == "triton"
        enc.symmetric_graphs, symmetric_backward = BACKWARDS.get(backward, (False, default[3]))
        cfconv_triton.FORWARD_BLOCK, cfconv_triton.BACKWARD_BLOCK, cfconv_triton.DOT_PRECISION = setting
        cfconv_triton.SYMMETRIC_BACKWARD = symmetric_backward
        if variant == "inductor":
            interact = torch.compile(enc.interact, backend="eager" if args.cpu_check else "inductor", dynamic=False)
        elif variant in ("eager", "triton"):
            interact = enc.interact
        else:
            raise SystemExit(f"unknown variant {variant!r} (eager, inductor, triton)")
        forward, forward_backward = step_fn(enc, interact, h0, src, tgt, length, attr, projection)
        try:
            t0 = time.perf_counter()
            out, grads = forward_backward()  # compiles (Inductor, Triton)
            out = out.detach()
            sync(device)
            setup = time.perf_counter() - t0
            for _ in range(args.warmup):
                forward_backward()
            fwd, both = timed(forward, args.repeats, device), timed(forward_backward, args.repeats, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                forward_backward()
                peak = f"{torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f}"
            else:
                peak = "-"
        except Exception as exc:  # one failing variant (a compiler error) keeps the others
            print(f"| {variant} | {backward} | failed: {exc!r:.300} |", flush=True)
            continue
        if variant == "eager":
            reference = out, grads
        dev = ("-" if reference is None else
               f"{deviation([out], [reference[0]]):.1e}, {deviation(grads, reference[1]):.1e}")
        tiles = "{}/{}, {}".format(*setting) if variant == "triton" else "-"
        print(f"| {variant} | {tiles} | {backward} | {setup:.1f} | {1000 * fwd:.2f} | {1000 * both:.2f} | {peak} "
              f"| {dev} |", flush=True)
    (cfconv_triton.FORWARD_BLOCK, cfconv_triton.BACKWARD_BLOCK, cfconv_triton.DOT_PRECISION,
     cfconv_triton.SYMMETRIC_BACKWARD) = default


if __name__ == "__main__":
    main()
