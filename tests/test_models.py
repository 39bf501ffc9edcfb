"""Learned baselines on the CPU: tiny models learn, are invariant/equivariant, and their
predictions go through the same harness as the reference solvers."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

pytest.importorskip("pytorch_lightning")

from c2np.cli import app  # noqa: E402
from c2np.config import OBJECTIVE_VERSIONS  # noqa: E402
from c2np.errors import ConfigError  # noqa: E402
from c2np.models.batches import Task1Batch  # noqa: E402
from c2np.models.graph import radius_edges  # noqa: E402
from c2np.models.registry import build_model  # noqa: E402
from c2np.training.configs import apply_overrides, load_training_config  # noqa: E402
from c2np.training.data import COLLATE  # noqa: E402
from model_checks import fit_fixed_batch, task1_cli_round_trip  # noqa: E402

runner = CliRunner()
TINY = {"hidden": 16, "interactions": 1, "gaussians": 8}


def test_radius_edges_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(70, 3, generator=gen) * 6
    ptr = torch.tensor([0, 30, 70])
    edges = radius_edges(pos, ptr, 2.0)
    got = {tuple(e) for e in edges.T.tolist()}
    want = set()
    for a, b in [(0, 30), (30, 70)]:
        for i in range(a, b):
            for j in range(a, b):
                if i != j and torch.norm(pos[i] - pos[j]) < 2.0:
                    want.add((j, i))
    assert got == want and len(got) > 0


@pytest.mark.parametrize("name,task", [("cdvae", 1), ("symat", 1), ("cdvae", 2), ("symat", 2)])
def test_tiny_model_loss_goes_down(records, name, task):
    cfg = load_training_config(name, task)["model"]
    params = {k: v for k, v in cfg.items() if k not in ("name", "task")} | TINY
    torch.manual_seed(0)
    model = build_model(name, task, **params)
    batch = COLLATE[task]([(r, 0 if task == 2 else -1) for r in records])
    if task == 2:
        model.fit_targets(batch.lattice, batch.spacegroup)

    def loss_at_fixed_noise() -> float:
        torch.manual_seed(123)  # the same noise levels and perturbations every time
        return float(model.loss(batch)["loss"].detach())

    before = loss_at_fixed_noise()
    fit_fixed_batch(model, batch, 60)
    after = loss_at_fixed_noise()
    assert after < 0.8 * before, (before, after)


def test_task1_composition_term_is_a_kl_divergence(records):
    """Objective version 2: the composition term is KL(target || predicted), the
    cross-entropy less the target's entropy (about 0.95 nats for ABH3, a floor that no model
    can go below), so it is 0 for a perfect prediction and has the cross-entropy's gradient."""
    cfg = load_training_config("cdvae", 1)["model"]
    torch.manual_seed(0)
    model = build_model("cdvae", 1, **({k: v for k, v in cfg.items() if k not in ("name", "task")} | TINY))
    assert OBJECTIVE_VERSIONS[1] == 2
    batch = COLLATE[1]([(r, -1) for r in records])
    real = batch.species > 0
    target = batch.target_frac
    entropy = -(torch.xlogy(target, target)).sum(-1)
    assert float(entropy.mean()) == pytest.approx(0.95, abs=0.05)  # ABH3: fractions near 1/5, 1/5, 3/5
    head = model.size_and_species

    def perfect(b, cond, lat):
        log_n, _ = head(b, cond, lat)
        return log_n, torch.log(target.clamp_min(1e-30)).masked_fill(~real, -1e9)

    model.size_and_species = perfect
    assert float(model.loss(batch)["composition"]) == pytest.approx(0.0, abs=1e-6)
    seen = []

    def recorded(b, cond, lat):
        seen.append(head(b, cond, lat)[1])
        return head(b, cond, lat)

    model.size_and_species = recorded
    comp = model.loss(batch)["composition"]
    cross = -(target * torch.log_softmax(seen[0], -1).masked_fill(~real, 0.0)).sum(-1)
    assert float(comp) > 0 and float(comp) == pytest.approx(float((cross - entropy).mean()), rel=1e-5)


@pytest.mark.parametrize("name", ["cdvae", "symat"])
def test_task2_prediction_is_rotation_invariant(records, name):
    torch.manual_seed(0)
    model = build_model(name, 2, **TINY).eval()
    base = COLLATE[2]([(r, -1) for r in records])
    model.fit_targets(base.lattice, base.spacegroup)
    rotated = COLLATE[2]([(r, 5) for r in records])
    lat0, sg0 = model.predict(base)
    lat1, sg1 = model.predict(rotated)
    assert not torch.allclose(base.pos, rotated.pos)
    torch.testing.assert_close(lat0, lat1, atol=1e-4, rtol=1e-4)
    assert torch.equal(sg0, sg1)


@pytest.mark.parametrize("name", ["cdvae", "symat"])
def test_task1_score_rotates_with_the_particle_and_cell(records, name):
    """The score is equivariant when the particle and its conditioning cell rotate together
    (the frame is fixed by the cell), and it depends on where atoms sit in that cell."""
    torch.manual_seed(0)
    model = build_model(name, 1, **TINY).eval()
    batch = COLLATE[1]([(r, -1) for r in records[:2]])
    lat = torch.zeros(batch.n_graphs, model.latent)
    sigma = torch.full((batch.n_graphs,), 0.3)
    cond = model.conditions(batch, lat, sigma)
    s_node = sigma[batch.batch].view(-1, 1)
    rot = torch.tensor(Rotation.from_euler("xyz", [20, 50, 80], degrees=True).as_matrix(), dtype=torch.float32)
    rotated = Task1Batch(**{**batch.__dict__, "lattice": batch.lattice @ rot.T, "lattice_inv": None})
    with torch.no_grad():
        s0 = model.score(batch, batch.pos, cond, s_node)
        s1 = model.score(rotated, batch.pos @ rot.T, model.conditions(rotated, lat, sigma), s_node)
        s_frame = model.score(batch, batch.pos @ rot.T, cond, s_node)
    assert s0.abs().max() > 0
    torch.testing.assert_close(s1, s0 @ rot.T, atol=1e-3, rtol=1e-3)
    assert float((s_frame - s0 @ rot.T).abs().max()) > 1e-3  # the cell's frame matters


def test_generation_makes_the_predicted_number_of_atoms(records):
    torch.manual_seed(0)
    model = build_model("symat", 1, **TINY, n_sigmas=2, langevin_steps=1).eval()
    batch = COLLATE[1]([(r, -1) for r in records[:2]])
    a = model.generate(batch, seed=3)
    b = model.generate(batch, seed=3)
    for (z, pos), rec in zip(a, records[:2]):
        assert len(z) == len(pos) >= 1
        assert set(np.unique(z)) <= set(np.unique(rec.cell_numbers))
        assert np.all(np.linalg.norm(pos, axis=1) <= rec.radius + 1e-4)  # inside the sphere
    for (z1, p1), (z2, p2) in zip(a, b):  # seeded: the same particles again
        np.testing.assert_array_equal(z1, z2)
        np.testing.assert_allclose(p1, p2)


def test_config_overrides():
    cfg = load_training_config("cdvae", 2, overrides=["train.epochs=3", "model.hidden=8"])
    assert cfg["train"]["epochs"] == 3 and cfg["model"]["hidden"] == 8
    with pytest.raises(ConfigError, match="no key"):
        apply_overrides(cfg, ["train.epochz=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides(cfg, ["epochs=3"])
    with pytest.raises(ConfigError, match="no such config"):
        load_training_config("cdvae", 3)


def test_train_predict_evaluate_from_the_command_line(small_store, tmp_path):
    tiny = ["--set", "model.hidden=16", "--set", "model.interactions=1", "--set", "train.epochs=2",
            "--set", "train.workers=0"]
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["train", "--task", "2", "--model", "cdvae", "--seed", "1", "--store",
                              str(small_store), "--out", str(runs), "-q", *tiny, "--set", "predict.batch_size=3"])
    assert res.exit_code == 0, res.output
    info = json.loads((runs / "cdvae-task2-seed1" / "run.json").read_text())
    assert info["epochs"] == 2 and info["time_per_epoch"] > 0
    preds = tmp_path / "t2.csv"
    res = runner.invoke(app, ["predict", "--checkpoint", str(runs / "cdvae-task2-seed1" / "last.ckpt"),
                              "--split", "ood", "--store", str(small_store), "--out", str(preds), "-q"])
    assert res.exit_code == 0, res.output
    # the config's [predict] batch size travels in the checkpoint (training batch: 16)
    assert json.loads((runs / "cdvae-task2-seed1" / "test_loss-ood.json").read_text())["batch_size"] == 3
    out = tmp_path / "r2.json"
    res = runner.invoke(app, ["evaluate", "--task", "2", "--split", "ood", "--predictions", str(preds),
                              "--store", str(small_store), "--run-info",
                              str(runs / "cdvae-task2-seed1" / "run.json"), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["model"] == "cdvae" and result["seed"] == 1
    assert result["time_per_epoch"] == pytest.approx(info["time_per_epoch"])
    assert 0 <= result["metrics"]["spacegroup_accuracy"] <= 1

    r1 = task1_cli_round_trip(small_store, runs, tmp_path, "symat",
                              [*tiny, "--set", "model.n_sigmas=2", "--set", "model.langevin_steps=1",
                               "--set", "train.val_radii=[9]"])
    assert r1["n_samples"] == 1 and r1["sample"] == {"per_radius": 1, "seed": 0}
    assert r1["metrics"]["rmsd"] > 0  # an untrained generator does not reproduce the particle

    res = runner.invoke(app, ["predict", "--checkpoint", str(tmp_path / "nope.ckpt"), "--split", "id",
                              "--out", str(preds), "--store", str(small_store)])
    assert res.exit_code == 2 and "no such checkpoint" in res.output


def test_site_fractions_put_every_atom_on_a_basis_site(records):
    """The whole-cell condition is consistent with the particle: each atom of a canonical
    particle, mapped into the conditioning cell, lands on a basis site of its species."""
    from c2np.models.components import site_fractions

    batch = COLLATE[1]([(r, -1) for r in records[:3]])
    frac = site_fractions(batch.pos.double(), batch.batch, batch.lattice.double(),
                          batch.origin.double()) % 1.0
    for g in range(batch.n_graphs):
        atoms = slice(int(batch.ptr[g]), int(batch.ptr[g + 1]))
        sites = batch.cell_pos[batch.cell_batch == g].double()
        site_z = batch.cell_z[batch.cell_batch == g]
        d = frac[atoms, None, :] - sites[None, :, :]
        d = (d - torch.round(d)).norm(dim=-1)  # (n, m) periodic distance to each site
        nearest = d.argmin(-1)
        assert float(d.min(-1).values.max()) < 1e-4
        assert torch.equal(site_z[nearest], batch.z[atoms])


def test_unit_cell_encoder_sees_positions_not_only_composition(records):
    """Permuting the basis atoms leaves the condition unchanged; moving one atom within
    the cell (same lattice, same composition) changes it."""
    from c2np.models.components import UnitCellEncoder

    torch.manual_seed(0)
    enc = UnitCellEncoder(16).eval()
    batch = COLLATE[1]([(records[0], -1)])
    args = (batch.cell_z, batch.cell_pos, batch.cell_batch, batch.lattice, batch.radius)
    ref = enc(*args)
    perm = torch.randperm(len(batch.cell_z))
    permuted = enc(batch.cell_z[perm], batch.cell_pos[perm], batch.cell_batch, batch.lattice, batch.radius)
    torch.testing.assert_close(permuted, ref, atol=1e-5, rtol=1e-5)
    moved = batch.cell_pos.clone()
    moved[0] = (moved[0] + torch.tensor([0.1, 0.0, 0.05])) % 1.0
    shifted = enc(batch.cell_z, moved, batch.cell_batch, batch.lattice, batch.radius)
    assert float((shifted - ref).abs().max().detach()) > 1e-3


def _graph_inputs(hidden: int = 16, n: int = 300):
    gen = torch.Generator().manual_seed(4)
    pos = torch.rand(n, 3, generator=gen) * 9
    ptr = torch.tensor([0, n // 3, n])
    edge_index = radius_edges(pos, ptr, 4.0)
    length = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1)
    return torch.randn(n, hidden, generator=gen, requires_grad=True), edge_index, length


def test_interact_equals_pyg_interaction_blocks():
    """SchNetEncoder.interact (one first-layer product, the envelope once, the softplus
    shift in the bias, index_select/index_add messages) computes PyG's InteractionBlock
    stack with the same weights: values and gradients of the input and of every weight."""
    from c2np.models.components import SchNetEncoder

    torch.manual_seed(0)
    enc = SchNetEncoder(hidden=16, interactions=3, cutoff=4.0, gaussians=8)
    h, edge_index, length = _graph_inputs()
    attr = enc.distance(length)
    assert edge_index.shape[1] > 1000

    def grads(out):
        enc.zero_grad()
        h.grad = None
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return [h.grad.clone()] + [p.grad.clone() for p in enc.blocks.parameters()]

    want = h
    for block in enc.blocks:
        want = want + block(want, edge_index, length, attr)
    got = enc.interact(h, edge_index[0], edge_index[1], length, attr)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(grads(got), grads(want), strict=True):  # sums over edges: compared as wholes
        assert float((g - w).norm() / w.norm()) < 1e-5
    assert not torch.allclose(got, h)  # the blocks do something


def test_undirected_pairs_join_each_edge_with_its_reverse():
    from c2np.models.graph import radius_edges_static, undirected_pairs

    gen = torch.Generator().manual_seed(5)
    pos = torch.cat([torch.rand(300, 3, generator=gen) * 12, torch.rand(40, 3, generator=gen) * 5 + 30])
    ptr = torch.tensor([0, 300, 340])
    edges = radius_edges(pos, ptr, 3.0)
    first, pair = undirected_pairs(edges, len(pos))
    assert edges.shape[1] > 1000 and len(first) == edges.shape[1] // 2
    assert torch.equal(torch.bincount(pair), torch.full((len(first),), 2))  # two directions a pair
    ends = edges[:, first][:, pair]
    assert torch.equal(ends.sort(0).values, edges.sort(0).values)  # the same two atoms
    assert not torch.equal(ends, edges)  # and one of the two edges the other way round
    # a padded batch (c2np.models.padding): padding atoms at the origin in a graph slot of
    # their own, the buffer's unused slots self-loops on the last one; the real edges keep their pairs
    pos = torch.cat([pos, torch.zeros(5, 3)])
    ptr = torch.tensor([0, 300, 340, 345])
    active = torch.cat([torch.ones(340), torch.zeros(5)])
    padded, overflow = radius_edges_static(pos, ptr, 3.0, active, 400 * len(pos), edges.shape[1] + 7)
    first, pair = undirected_pairs(padded, len(pos))
    real = padded[0] != padded[1]
    assert not overflow and int((~real).sum()) >= 7
    ends = padded[:, first][:, pair]
    assert torch.equal(ends[:, real].sort(0).values, padded[:, real].sort(0).values)


def test_undirected_pairs_sort_int32_keys_in_the_same_order(monkeypatch):
    """The pair keys are int32 while n_nodes ** 2 fits: the same pairs as int64 keys,
    which larger batches still take."""
    from c2np.models import graph
    from c2np.models.graph import undirected_pairs

    gen = torch.Generator().manual_seed(6)
    pos = torch.rand(500, 3, generator=gen) * 14
    edges = radius_edges(pos, torch.tensor([0, 500]), 3.0)
    keys = []
    real_argsort = torch.argsort
    monkeypatch.setattr(torch, "argsort", lambda key, **kw: keys.append(key.dtype) or real_argsort(key, **kw))
    narrow = undirected_pairs(edges, len(pos))
    bound = graph._INT32_KEYS
    monkeypatch.setattr(graph, "_INT32_KEYS", len(pos) ** 2 - 1)  # one node too many for int32
    wide = undirected_pairs(edges, len(pos))
    monkeypatch.setattr(graph, "_INT32_KEYS", bound)
    assert keys == [torch.int32, torch.int64]
    assert all(torch.equal(a, b) for a, b in zip(narrow, wide, strict=True))
    assert narrow[0].dtype == narrow[1].dtype == torch.int64  # indices, whatever the keys
    # at the bound: the largest keys of 46,340 nodes fit int32, of 46,341 they do not
    for n, dtype in ((46340, torch.int32), (46341, torch.int64)):
        ends = torch.tensor([[n - 1, n - 2, 0, n - 1], [n - 2, n - 1, n - 1, 0]])
        first, pair = undirected_pairs(ends, n)
        assert keys[-1] == dtype and torch.equal(pair, torch.tensor([1, 1, 0, 0])), n
        assert torch.equal(first, torch.tensor([2, 0])), n  # the stable order: the pair of node 0 first


def test_filters_once_per_pair_give_the_same_encoder():
    """SchNetEncoder.pair_filters: each filter computed for one direction of its pair gives
    the same atom features and gradients to float rounding (a matrix product over half the
    rows may round differently)."""
    from c2np.models.components import SchNetEncoder

    gen = torch.Generator().manual_seed(2)
    pos = torch.rand(800, 3, generator=gen) * 14
    ptr = torch.tensor([0, 500, 800])
    z = torch.randint(1, 40, (800,), generator=gen)
    torch.manual_seed(0)
    enc = SchNetEncoder(hidden=16, interactions=3, cutoff=4.0, gaussians=8)
    weights = torch.randn(800, 16, generator=gen)
    results = []
    for flag in (False, True):
        enc.pair_filters = flag
        enc.zero_grad()
        out = enc(z, pos, ptr)
        (out * weights).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in enc.parameters()]))
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):  # sums over edges: compared as wholes
        assert float((g - w).norm() / w.norm()) < 1e-5
    assert any(not torch.equal(g, w) for g, w in zip(got_grads, want_grads))  # summed in another order


def test_edge_mlp_equals_the_mlp_of_the_concatenated_edge_input():
    from c2np.models.components import edge_mlp, mlp

    torch.manual_seed(0)
    net = mlp(2 * 16 + 8, 16, 1)
    h, (src, tgt), length = _graph_inputs()
    attr = torch.randn(len(src), 8)
    want = net(torch.cat([h[src], h[tgt], attr], -1))
    got = edge_mlp(net, h, src, tgt, attr)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (gh,) = torch.autograd.grad(got.sum(), h)
    (wh,) = torch.autograd.grad(want.sum(), h)
    assert float((gh - wh).norm() / wh.norm()) < 1e-5


def test_a_plain_task1_batch_carries_the_cell_work(records):
    """collate_task1 ships the cells' atom pairs and inverse lattices (the model would make
    them on the device with six host waits): the same pairs, and the same loss."""
    from c2np.models.components import UnitCellEncoder

    batch = COLLATE[1]([(r, -1) for r in records[:3]])
    assert torch.equal(batch.cell_pairs, UnitCellEncoder.pairs(batch.cell_batch))
    torch.testing.assert_close(batch.lattice_inv @ batch.lattice, torch.eye(3).expand(3, 3, 3), atol=1e-5, rtol=0)
    cfg = load_training_config("cdvae", 1)["model"]
    torch.manual_seed(0)
    model = build_model("cdvae", 1, **({k: v for k, v in cfg.items() if k not in ("name", "task")} | TINY))
    bare = dataclasses.replace(batch, cell_pairs=None, lattice_inv=None)
    losses = []
    for b in (batch, bare):
        torch.manual_seed(7)
        losses.append(float(model.loss(b)["loss"]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_a_plain_cdvae_step_waits_twice_per_radius_graph(records):
    """The loss + backward of a plain CDVAE Task 1 batch (two radius graphs made on the
    device) has exactly four host waits: each graph's candidate count and the size of its
    selection within the cutoff."""
    from torch.profiler import ProfilerActivity, profile

    cfg = load_training_config("cdvae", 1)["model"]
    torch.manual_seed(0)
    model = build_model("cdvae", 1, **({k: v for k, v in cfg.items() if k not in ("name", "task")} | TINY))
    batch = COLLATE[1]([(r, -1) for r in records[:3]])
    model.loss(batch)["loss"].backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.loss(batch)["loss"].backward()
    names = [e.name for e in prof.events()]
    waits = {k: names.count(k) for k in ("aten::_local_scalar_dense", "aten::nonzero", "aten::bincount",
                                         "aten::_unique2", "aten::linalg_inv_ex")}
    assert waits == {"aten::_local_scalar_dense": 2, "aten::nonzero": 2, "aten::bincount": 0,
                     "aten::_unique2": 0, "aten::linalg_inv_ex": 0}


@pytest.mark.slow  # inductor's C++ code generation: 1.5 minutes on the 2-core dev machine
def test_compiled_interactions_do_not_recompile_after_warm_up(records):
    """train.compile = "edges": after the first two batches (inductor specialises a first
    graph to small edge counts), no batch of another atom or edge count compiles again,
    and the loss equals eager's to 1e-5."""
    from torch._dynamo.utils import counters

    from c2np.training.module import compile_interactions

    torch._dynamo.reset()
    counters.clear()
    cfg = load_training_config("cdvae", 1)["model"]
    torch.manual_seed(0)
    model = build_model("cdvae", 1, **({k: v for k, v in cfg.items() if k not in ("name", "task")}
                                      | TINY | {"interactions": 2}))
    pool = records * 4
    batches = [COLLATE[1]([(r, -1) for r in pool[:k]]) for k in (1, 3, 2, 6, 4)]
    eager = []
    for b in batches:
        torch.manual_seed(1)
        eager.append(float(model.loss(b)["loss"]))
    compile_interactions(model)
    graphs, sizes = [], []
    for b, want in zip(batches, eager):
        torch.manual_seed(1)
        got = model.loss(b)["loss"]
        got.backward()
        assert float(got) == pytest.approx(want, rel=1e-5)
        graphs.append(counters["stats"]["unique_graphs"])
        sizes.append(len(b.pos))
    assert len(set(sizes)) == 5
    assert graphs[1] <= 2 and graphs[-1] == graphs[1], graphs
    assert sum(counters["graph_break"].values()) == 0


def test_graph_minimum_is_the_scatter_minimum():
    """The cell list's per-graph lowest corner (a segmented reduction) equals the
    scatter minimum, with an empty graph (+inf) and graphs of one atom."""
    from c2np.models.graph import graph_index, graph_minimum

    gen = torch.Generator().manual_seed(4)
    p = torch.randn(500, 3, generator=gen) * 7
    ptr = torch.tensor([0, 1, 200, 200, 499, 500])
    graph = graph_index(ptr, len(p))
    want = torch.full((5, 3), float("inf")).scatter_reduce(0, graph.view(-1, 1).expand(-1, 3), p, "amin")
    got = graph_minimum(p, graph, ptr)
    assert torch.equal(got, want) and torch.isinf(got[2]).all()
