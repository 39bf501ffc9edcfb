"""Learned baselines on the CPU: tiny models learn, are invariant/equivariant, and their
predictions go through the same harness as the reference solvers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

pytest.importorskip("pytorch_lightning")

from c2np.cli import app  # noqa: E402
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
    rotated = Task1Batch(**{**batch.__dict__, "lattice": batch.lattice @ rot.T})
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
                              str(small_store), "--out", str(runs), "-q", *tiny])
    assert res.exit_code == 0, res.output
    info = json.loads((runs / "cdvae-task2-seed1" / "run.json").read_text())
    assert info["epochs"] == 2 and info["time_per_epoch"] > 0
    preds = tmp_path / "t2.csv"
    res = runner.invoke(app, ["predict", "--checkpoint", str(runs / "cdvae-task2-seed1" / "last.ckpt"),
                              "--split", "ood", "--store", str(small_store), "--out", str(preds), "-q"])
    assert res.exit_code == 0, res.output
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
