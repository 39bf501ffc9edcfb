"""SchNet's continuous-filter convolution as fused Triton kernels (``train.compile = "triton"``).

For one interaction block of :meth:`c2np.models.components.SchNetEncoder.interact`::

    w_e   = (W2 softplus(W1 attr_e + b1) + b2') * env_e        (b2' = b2 - log 2 W2 1)
    msg_i = sum over the edges e with tgt_e = i of x[src_e] * w_e

The eager step materialises several (edges x filters) fp32 tensors per block each way
(the filter network's layers, the gathered rows, their product, and their gradients); at
about half a million edges per radius graph they are most of a training step's GPU time
(docs/models.md, "Throughput"). Here no (edges x filters) tensor exists, forward or
backward: each program takes tiles of ``BLOCK_E`` edges, computes the filter in registers
(two ``tl.dot`` products, G -> F and F -> F, in IEEE fp32 (``DOT_PRECISION``) so that the
values are those of the eager step to float rounding, not TF32's), multiplies it with
the gathered rows of x and adds the products into the target rows with atomics. The
backward recomputes the filter per tile, adds ``grad_msg[tgt] * w`` into ``grad_x`` at
the sources, and keeps the weight and bias gradients of its tiles in registers: a
persistent grid of ``PROGRAMS_PER_SM`` programs per SM each writes one partial sum (the
biases' per edge slot of a tile), and torch adds the partials (no atomics on the F x F
matrices, and the weight gradients are deterministic).

On a symmetric graph (``cfconv(..., symmetric=True)``: every edge in both directions with
the same filter, as in a radius graph without a neighbour cap) grad_x is a message sum
too, ``grad_x_i = sum over edges e -> i of grad_msg[src_e] * w_e``, whose atomics go to
the targets, which the edges are sorted by, instead of the scattered sources:
``SYMMETRIC_BACKWARD = "split"`` runs the forward kernel on grad_msg and then the backward
kernel for the weight gradients alone (one ``tl.dot`` fewer, no grad_x); ``"fused"`` keeps
one backward kernel that adds ``grad_msg[src] * w`` at the targets. On an H200 (one
block, 25,000 atoms, 520,176 edges) forward + backward took 2.95 ms with "split", 3.00 ms
with "fused" and 3.07 ms with the atomic backward (docs/models.md, "Throughput").

``b2'`` is an input computed in torch, so autograd carries its gradient to W2 and b2.
x, the messages and all accumulation are fp32. There is no gradient for ``attr`` or
``env`` (the edge lengths come from data positions in every model that trains this way):
:func:`cfconv` raises ``ValueError`` when either requires one, and ``interact`` then takes
its eager path for that call instead.

Triton is imported on first use (CPU installs have none): :func:`available` says whether
the kernels can run on a device, i.e. triton is importable and the device is CUDA, or
``TRITON_INTERPRET=1`` is set (Triton's interpreter runs the kernels with numpy on the
CPU, which is how tests/test_cfconv_triton.py checks them). ``TRITON_INTERPRET`` is read
when the kernels are first built, once per process.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

#: edges per tile of the forward kernel / of the backward kernel (powers of two, >= 16)
FORWARD_BLOCK = 64
BACKWARD_BLOCK = 32
#: warps per program of each kernel (the backward keeps four weight accumulators in registers)
FORWARD_WARPS = 4
BACKWARD_WARPS = 8
#: backward programs per streaming multiprocessor (the persistent grid)
PROGRAMS_PER_SM = 4
#: backward programs under the interpreter: several tiles per program, as on a GPU
INTERPRETER_PROGRAMS = 3
#: ``tl.dot``'s fp32 mode: "ieee" (exact fp32, the default), "tf32x3" (three TF32 tensor-core
#: products, close to fp32) or "tf32" (10-bit mantissa inputs: not exact)
DOT_PRECISION = "ieee"
#: how the backward uses a symmetric graph (``cfconv(..., symmetric=True)``): "split" (grad_x
#: from the forward kernel over grad_msg, then a kernel for the weight gradients alone) or
#: "fused" (one kernel: grad_msg[src] * w added at the targets beside the weight gradients)
SYMMETRIC_BACKWARD = "split"

tl = None  # triton.language, bound by _kernels(): the kernels below resolve it from this module


def available(device: torch.device | str | None = None) -> bool:
    """Whether the kernels can run on ``device`` (None: on some device): triton is
    installed and the device is CUDA, or ``TRITON_INTERPRET=1`` (any device)."""
    if importlib.util.find_spec("triton") is None:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def unavailable_reason(device: torch.device | str) -> str:
    """Why :func:`available` is False for ``device``, as a clause for an error line."""
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install 'c2np[triton]')"
    return f"the fused kernels run on a CUDA device, not {torch.device(device).type}"


def _pow2(n: int) -> int:
    """The block width holding ``n`` columns: a power of two, at least 16 (``tl.dot``'s minimum)."""
    return max(16, 1 << (int(n) - 1).bit_length())


# Only triton.language's builtins below, none of its standard library (tl.sum, tl.zeros,
# tl.sigmoid): those are jitted when triton is imported, so an interpreter switched on
# after that import (TRITON_INTERPRET=1 in a test process that imported triton through
# torch_geometric) could not run them; and the interpreter reduces element by element.
# The helpers are jitted by _kernels().

def _softplus(z):
    # the overflow-safe form; torch's softplus returns z above 20, which differs by < 3e-9
    return tl.maximum(z, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(z)))


def _weights(w1_ptr, b1_ptr, w2_ptr, b2_ptr, n_gauss, n_filters, cols_g, cols_f, in_g, in_f):
    """The filter network's weights, padded rows and columns zero: (W1^T, W2, b1, b2')."""
    # nn.Linear weights are (out, in); W1 is loaded transposed
    w1t = tl.load(w1_ptr + cols_f[None, :] * n_gauss + cols_g[:, None], mask=in_g[:, None] & in_f[None, :], other=0.0)
    w2 = tl.load(w2_ptr + cols_f[:, None] * n_filters + cols_f[None, :], mask=in_f[:, None] & in_f[None, :],
                 other=0.0)
    b1 = tl.load(b1_ptr + cols_f, mask=in_f, other=0.0)
    b2 = tl.load(b2_ptr + cols_f, mask=in_f, other=0.0)
    return w1t, w2, b1, b2


def _edge_tile(edges, n_edges, n_gauss, cols_g, in_g, attr_ptr, env_ptr, src_ptr, tgt_ptr, w1t, b1,
               PRECISION: tl.constexpr):
    """A tile of edges and the filter network's first layer, with the intermediates the
    backward needs: (live, attr, env, src, tgt, pre-activation, activation)."""
    live = edges < n_edges
    attr = tl.load(attr_ptr + edges[:, None] * n_gauss + cols_g[None, :], mask=live[:, None] & in_g[None, :],
                   other=0.0)
    env = tl.load(env_ptr + edges, mask=live, other=0.0)
    src = tl.load(src_ptr + edges, mask=live, other=0)
    tgt = tl.load(tgt_ptr + edges, mask=live, other=0)
    pre = tl.dot(attr, w1t, input_precision=PRECISION) + b1[None, :]
    act = _softplus(pre)
    return live, attr, env, src, tgt, pre, act


def _filter(act, env, w2, b2, PRECISION: tl.constexpr):
    """The tile's filter w from its activations: (W2 act + b2') * env."""
    return (tl.dot(act, tl.trans(w2), input_precision=PRECISION) + b2[None, :]) * env[:, None]


def _forward_kernel(x_ptr, src_ptr, tgt_ptr, attr_ptr, env_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, msg_ptr,
                    n_edges, n_gauss, n_filters,
                    BLOCK_E: tl.constexpr, G: tl.constexpr, F: tl.constexpr, PRECISION: tl.constexpr):
    cols_g = tl.arange(0, G)
    cols_f = tl.arange(0, F)
    in_g = cols_g < n_gauss
    in_f = cols_f < n_filters
    w1t, w2, b1, b2 = _weights(w1_ptr, b1_ptr, w2_ptr, b2_ptr, n_gauss, n_filters, cols_g, cols_f, in_g, in_f)
    edges = tl.program_id(0).to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
    live, _, env, src, tgt, _, act = _edge_tile(edges, n_edges, n_gauss, cols_g, in_g, attr_ptr, env_ptr, src_ptr,
                                                tgt_ptr, w1t, b1, PRECISION)
    w = _filter(act, env, w2, b2, PRECISION)
    cell = live[:, None] & in_f[None, :]
    rows = tl.load(x_ptr + src[:, None] * n_filters + cols_f[None, :], mask=cell, other=0.0)
    tl.atomic_add(msg_ptr + tgt[:, None] * n_filters + cols_f[None, :], rows * w, mask=cell, sem="relaxed")


def _backward_kernel(x_ptr, src_ptr, tgt_ptr, attr_ptr, env_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, gmsg_ptr,
                     gx_ptr, gw1_ptr, gb1_ptr, gw2_ptr, gb2_ptr,
                     n_edges, n_gauss, n_filters, tiles_per_program,
                     BLOCK_E: tl.constexpr, G: tl.constexpr, F: tl.constexpr, PRECISION: tl.constexpr,
                     GRAD_X: tl.constexpr):
    # GRAD_X: "sources" (grad_msg[tgt] * w added at the sources), "targets" (a symmetric
    # graph: grad_msg[src] * w added at the targets) or "none" (weight gradients only)
    pid = tl.program_id(0)
    cols_g = tl.arange(0, G)
    cols_f = tl.arange(0, F)
    in_g = cols_g < n_gauss
    in_f = cols_f < n_filters
    w1t, w2, b1, b2 = _weights(w1_ptr, b1_ptr, w2_ptr, b2_ptr, n_gauss, n_filters, cols_g, cols_f, in_g, in_f)
    acc_w1 = tl.full((F, G), 0.0, tl.float32)
    acc_w2 = tl.full((F, F), 0.0, tl.float32)
    # the bias gradients' column sums are left to torch: no reduction in the loop
    acc_b1 = tl.full((BLOCK_E, F), 0.0, tl.float32)
    acc_b2 = tl.full((BLOCK_E, F), 0.0, tl.float32)

    for t in range(tiles_per_program):  # a contiguous run of tiles per program
        edges = (pid * tiles_per_program + t).to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
        live, attr, env, src, tgt, pre, act = _edge_tile(edges, n_edges, n_gauss, cols_g, in_g, attr_ptr, env_ptr,
                                                         src_ptr, tgt_ptr, w1t, b1, PRECISION)
        cell = live[:, None] & in_f[None, :]
        grad = tl.load(gmsg_ptr + tgt[:, None] * n_filters + cols_f[None, :], mask=cell, other=0.0)
        rows = tl.load(x_ptr + src[:, None] * n_filters + cols_f[None, :], mask=cell, other=0.0)
        if GRAD_X == "sources":
            w = _filter(act, env, w2, b2, PRECISION)
            tl.atomic_add(gx_ptr + src[:, None] * n_filters + cols_f[None, :], grad * w, mask=cell, sem="relaxed")
        elif GRAD_X == "targets":
            w = _filter(act, env, w2, b2, PRECISION)
            grad_src = tl.load(gmsg_ptr + src[:, None] * n_filters + cols_f[None, :], mask=cell, other=0.0)
            tl.atomic_add(gx_ptr + tgt[:, None] * n_filters + cols_f[None, :], grad_src * w, mask=cell,
                          sem="relaxed")
        # d loss / d (W2 act + b2'): zero on dead edges and padded columns (grad and rows are)
        g_out = grad * rows * env[:, None]
        acc_b2 += g_out
        acc_w2 += tl.dot(tl.trans(g_out), act, input_precision=PRECISION)
        # softplus' = sigmoid
        g_pre = tl.dot(g_out, w2, input_precision=PRECISION) / (1.0 + tl.exp(-pre))
        acc_b1 += g_pre
        acc_w1 += tl.dot(tl.trans(g_pre), attr, input_precision=PRECISION)

    ff = in_f[:, None] & in_f[None, :]
    tl.store(gw1_ptr + pid * n_filters * n_gauss + cols_f[:, None] * n_gauss + cols_g[None, :], acc_w1,
             mask=in_f[:, None] & in_g[None, :])
    tl.store(gw2_ptr + pid * n_filters * n_filters + cols_f[:, None] * n_filters + cols_f[None, :], acc_w2, mask=ff)
    rows_b = pid * BLOCK_E * n_filters + tl.arange(0, BLOCK_E)[:, None] * n_filters + cols_f[None, :]
    tl.store(gb1_ptr + rows_b, acc_b1, mask=in_f[None, :])
    tl.store(gb2_ptr + rows_b, acc_b2, mask=in_f[None, :])


@functools.cache
def _kernels():
    """The jitted (forward, backward) kernels; imports triton and binds ``tl`` on first use."""
    global tl, _softplus, _weights, _edge_tile, _filter
    import triton
    import triton.language

    tl = triton.language
    # the helpers are jitted too, so that the kernels call them as device functions
    _softplus, _weights, _edge_tile, _filter = (triton.jit(f) for f in (_softplus, _weights, _edge_tile, _filter))
    return triton.jit(_forward_kernel), triton.jit(_backward_kernel)


def _backward_programs(device: torch.device, tiles: int) -> int:
    """Programs of the persistent backward grid: a few per SM, never more than tiles."""
    if device.type == "cuda":
        wanted = PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        wanted = INTERPRETER_PROGRAMS
    return max(1, min(tiles, wanted))


def _messages(x, src, tgt, attr, env, w1, b1, w2, b2) -> torch.Tensor:
    """The forward kernel: ``msg_i = sum over edges e -> i of x[src_e] * w_e``."""
    forward_kernel, _ = _kernels()
    n_edges, n_gauss = attr.shape
    n_filters = x.shape[1]
    msg = torch.zeros_like(x)
    if n_edges:
        grid = (-(-n_edges // FORWARD_BLOCK),)
        forward_kernel[grid](x, src, tgt, attr, env, w1, b1, w2, b2, msg, n_edges, n_gauss, n_filters,
                             BLOCK_E=FORWARD_BLOCK, G=_pow2(n_gauss), F=_pow2(n_filters),
                             PRECISION=DOT_PRECISION, num_warps=FORWARD_WARPS)
    return msg


class _CFConv(torch.autograd.Function):
    """Autograd of :func:`cfconv`; gradients for x, W1, b1, W2 and b2'.

    grad_x_j = sum over edges e with src_e = j of grad_msg[tgt_e] * w_e. On a symmetric
    graph every edge j -> i has its reverse i -> j with the same filter (w depends on the
    length alone), so the same sum runs over the edges e with tgt_e = j, of
    grad_msg[src_e] * w_e: the forward's message sum applied to grad_msg, whose adds go to
    the (sorted) targets instead of the scattered sources."""

    @staticmethod
    def forward(ctx, x, src, tgt, attr, env, w1, b1, w2, b2, symmetric):
        ctx.save_for_backward(x, src, tgt, attr, env, w1, b1, w2, b2)
        ctx.symmetric = symmetric  # False, or the SYMMETRIC_BACKWARD of the call
        return _messages(x, src, tgt, attr, env, w1, b1, w2, b2)

    @staticmethod
    def backward(ctx, grad_msg):
        _, backward_kernel = _kernels()
        x, src, tgt, attr, env, w1, b1, w2, b2 = ctx.saved_tensors
        n_edges, n_gauss = attr.shape
        n_filters = x.shape[1]
        tiles = -(-n_edges // BACKWARD_BLOCK)
        programs = _backward_programs(x.device, tiles)
        per_program = -(-tiles // programs) if tiles else 0
        programs = -(-tiles // per_program) if tiles else 1
        grad_msg = grad_msg.contiguous()
        if not ctx.symmetric:
            grad_x, grad_x_mode = torch.zeros_like(x), "sources"
        elif ctx.symmetric == "split":
            grad_x, grad_x_mode = _messages(grad_msg, src, tgt, attr, env, w1, b1, w2, b2), "none"
        else:
            grad_x, grad_x_mode = torch.zeros_like(x), "targets"
        part_w1 = x.new_zeros(programs, n_filters, n_gauss)
        part_w2 = x.new_zeros(programs, n_filters, n_filters)
        part_b1 = x.new_zeros(programs * BACKWARD_BLOCK, n_filters)
        part_b2 = x.new_zeros(programs * BACKWARD_BLOCK, n_filters)
        if n_edges:
            backward_kernel[(programs,)](x, src, tgt, attr, env, w1, b1, w2, b2, grad_msg,
                                         grad_x, part_w1, part_b1, part_w2, part_b2,
                                         n_edges, n_gauss, n_filters, per_program,
                                         BLOCK_E=BACKWARD_BLOCK, G=_pow2(n_gauss), F=_pow2(n_filters),
                                         PRECISION=DOT_PRECISION, GRAD_X=grad_x_mode, num_warps=BACKWARD_WARPS)
        return (grad_x, None, None, None, None, part_w1.sum(0), part_b1.sum(0), part_w2.sum(0),
                part_b2.sum(0), None)


def cfconv(x: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor, attr: torch.Tensor, env: torch.Tensor,
           w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
           symmetric: bool = False) -> torch.Tensor:
    """The messages of one SchNet interaction block, (nodes, filters) fp32:
    ``zeros.index_add_(0, tgt, x[src] * ((W2 softplus(W1 attr + b1) + b2) * env))``.

    ``x``: (nodes, filters) (``lin1(h)``, computed in fp32); ``src``, ``tgt``: (edges,) int64;
    ``attr``: (edges, gaussians) Gaussian features; ``env``: (edges,) or (edges, 1) cutoff
    envelope; ``w1`` (filters, gaussians), ``b1``, ``w2`` (filters, filters): the filter
    network's ``nn.Linear`` weights; ``b2``: its second bias with the softplus shift
    folded in. Differentiable in x and the weights; ``ValueError`` when ``attr`` or
    ``env`` requires a gradient, ``RuntimeError`` when :func:`available` is False.

    ``symmetric``: the graph has every edge in both directions with the same ``attr`` and
    ``env`` (a radius graph without a neighbour cap, ``c2np.models.graph.radius_edges``;
    ``graph.is_symmetric`` tests the edges), and the backward takes grad_x from a message
    sum over the targets (``SYMMETRIC_BACKWARD``) instead of adding at the sources with
    atomics. On any other graph (capped at the nearest neighbours, one-way) it gives a
    wrong gradient for x, silently; the weight gradients do not depend on it.
    """
    if attr.requires_grad or env.requires_grad:
        raise ValueError("cfconv: the fused kernels have no gradient for attr or env (edge lengths from data "
                         "positions); use the eager path for differentiable positions")
    if not available(x.device):
        raise RuntimeError(f"cfconv: {unavailable_reason(x.device)}")
    if symmetric and SYMMETRIC_BACKWARD not in ("split", "fused"):
        raise ValueError(f'cfconv: SYMMETRIC_BACKWARD must be "split" or "fused", not {SYMMETRIC_BACKWARD!r}')
    # fp32 whatever autocast made of lin1's output: the messages accumulate in fp32
    f32 = [t.float().contiguous() for t in (x, attr, env.reshape(-1), w1, b1, w2, b2)]
    return _CFConv.apply(f32[0], src.contiguous(), tgt.contiguous(), *f32[1:], symmetric and SYMMETRIC_BACKWARD)
