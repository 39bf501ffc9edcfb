"""Host work of a training step (c2np.models.host_work): graphs, cell pairs and noise draws
prepared in the collate function give the same loss as the model's own, leave no host
wait in the step, are seeded per sample, and let the whole loss compile to one graph."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("pytorch_lightning")

from c2np.cli import app  # noqa: E402
from c2np.models.graph import radius_edges, radius_edges_host  # noqa: E402
from c2np.models.registry import build_model  # noqa: E402
from c2np.training.configs import load_training_config  # noqa: E402
from c2np.training.data import COLLATE, make_collate  # noqa: E402

TINY = {"hidden": 16, "interactions": 1, "gaussians": 8}
CASES = [("cdvae", 1), ("symat", 1), ("cdvae", 2), ("symat", 2)]


def tiny(name: str, task: int, batch=None):
    cfg = load_training_config(name, task)["model"]
    torch.manual_seed(0)
    model = build_model(name, task, **({k: v for k, v in cfg.items() if k not in ("name", "task")} | TINY))
    if task == 2:
        model.fit_targets(batch.lattice, batch.spacegroup)
    return model


def items(records, task: int, first: int = 0) -> list:
    return [(r, 5 if task == 2 else -1, first + i) for i, r in enumerate(records)]


@pytest.mark.parametrize("cutoff", [0.9, 2.5, 4.0])
def test_host_graph_is_the_cell_list_graph_in_its_order(cutoff):
    gen = torch.Generator().manual_seed(3)
    parts = [torch.randn(200, 3, generator=gen) * 4, torch.empty(0, 3), torch.rand(1, 3, generator=gen),
             torch.rand(150, 3, generator=gen) * 9 - 40, torch.rand(2, 3, generator=gen) * 0.1]
    pos = torch.cat(parts)
    ptr = torch.tensor(np.cumsum([0] + [len(p) for p in parts]))
    want = radius_edges(pos, ptr, cutoff)
    assert want.shape[1] > 0
    assert torch.equal(radius_edges_host(pos, ptr, cutoff), want)


@pytest.mark.parametrize("name,task", CASES)
def test_host_work_leaves_the_loss_unchanged(records, name, task):
    """The loss of the model's own draws and graphs equals the loss of a host-prepared batch
    carrying the same draws: the step computes the same objective."""
    plain = COLLATE[task](items(records, task))
    model = tiny(name, task, plain)
    host = make_collate(task, model.host_plan(), seed=0)(items(records, task))
    seed = 11
    torch.manual_seed(seed)
    want = float(model.loss(plain)["loss"])
    if task == 1:  # replay the model's draws: its latent, then the noise levels and perturbations
        torch.manual_seed(seed)
        torch.randn(plain.n_graphs, model.latent)
        level = torch.randint(len(model.levels), (plain.n_graphs,))
        noise = torch.randn_like(plain.pos)
        noisy = plain.pos + model.levels[level][plain.batch].view(-1, 1) * noise
        host = dataclasses.replace(host, noise_level=level, noise=noise,
                                   score_edges=radius_edges_host(noisy, plain.ptr, host.score_cutoff))
    torch.manual_seed(seed)
    got = float(model.loss(host)["loss"])
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name,task", [("cdvae", 1), ("symat", 2)])
def test_a_host_prepared_step_waits_for_nothing(records, name, task):
    """No op that makes a GPU step wait for the device (scalar reads, boolean masks,
    data-sized outputs) runs in the loss or the backward of a host-prepared batch."""
    from torch.profiler import ProfilerActivity, profile

    plain = COLLATE[task](items(records, task))
    model = tiny(name, task, plain)
    host = make_collate(task, model.host_plan(), seed=0)(items(records, task))
    waits = {"aten::_local_scalar_dense", "aten::nonzero", "aten::bincount", "aten::_unique2"}
    model.loss(host)["loss"].backward()  # first call: lazy state out of the way
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.loss(host)["loss"].backward()
    assert not [e.name for e in prof.events() if e.name in waits]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.loss(plain)["loss"].backward()
    assert [e.name for e in prof.events() if e.name in waits]  # the check can fail


def test_the_dataloader_pins_every_tensor_of_a_batch(records, monkeypatch):
    """DataLoader(pin_memory=True) reaches the batch's tensors (pinning itself needs a GPU:
    a stand-in records what is pinned)."""
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a: pinned.append(t) or t.clone())
    model = tiny("cdvae", 1)
    batch = make_collate(1, model.host_plan(), seed=0)(items(records, 1))
    out = pin_memory(batch)
    tensors = [v for v in vars(batch).values() if torch.is_tensor(v)]
    assert type(out) is type(batch) and len(pinned) == len(tensors)
    assert out.graph_cutoff == batch.graph_cutoff and torch.equal(out.score_edges, batch.score_edges)


def test_host_noise_is_seeded_per_sample(records):
    model = tiny("cdvae", 1)
    collate = make_collate(1, model.host_plan(), seed=0)
    a, b = records[0], records[1]
    ab = collate([(a, -1, 0), (b, -1, 1)])
    ba = collate([(b, -1, 1), (a, -1, 0)])
    na = len(a.numbers)
    assert torch.equal(ab.noise[:na], ba.noise[len(b.numbers):])  # a's draws, wherever it sits
    assert ab.noise_level[0] == ba.noise_level[1]
    assert torch.equal(ab.noise, collate([(a, -1, 0), (b, -1, 1)]).noise)  # reproducible
    later = collate([(a, -1, len(records)), (b, -1, len(records) + 1)])  # the next epoch
    assert not torch.equal(ab.noise, later.noise)
    other = make_collate(1, model.host_plan(), seed=1)([(a, -1, 0), (b, -1, 1)])
    assert not torch.equal(ab.noise, other.noise)
    fixed = [(a, -1), (b, -1)]  # validation items (no index): the same draws every epoch
    assert torch.equal(collate(fixed).noise, collate(fixed).noise)


@pytest.mark.slow  # about 90 s of tracing on the 2-core dev machine
def test_compiled_loss_does_not_recompile_across_batch_sizes(records):
    """With host work the whole CDVAE Task 1 loss traces to one dynamic-shape graph (beside
    the unit-cell encoder, eager on purpose), and no recompilation for other atom, edge and graph counts, a first
    batch of 2 graphs included (backend "eager": dynamo's tracing and guards, without
    inductor's code generation)."""
    from torch._dynamo.utils import counters

    from c2np.training.module import compile_loss

    torch._dynamo.reset()
    counters.clear()
    model = tiny("cdvae", 1)
    eager = model.loss
    collate = make_collate(1, model.host_plan(), seed=0)
    compile_loss(model, backend="eager")
    pool = records * 3
    sizes = []
    for count in (2, 4, 5, 6):
        batch = collate(items(pool[:count], 1, first=count))
        torch.manual_seed(0)
        got = model.loss(batch)["loss"]
        got.backward()
        torch.manual_seed(0)
        assert float(got) == pytest.approx(float(eager(batch)["loss"]), rel=1e-6)
        sizes.append(len(batch.pos))
    assert len(set(sizes)) == 4
    assert counters["stats"]["unique_graphs"] == 1
    # the one break: the unit-cell encoder, eager on purpose (UnitCellEncoder.forward)
    assert counters["graph_break"] and all("UnitCellEncoder" in reason for reason in counters["graph_break"])


@pytest.mark.parametrize("name", ["cdvae", "symat"])
def test_prepare_in_step_makes_the_models_graphs_and_draws(records, name):
    """train.compile = "loss" without host work: the step makes the radius graphs (the
    model's own cell list) and the noise draws (the global generator) before the loss;
    the loss of that batch is the one the model computes from those draws, and fields
    that are there already are kept."""
    from c2np.models.host_work import prepare_in_step

    plain = COLLATE[1](items(records, 1))
    model = tiny(name, 1)
    plan = model.host_plan()
    torch.manual_seed(4)
    batch = prepare_in_step(plain, plan)
    if plan.graph_cutoff is not None:  # CDVAE's encoder; SyMat's latent comes from the composition
        assert torch.equal(batch.edge_index, radius_edges(plain.pos, plain.ptr, plan.graph_cutoff))
    else:
        assert batch.edge_index is None
    noisy = plain.pos + model.levels[batch.noise_level][plain.batch].view(-1, 1) * batch.noise
    assert torch.equal(batch.score_edges, radius_edges(noisy, plain.ptr, plan.score_cutoff))
    torch.manual_seed(4)
    again = prepare_in_step(plain, plan)
    assert torch.equal(again.noise, batch.noise) and torch.equal(again.noise_level, batch.noise_level)
    assert plain.noise is None and plain.edge_index is None  # the batch itself is not changed
    # the model's loss of the prepared batch: its own graphs from the same draws
    bare = dataclasses.replace(batch, edge_index=None, graph_cutoff=None, score_edges=None, score_cutoff=None)
    losses = []
    for b in (batch, bare):
        torch.manual_seed(9)
        losses.append(float(model.loss(b)["loss"]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    host = make_collate(1, plan, seed=0)(items(records, 1))
    assert prepare_in_step(host, plan) is host  # everything made in the workers already
    only_noise = dataclasses.replace(host, score_edges=None, score_cutoff=None)
    remade = prepare_in_step(only_noise, plan)
    assert torch.equal(remade.noise, host.noise) and torch.equal(remade.score_edges, host.score_edges)


def test_compiled_loss_without_host_work_does_not_recompile(records):
    """train.compile = "loss" on plain batches: the graphs and draws are made before the
    compiled loss, which then traces once (the unit-cell encoder eager beside it) and does
    not compile again for other atom, edge and graph counts (backend "eager": dynamo's
    tracing and guards); its loss is the eager loss of the same prepared batch."""
    from torch._dynamo.utils import counters

    from c2np.models.host_work import prepare_in_step
    from c2np.training.module import compile_loss

    torch._dynamo.reset()
    counters.clear()
    model = tiny("cdvae", 1)
    eager = model.loss
    compile_loss(model, backend="eager")
    pool = records * 3
    graphs, sizes = [], []
    for count in (2, 4, 5, 6):
        batch = COLLATE[1](items(pool[:count], 1))
        torch.manual_seed(count)
        got = model.loss(batch)["loss"]
        got.backward()
        torch.manual_seed(count)
        want = eager(prepare_in_step(batch, model.host_plan()))["loss"]
        assert float(got) == pytest.approx(float(want), rel=1e-6)
        graphs.append(counters["stats"]["unique_graphs"])
        sizes.append(len(batch.pos))
    assert len(set(sizes)) == 4
    assert graphs[-1] == graphs[0] <= 2, graphs
    assert all("UnitCellEncoder" in reason for reason in counters["graph_break"])
    assert all(m.pair_filters for m in model.modules() if hasattr(m, "pair_filters"))


@pytest.mark.slow  # Inductor's C++ build: under a minute on the 2-core dev machine (11 s with its cache warm)
def test_inductor_compiled_loss_keeps_every_gradient_finite(records):
    """The whole CDVAE Task 1 loss compiled by Inductor: every parameter's gradient is
    finite and equals eager's. With the unit-cell encoder compiled inside the loss, its
    max pool's gradient came out NaN (torch 2.13, CPU): Inductor computed the pool's input
    differently for the backward's equality test than for the forward's maxima."""
    import copy

    from torch._inductor import config as inductor_config

    from c2np.models.host_work import prepare_in_step
    from c2np.training.module import compile_loss

    torch._dynamo.reset()
    model = tiny("cdvae", 1)
    eager = copy.deepcopy(model)
    compile_loss(model, pair_filters=False)
    batch = COLLATE[1](items(records * 2, 1))
    torch.manual_seed(3)
    batch = prepare_in_step(batch, model.host_plan())
    saved = inductor_config.fallback_random
    inductor_config.fallback_random = True  # the latent's draw as eager's
    try:
        for m in (model, eager):
            torch.manual_seed(5)
            m.loss(batch)["loss"].backward()
    finally:
        inductor_config.fallback_random = saved
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith("conditioner.") for n in names)
    for n, p, q in zip(names, model.parameters(), eager.parameters(), strict=True):
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), n
        assert float((p.grad - q.grad).norm() / q.grad.norm().clamp_min(1e-12)) < 1e-4, n


def test_compile_loss_takes_one_of_cpp_wrapper_and_mode():
    from c2np.training.module import compile_loss

    with pytest.raises(ValueError, match="cannot be combined"):
        compile_loss(tiny("cdvae", 1), mode="reduce-overhead", cpp_wrapper=True)


def test_train_with_host_work_and_fused_adam(small_store, tmp_path):
    args = ["train", "--task", "1", "--model", "cdvae", "--store", str(small_store), "--out", str(tmp_path), "-q",
            "--set", "model.hidden=16", "--set", "model.interactions=1", "--set", "model.gaussians=8",
            "--set", "model.n_sigmas=2", "--set", "model.langevin_steps=1", "--set", "train.val_radii=[9]",
            "--set", "train.workers=0", "--set", "train.epochs=2", "--set", "train.host_work=true",
            "--set", "train.fused_adam=true"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "cdvae-task1-seed0" / "run.json").read_text())
    assert info["config"]["train"]["host_work"] is True and info["epochs"] == 2
    assert np.isfinite(info["best_val_loss"])
