"""A whole training step replayed as a CUDA graph (c2np.training.captured, train.capture):
the padded, device-prepared batch gives the unpadded loss and gradients, the step (eager
without CUDA) trains like the plain step, shapes name graphs, and on a GPU the replayed
step equals the eager one."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_lightning")

from c2np.models.graph import radius_edges
from c2np.models.host_work import prepare_padded
from c2np.models.padding import MIN_PADDING_ATOMS, ladder, pad_spec, pad_task1
from c2np.training.captured import CapturedStep, make_adam, shape_key
from tests.test_padding import TERMS, assert_same_loss_and_grads, drawn, rows_randn_like, tiny_cdvae


def plain_steps(model, batches, clip=1.0):
    """The step of ``c2np train`` without capture: zero, loss, backward, clip, Adam."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for b in batches:
        opt.zero_grad(set_to_none=True)
        model.loss(b)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()


def cpu_step(model, **kw) -> CapturedStep:
    """The captured step without CUDA (uncaptured), with a plain Adam of lr 1e-3 and clip 1."""
    return CapturedStep(model, make_adam(model.parameters(), 1e-3, torch.device("cpu"), capture=False), 1.0,
                        model.host_plan(), **kw)


def test_edge_ladder_bounds_the_padding():
    sizes = list(range(1, 4_000_000, 9973))
    slots = [ladder(e, 8, 256) for e in sizes]
    assert all(s >= e and s % 256 == 0 for s, e in zip(slots, sizes))
    big = [(s, e) for s, e in zip(slots, sizes) if e > 100_000]
    assert max(s / e for s, e in big) < 2 ** (1 / 8) + 1e-3  # at most 9 % padding above the rounding
    assert len({s for s, _ in big}) <= 8 * 6  # 8 per doubling over 100,000 .. 4,000,000 (5.3 doublings)


def test_prepared_padded_batch_gives_the_unpadded_loss_and_gradients(records, monkeypatch):
    """Both radius graphs made on the device for the real atoms and padded to one edge
    capacity: every loss term and gradient equal the unpadded batch's (same draws), the
    graphs are the cell list's, and the filler edges are self-loops on the padding atoms,
    spread over them (at least MIN_PADDING_ATOMS)."""
    monkeypatch.setattr(torch, "randn_like", rows_randn_like)
    model = tiny_cdvae()
    plan = model.host_plan()
    spec = pad_spec(records, batch_size=len(records) + 1, per_octave=4)
    for k in (len(records), 2):
        plain = drawn(model, [(r, -1, i) for i, r in enumerate(records[:k])])
        ready = prepare_padded(pad_task1(plain, spec), plan, edges_per_octave=8)
        n, slots = len(plain.pos), len(ready.pos)
        clean = radius_edges(plain.pos, plain.ptr, plan.graph_cutoff)
        e = clean.shape[1]
        assert torch.equal(ready.edge_index[:, :e], clean)
        filler = ready.edge_index[:, e:]  # self-loops on the padding atoms, in turn
        assert torch.equal(filler[0], filler[1]) and (filler >= n).all() and slots - n >= MIN_PADDING_ATOMS
        assert int(torch.bincount(filler[1]).max()) == math.ceil(filler.shape[1] / (slots - n))
        assert ready.edge_index.shape == ready.score_edges.shape
        assert ready.edge_index.shape[1] == ladder(max(e, int((ready.score_edges[0] < n).sum())), 8, 256)
        assert_same_loss_and_grads(model, ready, plain)


def test_prepare_padded_draws_its_own_noise_and_checks_its_input(records):
    model = tiny_cdvae()
    spec = pad_spec(records, len(records))
    from c2np.training.data import COLLATE

    padded = pad_task1(COLLATE[1]([(r, -1) for r in records]), spec)
    torch.manual_seed(0)
    a = prepare_padded(padded, model.host_plan())
    b = prepare_padded(padded, model.host_plan())
    assert a.noise.shape == padded.pos.shape and a.noise_level.shape == (spec.graphs,)
    assert not torch.equal(a.noise, b.noise)  # fresh draws each step
    with pytest.raises(ValueError, match="padded batch"):
        prepare_padded(COLLATE[1]([(r, -1) for r in records]), model.host_plan())


def test_shape_key_names_shapes_not_contents(records):
    model = tiny_cdvae()
    spec = pad_spec(records, len(records))
    batch = drawn(model, [(r, -1, i) for i, r in enumerate(records)])
    ready = prepare_padded(pad_task1(batch, spec), model.host_plan())
    moved = dataclasses.replace(ready, pos=ready.pos + 1.0, real_graphs=1, real_atoms=3)
    assert shape_key(moved) == shape_key(ready)  # values and bookkeeping: the same graph
    wider = dataclasses.replace(ready, edge_index=torch.cat([ready.edge_index, ready.edge_index], 1))
    assert shape_key(wider) != shape_key(ready)
    assert shape_key(dataclasses.replace(ready, score_cutoff=3.0)) != shape_key(ready)


def test_uncaptured_step_trains_like_the_plain_step(records, monkeypatch):
    """Without CUDA, CapturedStep runs the same preparation and step eagerly: three steps on
    padded batches end at the plain steps' weights on the unpadded ones (same draws)."""
    monkeypatch.setattr(torch, "randn_like", rows_randn_like)
    spec = pad_spec(records, len(records))
    want, got = tiny_cdvae(), tiny_cdvae()
    items = [[(r, -1, i) for i, r in enumerate(records[:k])] for k in (len(records), 2, len(records))]
    batches = [drawn(want, it) for it in items]
    plain_steps(want, batches)
    step = cpu_step(got)
    assert not step.capture
    outs = [step(pad_task1(b, spec)) for b in batches]
    assert step.counts == {"eager": 3, "captured": 0, "replayed": 0}
    assert all(torch.isfinite(o["loss"]) and set(TERMS) <= o.keys() for o in outs)
    for (name, p), q in zip(want.named_parameters(), got.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-5, msg=name)
    moved = any(not torch.equal(p, q) for p, q in zip(tiny_cdvae().parameters(), got.parameters()))
    assert moved  # the steps changed the weights


def _undrawn_batches(records, spec):
    """Padded loader batches without host draws: the step's generator draws their noise."""
    from c2np.training.data import COLLATE

    full = [(r, -1) for r in records]
    return [pad_task1(COLLATE[1](items), spec) for items in (full, full[:2], full, full[1:3])]


def test_prefetched_batches_are_the_one_thread_batches(records):
    """prefetch prepares in a background thread what the step would prepare itself: the same
    batches in the same order with the same draws (the step's own seeded generator)."""
    model = tiny_cdvae()
    spec = pad_spec(records, len(records))
    batches = _undrawn_batches(records, spec)

    def step():
        return cpu_step(model, seed=7)

    first = step()
    inline = [first.prepare(b).batch for b in [*batches, *batches]]  # its generator goes on
    one = step()
    threaded = [item.batch for item in one.prefetch(iter([*batches, *batches]), depth=2)]
    assert len(threaded) == len(inline) == 8
    for a, b in zip(threaded, inline):
        assert shape_key(a) == shape_key(b)
        for f in ("noise", "noise_level", "edge_index", "score_edges", "pos"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert not torch.equal(threaded[0].noise, threaded[4].noise)  # fresh draws for a batch seen again


def test_prefetch_raises_the_loaders_error_and_stops_when_left(records):
    import threading

    model = tiny_cdvae()
    spec = pad_spec(records, len(records))
    batches = _undrawn_batches(records, spec)
    step = cpu_step(model)

    def failing():
        yield batches[0]
        raise RuntimeError("worker died")

    got = []
    with pytest.raises(RuntimeError, match="worker died"):
        for item in step.prefetch(failing()):
            got.append(item)
    assert len(got) == 1
    endless = (batches[k % 4] for k in range(10 ** 9))
    for k, _ in enumerate(step.prefetch(endless, depth=1)):
        if k == 2:
            break  # the generator's close stops and joins the thread
    assert not any(t.name == "c2np-prepare" for t in threading.enumerate())


def test_steps_on_prefetched_batches_equal_steps_on_the_loaders(records):
    spec = pad_spec(records, len(records))
    batches = _undrawn_batches(records, spec)
    models = [tiny_cdvae(), tiny_cdvae()]
    steps = [cpu_step(m, seed=3) for m in models]
    torch.manual_seed(0)
    a = [float(steps[0](b)["loss"]) for b in batches]
    torch.manual_seed(0)  # the latent's draws (global generator) alike too
    b = [float(steps[1](item)["loss"]) for item in steps[1].prefetch(batches)]
    assert a == b
    assert all(torch.equal(p, q) for p, q in zip(*(m.parameters() for m in models)))


def test_capture_needs_cuda(records):
    model = tiny_cdvae()
    with pytest.raises(ValueError, match="CUDA"):
        cpu_step(model, capture=True)


def _on_gpu(records, monkeypatch):
    """The GPU tests' set-up: a stand-in for the latent's draw that does not depend on a
    generator (the plain steps and the replays draw from different ones), the padding
    spec, two equal tiny CDVAE models on the GPU and the items of one whole batch."""
    monkeypatch.setattr(torch, "randn_like",
                        lambda t: torch.sin(1.3 * torch.arange(t.numel(), device=t.device, dtype=t.dtype)).view_as(t))
    device = torch.device("cuda")
    return (device, pad_spec(records, len(records)), tiny_cdvae().to(device), tiny_cdvae().to(device),
            [(r, -1, i) for i, r in enumerate(records)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU only: CUDA graphs")
@pytest.mark.parametrize("threaded", [False, True])
def test_replayed_step_equals_the_eager_step(records, monkeypatch, threaded):
    """On a GPU: the first batch of a shape is stepped eagerly and captured, later batches
    of that shape are replayed, and after five steps (two shapes) the weights equal those
    of plain eager steps on the unpadded batches with the same draws; the learning rate
    set after capture reaches the replays. ``threaded``: the batches prepared by
    ``prefetch``'s thread on the side stream while the main thread replays."""
    device, spec, want, got, full = _on_gpu(records, monkeypatch)
    order = [full, full[:2], full, full, full[:2]]
    batches = [drawn(want, it) for it in order]
    plain_steps(want, [b.to(device) for b in batches])
    opt = make_adam(got.parameters(), 1e-3, device, capture=True)
    step = CapturedStep(got, opt, 1.0, got.host_plan())
    padded = [pad_task1(b, spec) for b in batches]
    outs = [float(step(b)["loss"]) for b in (step.prefetch(padded) if threaded else padded)]
    torch.cuda.synchronize()
    assert step.counts == {"eager": 2, "captured": 2, "replayed": 3}
    assert all(map(torch.isfinite, torch.tensor(outs)))
    for (name, p), q in zip(want.named_parameters(), got.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-5, msg=name)
    # a schedule's change of the learning rate reaches the replayed graph
    before = [p.detach().clone() for p in got.parameters()]
    opt.param_groups[0]["lr"].fill_(0.0)
    step(pad_task1(batches[0], spec))
    torch.cuda.synchronize()
    assert step.counts["replayed"] == 4
    assert all(torch.equal(a, b) for a, b in zip(before, got.parameters()))


@pytest.mark.parametrize("prefetch", [True, False])
def test_c2np_train_with_capture_runs_steps_the_schedule_and_resumes(small_store, tmp_path, monkeypatch, prefetch):
    """c2np train with train.capture (on the CPU: the same padded step, uncaptured): Lightning's
    automatic optimisation is off, so the run steps the learning-rate schedule itself (the
    lr column decays by lr_decay per epoch) and resumes from its checkpoint; validation
    batches are not padded; every training batch comes prepared by the step's thread, one
    prefetch per epoch, or with train.prefetch = false the loader's padded batches go to
    the step, which prepares them itself."""
    import csv
    import json

    from typer.testing import CliRunner

    from c2np.cli import app
    from c2np.training import captured
    from tests.test_padding import _train_args

    seen = {"prefetch": 0, "steps": []}
    prefetch, call = captured.CapturedStep.prefetch, captured.CapturedStep.__call__

    def spy_prefetch(self, batches, depth=2):
        seen["prefetch"] += 1
        return prefetch(self, batches, depth)

    def spy_call(self, batch):
        seen["steps"].append(type(batch).__name__)
        out = call(self, batch)
        seen.setdefault("grads", []).append([p.grad for p in self.params])  # the tensors, kept
        return out

    monkeypatch.setattr(captured.CapturedStep, "prefetch", spy_prefetch)
    monkeypatch.setattr(captured.CapturedStep, "__call__", spy_call)
    args = _train_args(small_store, tmp_path, "cdvae", "--set", "train.capture=true", "--set", "train.lr_decay=0.5",
                       "--set", f"train.prefetch={str(prefetch).lower()}")
    res = CliRunner().invoke(app, [*args, "--set", "train.epochs=2"])
    assert res.exit_code == 0, res.output
    # every step of both epochs wrote the same gradient tensors: the validation between
    # them (Lightning drops p.grad before it) did not replace those the graphs write
    first = seen["grads"][0]
    assert len(seen["grads"]) >= 2 and all(all(a is b for a, b in zip(g, first, strict=True)) for g in seen["grads"])
    res = CliRunner().invoke(app, [*args, "--set", "train.epochs=3", "--resume"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "cdvae-task1-seed0"
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["train"]["capture"] is True and info["epochs"] == 3 and info["invocations"] == 2
    assert np.isfinite(info["best_val_loss"]) and np.isfinite(info["final_train_loss"])
    with (run / "metrics.csv").open() as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs == pytest.approx([1e-4, 5e-5, 2.5e-5])
    if prefetch:
        assert seen["prefetch"] == 3 and seen["steps"] and set(seen["steps"]) == {"Prepared"}
    else:
        assert seen["prefetch"] == 0 and seen["steps"] and set(seen["steps"]) == {"Task1Batch"}


@pytest.mark.parametrize("setting, message", [
    ({"host_work": True}, "host_work"),
    ({"compile": "static"}, "captures the step itself"),
    ({"cuda_graphs": True}, "captures the step itself"),
    ({"precision": "bf16-mixed"}, "fp32 only"),
    ({"edge_buckets": 0}, "edge_buckets"),
])
def test_capture_refuses_what_it_cannot_run(setting, message):
    from c2np.errors import ConfigError
    from c2np.models.registry import build_model
    from c2np.training.run import _check_capture

    with pytest.raises(ConfigError, match=message):
        _check_capture(tiny_cdvae(), {"capture": True} | setting, 1)
    with pytest.raises(ConfigError, match="one device"):
        _check_capture(tiny_cdvae(), {"capture": True}, 2)
    with pytest.raises(ConfigError, match="SyMatTask1 does not take padded batches"):
        _check_capture(build_model("symat", 1, hidden=16), {"capture": True}, 1)
    _check_capture(tiny_cdvae(), {"capture": True, "compile": "loss"}, 1)  # fine


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU only: CUDA graphs")
def test_replays_write_only_their_own_gradients_after_lightning_drops_them(records, monkeypatch):
    """Lightning sets every ``p.grad`` to None before each validation. A captured graph
    keeps writing the gradient tensors it was captured with: they must still belong to the
    step, not to whatever the allocator hands the freed memory to next (the crash of the
    first GPU runs of ``c2np train``). Tensors made right after the drop, on both streams,
    keep their values through a replay; the weights still equal plain eager steps'."""
    device, spec, want, got, full = _on_gpu(records, monkeypatch)
    batches = [drawn(want, full) for _ in range(3)]
    plain_steps(want, [b.to(device) for b in batches])
    step = CapturedStep(got, make_adam(got.parameters(), 1e-3, device, capture=True), 1.0, got.host_plan())
    step(pad_task1(batches[0], spec))  # eager, then captured
    for b in batches[1:]:
        got.zero_grad(set_to_none=True)  # on_validation_model_zero_grad
        torch.cuda.synchronize()
        bystanders = [torch.full_like(p, 7.0) for p in got.parameters()]
        with torch.cuda.stream(step.capture_stream):
            bystanders += [torch.full_like(p, 7.0) for p in got.parameters()]
        torch.cuda.synchronize()
        step(pad_task1(b, spec))  # replayed
        torch.cuda.synchronize()
        assert all(bool((t == 7.0).all()) for t in bystanders)
        assert all(p.grad is g for p, g in zip(got.parameters(), step.grads))  # this step's, again
    assert step.counts == {"eager": 1, "captured": 1, "replayed": 2}
    for (name, p), q in zip(want.named_parameters(), got.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-5, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU only: CUDA graphs")
def test_shapes_past_the_cap_are_stepped_eagerly(records):
    """max_graphs bounds the captured shapes: a new shape past it is stepped eagerly each
    time, and the captured ones are still replayed."""
    device = torch.device("cuda")
    spec = pad_spec(records, len(records))
    model = tiny_cdvae().to(device)
    step = CapturedStep(model, make_adam(model.parameters(), 1e-3, device, capture=True), 1.0, model.host_plan(),
                        max_graphs=1)
    full = [(r, -1, i) for i, r in enumerate(records)]
    for items in (full, full[:2], full[:2], full):
        assert torch.isfinite(step(pad_task1(drawn(model, items), spec))["loss"])
    torch.cuda.synchronize()
    assert step.counts == {"eager": 3, "captured": 1, "replayed": 1} and len(step.graphs) == 1


def test_step_gradients_are_the_steps_own_in_tensors_that_stay_put(records):
    """Each step's gradients are that step's alone (not added to the last step's), copied
    into gradient tensors made once and held by the step, which every captured graph
    writes: also after the parameters' ``grad`` was set to None, as Lightning does before
    each validation (on a GPU the graphs then wrote freed memory)."""
    spec = pad_spec(records, len(records))
    model = tiny_cdvae()
    step = CapturedStep(model, make_adam(model.parameters(), 1e-3, torch.device("cpu"), capture=False), None,
                        model.host_plan())
    held = [p.grad for p in model.parameters()]
    assert all(g is not None and not g.any() for g in held)  # made, zero, before any step
    batches = _undrawn_batches(records, spec)[:2]
    step(batches[0])
    model.zero_grad(set_to_none=True)  # Lightning's on_validation_model_zero_grad
    seeded = torch.Generator().manual_seed(0)
    step.generator.set_state(seeded.get_state())
    # the same batch and draws again, gradients taken by hand on the weights now
    ready = step._prepare(batches[1])
    with torch.random.fork_rng():
        want = torch.autograd.grad(model.loss(ready)["loss"], list(model.parameters()), allow_unused=True)
    step.generator.set_state(seeded.get_state())
    step(batches[1])
    assert all(p.grad is g for p, g in zip(model.parameters(), held))  # the same tensors
    moved = 0
    for (name, p), w in zip(model.named_parameters(), want):
        if w is None:
            assert not p.grad.any(), name
            continue
        torch.testing.assert_close(p.grad, w, rtol=1e-5, atol=1e-7, msg=name)
        moved += bool(w.any())
    assert moved > 10
