"""Static shapes of a Task 1 step (c2np.models.padding, train.pad_buckets): a padded batch
gives the unpadded loss and gradients, its radius graphs are the cell list's in a fixed
buffer, its step waits for nothing, and a compiled padded loss compiles once per bucket.
Also the bf16 edge pipeline (train.bf16_edges): close to fp32, and opt-in."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_lightning")

from c2np.models.graph import radius_edges, radius_edges_static
from c2np.models.padding import (
    MIN_PADDING_ATOMS,
    PaddedCollate,
    PadSpec,
    pad_spec,
    pad_task1,
)
from c2np.models.registry import build_model
from c2np.training.configs import load_training_config
from c2np.training.data import COLLATE, make_collate

TINY = {"hidden": 16, "interactions": 2, "gaussians": 8}
TERMS = ("loss", "coords", "size", "composition", "kl")


def tiny_cdvae(**extra):
    cfg = load_training_config("cdvae", 1)["model"]
    torch.manual_seed(0)
    return build_model("cdvae", 1, **({k: v for k, v in cfg.items() if k not in ("name", "task")} | TINY | extra))


def drawn(model, items):
    """A plain batch carrying host-drawn noise levels and perturbations (no graphs): the
    padded and unpadded losses then see the same draws."""
    batch = make_collate(1, model.host_plan(), seed=0)(items)
    return dataclasses.replace(batch, edge_index=None, graph_cutoff=None, score_edges=None, score_cutoff=None)


def rows_randn_like(t):
    """A stand-in for the latent's draw whose first rows do not depend on the row count."""
    return torch.sin(1.3 * torch.arange(t.numel(), dtype=t.dtype)).view_as(t)


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model.loss(batch)
    out["loss"].backward()
    return ({k: float(out[k]) for k in TERMS},
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})


def assert_same_loss_and_grads(model, got_batch, want_batch):
    """Every loss term to 1e-6 relative and every gradient to 2e-6 of its tensor's largest
    entry: a padded batch against the unpadded one (fp32, same draws)."""
    want, want_grads = loss_and_grads(model, want_batch)
    got, got_grads = loss_and_grads(model, got_batch)
    for term in TERMS:
        assert got[term] == pytest.approx(want[term], rel=1e-6, abs=1e-9), term
    assert want_grads.keys() == got_grads.keys()
    for name, g in want_grads.items():
        torch.testing.assert_close(got_grads[name], g, rtol=0, atol=2e-6 * float(g.abs().max()) + 1e-12, msg=name)


@pytest.mark.parametrize("cutoff", [1.5, 4.0])
def test_static_graph_is_the_cell_list_graph_in_a_fixed_buffer(cutoff):
    gen = torch.Generator().manual_seed(3)
    parts = [torch.randn(200, 3, generator=gen) * 4, torch.rand(1, 3, generator=gen),
             torch.rand(150, 3, generator=gen) * 9 - 40]
    real = torch.cat(parts)
    n, pad = len(real), 37
    pos = torch.cat([real, torch.zeros(pad, 3)])  # padding atoms: one extra graph at the origin
    ptr = torch.tensor(np.cumsum([0] + [len(p) for p in parts] + [pad]))
    active = torch.cat([torch.ones(n), torch.zeros(pad)])
    want = radius_edges(real, ptr[:-1], cutoff)
    e = want.shape[1]
    got, overflow = radius_edges_static(pos, ptr, cutoff, active, candidates=400 * len(pos), edges=e + 100)
    assert not overflow and e > 0
    assert torch.equal(got[:, :e], want)
    filler = got[:, e:]  # the unused slots: self-loops on the padding atoms, in turn
    assert torch.equal(filler[0], filler[1]) and (filler >= n).all()
    assert int(torch.bincount(filler[1]).max()) == math.ceil(filler.shape[1] / pad)
    _, overflow = radius_edges_static(pos, ptr, cutoff, active, candidates=400 * len(pos), edges=e - 1)
    assert overflow
    _, overflow = radius_edges_static(pos, ptr, cutoff, active, candidates=e, edges=e + 100)
    assert overflow


def test_filler_edges_take_the_padding_atoms_in_turn():
    """The same self-loops whether the padding count is known on the host or a tensor on
    the device; each padding atom gets at most one more than the others; none is real."""
    from c2np.models.graph import filler_edges

    got = filler_edges(1000, 300, 37)
    assert torch.equal(got, filler_edges(1000, 300, torch.tensor(37)))
    assert torch.equal(got[0], got[1]) and int(got.min()) == 300 - 37 and int(got.max()) == 299
    counts = torch.bincount(got[0])[300 - 37:]
    assert int(counts.max()) - int(counts.min()) <= 1 and int(counts.sum()) == 1000
    assert torch.equal(filler_edges(5, 10, 0), torch.full((2, 5), 9))  # no padding count: the last atom


def test_bucket_ladder():
    spec = PadSpec(graphs=9, cell_atoms=10, cell_pairs=10, species=3, per_octave=4)
    sizes = [spec.atoms(n) for n in range(1, 70000, 37)]
    assert all(s - n >= MIN_PADDING_ATOMS for s, n in zip(sizes, range(1, 70000, 37)))
    assert all(s % 64 == 0 for s in sizes) and sizes == sorted(sizes)
    ladder = sorted(set(sizes))
    # four sizes per doubling over 64 .. 70,000 (10 doublings; multiples of 64 merge a few small ones)
    assert 30 <= len(ladder) <= 4 * 11
    large = [s for s in ladder if s >= 1024]
    assert max(b / a for a, b in itertools.pairwise(large)) < 1.3  # 2^(1/4), rounded up to 64


def test_padded_loss_and_gradients_are_the_unpadded_ones(records, monkeypatch):
    """Every loss term (per-atom score mean, per-graph size / composition / KL means) and
    every parameter gradient equal the unpadded batch's to 1e-6 (fp32, same draws), for
    a full and a short batch (empty graph slots)."""
    monkeypatch.setattr(torch, "randn_like", rows_randn_like)
    model = tiny_cdvae()
    spec = pad_spec(records, batch_size=len(records) + 1, per_octave=4)
    for k in (len(records), 2):
        items = [(r, -1, i) for i, r in enumerate(records[:k])]
        plain = drawn(model, items)
        padded = pad_task1(plain, spec)
        assert len(padded.pos) > len(plain.pos) and padded.n_graphs == spec.graphs
        assert_same_loss_and_grads(model, padded, plain)


def test_the_masks_matter(records, monkeypatch):
    """Without its masks a padded batch gives another loss: the test above can fail."""
    monkeypatch.setattr(torch, "randn_like", rows_randn_like)
    model = tiny_cdvae()
    items = [(r, -1, i) for i, r in enumerate(records)]
    plain = drawn(model, items)
    padded = pad_task1(plain, pad_spec(records, len(records)))
    unmasked = dataclasses.replace(padded, graph_mask=torch.ones_like(padded.graph_mask))
    want = float(model.loss(plain)["size"])
    assert float(model.loss(padded)["size"]) == pytest.approx(want, rel=1e-6)
    assert float(model.loss(unmasked)["size"]) != pytest.approx(want, rel=1e-3)


def test_a_padded_step_waits_for_nothing_and_overflow_is_loud(records):
    """No scalar read, boolean mask or data-sized output in the loss and backward of a
    padded batch (the model draws its own noise); a radius graph that does not fit its
    buffer makes the loss NaN instead of dropping edges."""
    from torch.profiler import ProfilerActivity, profile

    model = tiny_cdvae()
    spec = pad_spec(records, len(records))
    batch = PaddedCollate(COLLATE[1], spec)([(r, -1) for r in records])
    waits = {"aten::_local_scalar_dense", "aten::nonzero", "aten::bincount", "aten::_unique2"}
    model.loss(batch)["loss"].backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = model.loss(batch)
        out["loss"].backward()
    assert not [e.name for e in prof.events() if e.name in waits]
    assert torch.isfinite(out["loss"])
    cand, _ = batch.graph_capacity
    tight = dataclasses.replace(batch, graph_capacity=(cand, 8))
    assert torch.isnan(model.loss(tight)["loss"])


def test_padding_checks_its_input(records):
    spec = pad_spec(records, 2)
    with pytest.raises(ValueError, match="does not fit"):
        pad_task1(COLLATE[1]([(r, -1) for r in records[:3]]), spec)
    model = tiny_cdvae()
    host = make_collate(1, model.host_plan(), seed=0)([(r, -1, 0) for r in records[:2]])
    with pytest.raises(ValueError, match="host-prepared graphs"):
        pad_task1(host, spec)


def test_bf16_edges_stay_close_to_fp32_and_are_opt_in(records, monkeypatch):
    """train.bf16_edges: the fixed-batch loss and one step's gradient norm within 1 % of
    fp32 (bf16 keeps 8 bits of mantissa), and a model is fp32 unless asked."""
    from c2np.models.components import SchNetEncoder

    monkeypatch.setattr(torch, "randn_like", rows_randn_like)
    model = tiny_cdvae()
    encoders = [m for m in model.modules() if isinstance(m, SchNetEncoder)]
    assert encoders and all(m.edge_dtype is None for m in encoders)
    batch = drawn(model, [(r, -1, i) for i, r in enumerate(records)])
    want, want_grads = loss_and_grads(model, batch)
    for m in encoders:
        m.edge_dtype = torch.bfloat16
    got, got_grads = loss_and_grads(model, batch)
    assert got["loss"] != want["loss"]  # the bf16 chain ran
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-2)
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in want_grads.values()]))
    got_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in got_grads.values()]))
    assert float(got_norm) == pytest.approx(float(norm), rel=1e-2)


@pytest.mark.slow  # inductor's C++ code generation of a whole loss per bucket: minutes
def test_static_compile_compiles_once_per_bucket(records):
    """train.compile = "static": torch.compile(model.loss, dynamic=False) on padded batches
    compiles one graph per bucket used, none when a bucket comes back, and the loss
    equals eager's."""
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor_config

    from c2np.training.module import compile_loss

    inductor_config.fallback_random = True  # eager's draws: comparable losses
    torch._dynamo.reset()
    counters.clear()
    model = tiny_cdvae(interactions=1)
    spec = pad_spec(records, 4, per_octave=1)
    pool = records * 2
    collate = PaddedCollate(COLLATE[1], spec)
    batches = [collate([(r, -1) for r in pool[:k]]) for k in (1, 2, 1, 3, 4, 2)]
    buckets = [len(b.pos) for b in batches]
    eager = []
    for b in batches:
        torch.manual_seed(1)
        eager.append(float(model.loss(b)["loss"]))
    compile_loss(model, dynamic=False)
    graphs = []
    for b, want in zip(batches, eager):
        torch.manual_seed(1)
        got = model.loss(b)["loss"]
        got.backward()
        assert float(got) == pytest.approx(want, rel=1e-5)
        graphs.append(int(counters["stats"]["unique_graphs"]))
    used = [len(set(buckets[:i + 1])) for i in range(len(buckets))]
    assert len(set(buckets)) >= 2
    assert graphs == used, (graphs, buckets)
    # the one break: the unit-cell encoder, eager on purpose (UnitCellEncoder.forward)
    assert counters["graph_break"] and all("UnitCellEncoder" in reason for reason in counters["graph_break"])


def _train_args(store, out, model: str, *extra: str) -> list[str]:
    return ["train", "--task", "1", "--model", model, "--store", str(store), "--out", str(out), "-q",
            "--set", "model.hidden=16", "--set", "model.interactions=1", "--set", "model.gaussians=8",
            "--set", "model.n_sigmas=2", "--set", "model.langevin_steps=1", "--set", "train.val_radii=[9]",
            "--set", "train.workers=0", "--set", "train.epochs=1", *extra]


def test_train_with_padded_batches_and_bf16_edges(small_store, tmp_path):
    """c2np train with train.pad_buckets and train.bf16_edges runs, records both in
    run.json and reaches a finite validation loss (exactness: the tests above; the
    random draws of a padded batch have other shapes, so its curve is not the plain one)."""
    import json

    from typer.testing import CliRunner

    from c2np.cli import app

    args = _train_args(small_store, tmp_path, "cdvae", "--set", "train.pad_buckets=2",
                       "--set", "train.bf16_edges=true")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "cdvae-task1-seed0" / "run.json").read_text())
    assert info["config"]["train"]["pad_buckets"] == 2 and info["config"]["train"]["bf16_edges"] is True
    assert np.isfinite(info["best_val_loss"]) and np.isfinite(info["final_train_loss"])


def test_pad_buckets_needs_a_model_that_pads(records):
    from c2np.errors import ConfigError
    from c2np.training.run import _pad_spec

    model = build_model("symat", 1, hidden=16)
    with pytest.raises(ConfigError, match="SyMatTask1 does not take padded batches"):
        _pad_spec(model, {"pad_buckets": 2, "batch_size": 8}, records)
    assert _pad_spec(tiny_cdvae(), {"pad_buckets": 0, "batch_size": 8}, records) is None
    with pytest.raises(ConfigError, match="needs train.pad_buckets"):
        _pad_spec(tiny_cdvae(), {"pad_buckets": 0, "batch_size": 8, "compile": "static"}, records)
    assert _pad_spec(tiny_cdvae(), {"pad_buckets": 2, "batch_size": 8}, records).graphs == 9


def test_capture_ladder_table_pads_less_with_more_sizes(small_store):
    """benchmarks/pad_buckets.py --capture: the ladders of 8 sizes per doubling contain
    those of 4, so they pad no more."""
    from benchmark_scripts import load_benchmark

    from c2np.models.generation import sigmas
    from c2np.store.dataset import open_dataset
    from c2np.training import data as tdata

    bench = load_benchmark("pad_buckets")
    records = tdata.load_records(open_dataset(small_store), "train")
    rows = {(r["atoms_per_octave"], r["edges_per_octave"]): r
            for r in bench.capture_ladders(records, 4, 4.0, sigmas(1.5, 0.02, 20), epochs=2,
                                           atom_steps=(4, 8), edge_steps=(4, 8))}
    assert set(rows) == {(4, 4), (4, 8), (8, 4), (8, 8)}
    for r in rows.values():
        assert r["shapes"] >= 1 and 0 < r["padded_atoms"] < 1 and 0 <= r["padded_edges"] < 1
    assert rows[8, 8]["padded_atoms"] <= rows[4, 8]["padded_atoms"]
    assert rows[8, 8]["padded_edges"] <= rows[8, 4]["padded_edges"]
    assert rows[4, 4]["padded_atoms"] == rows[4, 8]["padded_atoms"]  # the atoms' ladder alone
