"""The fused continuous-filter convolution (c2np.models.cfconv_triton, train.compile =
"triton"): the Triton kernels, run by Triton's interpreter on the CPU
(``TRITON_INTERPRET=1``), give SchNetEncoder.interact's values and every gradient of the
eager path, with the atomic backward and with both symmetric ones, and a CDVAE Task 1
loss is the eager one. Skipped without triton (not a dependency: the ``triton`` extra);
the config checks, and that every graph reaching a SchNet encoder is symmetric, run
everywhere."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytest.importorskip("torch_geometric")

from c2np.errors import ConfigError
from c2np.models import cfconv_triton
from c2np.models.components import SchNetEncoder
from c2np.models.graph import is_symmetric

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed (pip install 'c2np[triton]'); the kernels are "
                                         "checked with Triton's interpreter")


@pytest.fixture
def interpreter(monkeypatch):
    """Triton's interpreter for this test (the kernels are built once, at their first use)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def random_graph(n_nodes: int, n_edges: int, cutoff: float, sort: bool, seed: int = 0, symmetric: bool = False):
    """Random edges among all nodes but the last (a node without edges), lengths below
    the cutoff; targets in random order or sorted. ``symmetric``: ``n_edges`` // 2 random
    pairs, each in both directions with one length (a pair may be a self-loop), and one
    self-loop more when ``n_edges`` is odd."""
    gen = torch.Generator().manual_seed(seed)
    if symmetric:
        pairs = torch.randint(0, n_nodes - 1, (2, n_edges // 2), generator=gen)
        loop = torch.randint(0, n_nodes - 1, (n_edges % 2,), generator=gen)
        src, tgt = torch.cat([pairs[0], pairs[1], loop]), torch.cat([pairs[1], pairs[0], loop])
        length = 0.3 + (cutoff - 0.3) * torch.rand(n_edges // 2 + n_edges % 2, generator=gen)
        length = torch.cat([length[:n_edges // 2], length])
        order = torch.randperm(n_edges, generator=gen)
        src, tgt, length = src[order], tgt[order], length[order]
        if sort:
            tgt, order = torch.sort(tgt, stable=True)
            src, length = src[order], length[order]
        return src, tgt, length
    src = torch.randint(0, n_nodes - 1, (n_edges,), generator=gen)
    tgt = torch.randint(0, n_nodes - 1, (n_edges,), generator=gen)
    if sort:
        tgt, order = torch.sort(tgt, stable=True)
        src = src[order]
    length = 0.3 + (cutoff - 0.3) * torch.rand(n_edges, generator=gen)
    return src, tgt, length


def interact_and_grads(enc: SchNetEncoder, h, src, tgt, length, fused: bool):
    """interact's output and the gradients of a fixed projection of it: for h and for
    every parameter of the blocks (lin1, the filter network, lin2, lin)."""
    enc.fused_cfconv = fused
    enc.symmetric_graphs = is_symmetric(torch.stack([src, tgt]))
    enc.zero_grad(set_to_none=True)
    h = h.detach().requires_grad_()
    out = enc.interact(h, src, tgt, length, enc.distance(length))
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {"h": h.grad} | {n: p.grad for n, p in enc.blocks.named_parameters()}


@needs_triton
@pytest.mark.parametrize(("hidden", "gaussians", "n_edges", "sort", "symmetric"), [
    (64, 32, 301, False, None),  # the bundled sizes; edges not a multiple of either tile
    (64, 32, 301, True, None),
    (24, 10, 233, False, None),  # widths that are not powers of two: padded, masked columns
    (64, 32, 301, True, "split"),  # symmetric graphs: the backward without atomics at the sources
    (64, 32, 301, True, "fused"),
    (24, 10, 233, True, "split"),
    (24, 10, 233, False, "fused"),
])
def test_fused_interact_equals_eager(interpreter, monkeypatch, hidden, gaussians, n_edges, sort, symmetric):
    torch.manual_seed(0)
    enc = SchNetEncoder(hidden=hidden, interactions=3, cutoff=4.0, gaussians=gaussians)
    n_nodes = 41
    src, tgt, length = random_graph(n_nodes, n_edges, 4.0, sort, symmetric=symmetric is not None)
    # interact_and_grads passes the graph's symmetry on: which backward this case checks
    assert is_symmetric(torch.stack([src, tgt])) == (symmetric is not None)
    monkeypatch.setattr(cfconv_triton, "SYMMETRIC_BACKWARD", symmetric or "split")
    assert n_edges % cfconv_triton.FORWARD_BLOCK and n_edges % cfconv_triton.BACKWARD_BLOCK
    # several tiles per backward program: the register accumulators add over tiles
    assert n_edges > 2 * cfconv_triton.BACKWARD_BLOCK * cfconv_triton.INTERPRETER_PROGRAMS
    h = torch.randn(n_nodes, hidden)
    want, want_grads = interact_and_grads(enc, h, src, tgt, length, fused=False)
    got, got_grads = interact_and_grads(enc, h, src, tgt, length, fused=True)
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= 1e-5 * scale
    assert torch.equal(got[-1], want[-1])  # no edges: h + the update of zero messages, both ways
    assert not torch.allclose(want, h, atol=1e-3)  # the blocks do something
    assert got_grads.keys() == want_grads.keys() and len(want_grads) == 1 + 3 * 9  # h; lin1, the filter network (4), lin2 (2), lin (2)
    for name, w in want_grads.items():  # sums over edges: compared as wholes
        assert float((got_grads[name] - w).norm()) <= 1e-4 * float(w.norm()), name


@needs_triton
def test_cfconv_gradients_of_every_input(interpreter):
    """The autograd Function alone: x, W1, b1, W2 and the folded bias b2' against
    torch.autograd of the eager expression; an empty graph gives zero messages."""
    from torch.nn import functional as F

    gen = torch.Generator().manual_seed(1)
    n, e, f, g = 30, 211, 64, 32
    x = torch.randn(n, f, generator=gen, requires_grad=True)
    src, tgt, length = random_graph(n, e, 4.0, sort=False, seed=1)
    attr, env = torch.rand(e, g, generator=gen), torch.rand(e, generator=gen)
    weights = [torch.randn(f, g, generator=gen), torch.randn(f, generator=gen),
               0.2 * torch.randn(f, f, generator=gen), torch.randn(f, generator=gen)]
    w1, b1, w2, b2 = (w.requires_grad_() for w in weights)
    eager = torch.zeros(n, f).index_add_(
        0, tgt, x[src] * (F.linear(F.softplus(F.linear(attr, w1, b1)), w2, b2) * env[:, None]))
    fused = cfconv_triton.cfconv(x, src, tgt, attr, env, w1, b1, w2, b2)
    assert float((fused - eager).abs().max()) <= 1e-5 * float(eager.abs().max())
    upstream = torch.randn(n, f, generator=gen)
    inputs = (x, w1, b1, w2, b2)
    for got, want in zip(torch.autograd.grad(fused, inputs, upstream), torch.autograd.grad(eager, inputs, upstream),
                         strict=True):
        assert float((got - want).norm()) <= 1e-4 * float(want.norm())
    none = torch.zeros(0, dtype=torch.long)
    empty = cfconv_triton.cfconv(x, none, none, attr[:0], env[:0], w1, b1, w2, b2)
    assert torch.equal(empty, torch.zeros(n, f))
    assert all(float(d.abs().max()) == 0 for d in torch.autograd.grad(empty.sum(), inputs))


@needs_triton
@pytest.mark.parametrize("mode", ["split", "fused"])
def test_symmetric_backward_needs_a_symmetric_graph(interpreter, monkeypatch, mode):
    """symmetric=True on a symmetric graph gives eager's gradients; on a graph whose
    reverse edges are partly missing (targets capped, as nearest_edges does), the
    gradient of x is wrong and the weight gradients still right (they do not use the
    symmetry): a wrong use is caught by comparing with eager."""
    from torch.nn import functional as F

    monkeypatch.setattr(cfconv_triton, "SYMMETRIC_BACKWARD", mode)
    gen = torch.Generator().manual_seed(2)
    n, e, f, g = 30, 211, 24, 10
    x = torch.randn(n, f, generator=gen, requires_grad=True)
    weights = [torch.randn(f, g, generator=gen), torch.randn(f, generator=gen),
               0.2 * torch.randn(f, f, generator=gen), torch.randn(f, generator=gen)]
    w1, b1, w2, b2 = (w.requires_grad_() for w in weights)
    inputs = (x, w1, b1, w2, b2)
    upstream = torch.randn(n, f, generator=gen)
    src, tgt, length = random_graph(n, e, 4.0, sort=True, seed=2, symmetric=True)
    capped = torch.ones(e, dtype=torch.bool)
    capped[torch.nonzero(tgt == tgt[0]).view(-1)[1:]] = False  # the first target keeps one edge
    errors = {}
    for name, keep in (("symmetric", torch.ones(e, dtype=torch.bool)), ("capped", capped)):
        s, t, d = src[keep], tgt[keep], length[keep]
        assert is_symmetric(torch.stack([s, t])) == (name == "symmetric")
        attr, env = torch.exp(-(d[:, None] - torch.linspace(0, 4, g)) ** 2), 0.5 * (torch.cos(d * 0.785) + 1)
        eager = torch.zeros(n, f).index_add_(
            0, t, x[s] * (F.linear(F.softplus(F.linear(attr, w1, b1)), w2, b2) * env[:, None]))
        fused = cfconv_triton.cfconv(x, s, t, attr, env, w1, b1, w2, b2, symmetric=True)
        assert float((fused - eager).abs().max()) <= 1e-5 * float(eager.abs().max())
        got = torch.autograd.grad(fused, inputs, upstream)
        want = torch.autograd.grad(eager, inputs, upstream)
        errors[name] = [float((a - b).norm() / b.norm()) for a, b in zip(got, want, strict=True)]
    assert max(errors["symmetric"]) <= 1e-4
    assert errors["capped"][0] > 0.05 and max(errors["capped"][1:]) <= 1e-4


@needs_triton
def test_differentiable_lengths_take_the_eager_path(interpreter):
    """The kernels have no gradient for the edge features: cfconv refuses them, and
    interact falls back to eager (the gradient of the lengths is then eager's)."""
    torch.manual_seed(0)
    enc = SchNetEncoder(hidden=16, interactions=1, cutoff=4.0, gaussians=8)
    src, tgt, length = random_graph(12, 40, 4.0, sort=False)
    h = torch.randn(12, 16)
    block = enc.blocks[0]
    with pytest.raises(ValueError, match="attr or env"):
        cfconv_triton.cfconv(block.conv.lin1(h), src, tgt, enc.distance(length.requires_grad_()),
                             torch.ones(40), block.mlp[0].weight, block.mlp[0].bias, block.mlp[2].weight,
                             block.mlp[2].bias)
    grads = []
    for fused in (False, True):
        enc.fused_cfconv = fused
        length = length.detach().requires_grad_()
        enc.interact(h, src, tgt, length, enc.distance(length)).sum().backward()
        grads.append(length.grad)
    assert torch.equal(grads[0], grads[1]) and float(grads[0].abs().max()) > 0


@needs_triton
def test_cdvae_loss_with_fused_interactions_is_the_eager_loss(records, interpreter, monkeypatch):
    """train.compile = "triton" (BaselineModule.on_fit_start) switches every SchNet
    encoder of CDVAE Task 1 to the kernels, with the symmetric backward (its radius
    graphs are symmetric); the loss of a batch at fixed draws and its parameter gradients
    are the eager ones (the same batch semantics), and so they are with the atomic
    backward (``symmetric_graphs`` off)."""
    from c2np.training.module import fuse_interactions
    from test_padding import drawn, loss_and_grads, rows_randn_like, tiny_cdvae

    monkeypatch.setattr(torch, "randn_like", rows_randn_like)
    calls = []

    def spy(x, src, tgt, *args, symmetric=False):
        calls.append((symmetric, is_symmetric(torch.stack([src, tgt]))))
        return cfconv(x, src, tgt, *args, symmetric=symmetric)

    cfconv = cfconv_triton.cfconv
    monkeypatch.setattr(cfconv_triton, "cfconv", spy)
    # one block per encoder: two passes through the interpreter (stacked blocks: above)
    model = tiny_cdvae(hidden=32, gaussians=16, interactions=1)
    encoders = [m for m in model.modules() if isinstance(m, SchNetEncoder)]
    assert len(encoders) == 2 and not any(m.fused_cfconv for m in encoders)
    batch = drawn(model, [(r, -1, i) for i, r in enumerate(records[:2])])
    want, want_grads = loss_and_grads(model, batch)
    assert not calls
    fuse_interactions(model, torch.device("cpu"))
    assert all(m.fused_cfconv for m in encoders)
    for symmetric in (True, False):
        for m in encoders:
            m.symmetric_graphs = symmetric
        calls.clear()
        got, got_grads = loss_and_grads(model, batch)
        # both encoders, every block: the backward that was asked for, on symmetric graphs
        assert calls == [(symmetric, True)] * (2 * len(encoders[0].blocks))
        for term, value in want.items():
            assert got[term] == pytest.approx(value, rel=1e-5, abs=1e-6), term
        assert got_grads.keys() == want_grads.keys()
        for name, w in want_grads.items():
            assert float((got_grads[name] - w).norm()) <= 1e-4 * float(w.norm()) + 1e-7, name


@needs_triton
def test_train_compile_triton_switches_the_encoders(interpreter):
    """BaselineModule.on_fit_start with train.compile = "triton": every SchNet encoder
    uses the kernels and nothing is compiled (interact stays the eager method)."""
    from c2np.training.configs import load_training_config
    from c2np.training.module import BaselineModule

    cfg = load_training_config("cdvae", 1, overrides=["train.compile=triton", "model.hidden=16",
                                                      "model.interactions=1", "model.gaussians=8"])
    module = BaselineModule(cfg["model"], cfg["train"])
    encoders = [m for m in module.modules() if isinstance(m, SchNetEncoder)]
    module.on_fit_start()
    assert len(encoders) == 2 and all(m.fused_cfconv and "interact" not in vars(m) for m in encoders)


@needs_triton
@pytest.mark.slow  # one epoch through Triton's interpreter and one eager: about 45 s
def test_c2np_train_with_triton_matches_eager(small_store, tmp_path, monkeypatch):
    """c2np train --set train.compile=triton (interpreter) and the eager run of the same
    seed end with the same training and validation losses."""
    import json

    from typer.testing import CliRunner

    from c2np.cli import app

    losses = []
    for mode in ("false", "triton"):
        if mode == "triton":
            monkeypatch.setenv("TRITON_INTERPRET", "1")
        out = tmp_path / mode
        res = CliRunner().invoke(app, [
            "train", "--task", "1", "--model", "cdvae", "--store", str(small_store), "--out", str(out), "-q",
            "--set", "model.hidden=16", "--set", "model.interactions=1", "--set", "model.gaussians=8",
            "--set", "model.n_sigmas=2", "--set", "train.val_radii=[9]", "--set", "train.workers=0",
            "--set", "train.epochs=1", "--set", f"train.compile={mode}"])
        assert res.exit_code == 0, res.output
        info = json.loads((out / "cdvae-task1-seed0" / "run.json").read_text())
        losses.append((info["final_train_loss"], info["best_val_loss"]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_triton_compile_mode_is_checked(monkeypatch):
    """One-line errors naming the key: an unknown train.compile value, "triton" with
    bf16 edges, and "triton" where the kernels cannot run (no triton, or not CUDA)."""
    from c2np.training.module import fuse_interactions
    from c2np.training.run import _check_compile

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for ok in ("gpu", "edges", True, False):
        _check_compile({"compile": ok})
    with pytest.raises(ConfigError, match="train.compile must be"):
        _check_compile({"compile": "Triton"})
    with pytest.raises(ConfigError, match="train.bf16_edges"):
        _check_compile({"compile": "triton", "bf16_edges": True})
    assert not cfconv_triton.available("cpu")
    with pytest.raises(ConfigError, match='train.compile = "triton": .*(not installed|CUDA device, not cpu)'):
        fuse_interactions(SchNetEncoder(hidden=16, interactions=1, gaussians=8), torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match='train.compile = "triton"'):
            _check_compile({"compile": "triton"})


def reverse_pairs(src: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge indices (a, b) with edge b the reverse of edge a, covering every edge of a
    symmetric graph (fails the assert otherwise)."""
    n = int(torch.maximum(src.max(), tgt.max())) + 1
    a, b = torch.argsort(src * n + tgt, stable=True), torch.argsort(tgt * n + src, stable=True)
    assert torch.equal((src * n + tgt)[a], (tgt * n + src)[b]), "an edge without its reverse"
    return a, b


def test_every_graph_of_a_schnet_encoder_is_symmetric(records, monkeypatch):
    """The premise of the symmetric backward and of the filters once per pair
    (SchNetEncoder.symmetric_graphs is True by default): in the loss of every model with a SchNet encoder, on plain, host-prepared
    and padded batches, each graph that reaches interact has every edge's reverse, with
    bit-for-bit the same length and Gaussian features (the filter's inputs)."""
    from c2np.models.padding import PaddedCollate, pad_spec
    from c2np.models.registry import MODELS, build_model
    from c2np.training.configs import load_training_config
    from c2np.training.data import COLLATE, make_collate

    seen = []
    interact = SchNetEncoder.interact

    def spy(self, h, src, tgt, length, attr, pairs=None):
        a, b = reverse_pairs(src, tgt)
        assert torch.equal(length[a], length[b]) and torch.equal(attr[a], attr[b])
        seen.append(len(src))
        return interact(self, h, src, tgt, length, attr, pairs)

    monkeypatch.setattr(SchNetEncoder, "interact", spy)
    checked = set()
    tiny = {"hidden": 16, "interactions": 1, "gaussians": 8, "layers": 1, "blocks": 1}
    for name, tasks in MODELS.items():
        for task in tasks:
            cfg = {k: v for k, v in load_training_config(name, task)["model"].items() if k not in ("name", "task")}
            torch.manual_seed(0)
            model = build_model(name, task, **cfg | {k: v for k, v in tiny.items() if k in cfg})
            if not any(isinstance(m, SchNetEncoder) for m in model.modules()):
                continue
            items = [(r, -1, i) if task == 1 else (r, i) for i, r in enumerate(records[:2])]
            batches = {"plain": COLLATE[task](items), "host": make_collate(task, model.host_plan())(items)}
            if task == 2:
                model.fit_targets(batches["plain"].lattice, batches["plain"].spacegroup)
            if getattr(model, "pads", False):
                batches["padded"] = PaddedCollate(COLLATE[task], pad_spec(records, 3))(items)
            for kind, batch in batches.items():
                seen.clear()
                model.loss(batch)
                assert seen and min(seen) > 0, (name, task, kind)
                checked.add((name, task, kind))
    # the models whose encoders train with train.compile = "triton": CDVAE and SyMat on
    # both tasks, every Task 2 model (the shared LatticePredictor encoder)
    assert {(n, t) for n, t, _ in checked} == {("cdvae", 1), ("symat", 1)} | {(n, 2) for n in MODELS}
    assert ("cdvae", 1, "padded") in checked and ("symat", 2, "host") in checked
