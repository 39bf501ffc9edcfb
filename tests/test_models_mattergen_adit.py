"""The MatterGen and ADiT families on the CPU: tiny models learn, Task 2 is rotation-invariant,
Task 1 follows the conditioning cell's frame, sampling is seeded and fills the sphere with
the cell's species, large particles run, and the CLI goes from training to a score."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

pytest.importorskip("pytorch_lightning")

from c2np.cli import app  # noqa: E402
from c2np.models.batches import Task1Batch  # noqa: E402
from c2np.models.registry import build_model, last_stage  # noqa: E402
from c2np.store.dataset import open_dataset  # noqa: E402
from c2np.training.configs import load_training_config  # noqa: E402
from c2np.training.data import COLLATE, load_records  # noqa: E402
from model_checks import check_generative_task2, fit_fixed_batch, lattice_draws_and_range  # noqa: E402

runner = CliRunner()
FAMILIES = ["mattergen", "adit"]
# tiny widths and short samplers: the behaviour, not the quality, is under test
TINY = {
    ("mattergen", 1): {"hidden": 16, "blocks": 2, "cutoff": 4.0, "max_neighbors": 12, "gaussians": 8,
                       "steps": 4, "guidance": 2.0},
    ("mattergen", 2): {"hidden": 16, "interactions": 1, "gaussians": 8, "steps": 5, "samples": 2},
    ("adit", 1): {"hidden": 16, "heads": 2, "layers": 1, "vae_layers": 1, "steps": 4, "guidance": 2.0},
    ("adit", 2): {"hidden": 16, "heads": 2, "encoder_layers": 1, "layers": 1, "interactions": 1,
                  "gaussians": 8, "steps": 5, "samples": 2},
}
ROT = torch.tensor(Rotation.from_euler("xyz", [20, 50, 80], degrees=True).as_matrix(), dtype=torch.float32)


def tiny(name: str, task: int, **extra):
    cfg = load_training_config(name, task)["model"]
    params = {k: v for k, v in cfg.items() if k not in ("name", "task")} | TINY[name, task] | extra
    torch.manual_seed(0)
    return build_model(name, task, **params)


def untied(model):
    """Zero-initialised output layers (adaLN-Zero, MatterGen's head) make an untrained model
    ignore its noise; give them weights, as training would, and take a staged model (ADiT's
    VAE, then DiT) to its last stage, the one that generates."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0.0, 0.3)
    return last_stage(model)


def rotated_with_cell(batch: Task1Batch) -> Task1Batch:
    """The same particle and conditioning cell, both rotated by ROT."""
    return Task1Batch(**{**batch.__dict__, "lattice": batch.lattice @ ROT.T, "lattice_inv": None, "pos": batch.pos @ ROT.T})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: thread hand-offs cost more than they save on a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_registered_family_has_both_configs_and_the_cli_lists_it():
    from c2np.models.registry import MODELS
    from c2np.training.configs import bundled_models

    assert bundled_models() == sorted(MODELS)
    for name in FAMILIES:
        for task in (1, 2):
            assert load_training_config(name, task)["model"]["name"] == name
    res = runner.invoke(app, ["train", "--help"])
    assert all(name in res.output for name in MODELS)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("task", [1, 2])
def test_tiny_model_loss_goes_down(records, name, task):
    model = tiny(name, task)
    batch = COLLATE[task]([(r, 0 if task == 2 else -1) for r in records])
    if task == 2:
        model.fit_targets(batch.lattice, batch.spacegroup)

    def loss_at_fixed_noise() -> float:
        torch.manual_seed(123)  # the same times, noise, masks and condition dropout every time
        return float(model.loss(batch)["loss"].detach())

    before = loss_at_fixed_noise()
    out = fit_fixed_batch(model, batch, 40)
    assert all(torch.isfinite(v).all() for v in out.values())
    after = loss_at_fixed_noise()
    # part of each loss is irreducible (noise at large t, the species entropy): ask for 10%
    assert after < 0.9 * before, (before, after)


@pytest.mark.parametrize("name", FAMILIES)
def test_task2_prediction_is_rotation_invariant_and_seeded(records, name):
    check_generative_task2(untied(tiny(name, 2)).eval(), records, atol=1e-4)


def test_mattergen_lattice_draws_stay_near_the_training_range(records):
    """clip_x0 keeps the VP predictor-corrector on the data's support (the last Euler step
    may move a little past the clipped estimate); unclipped, the same untrained network
    leaves it by far."""
    draws, lo, hi = lattice_draws_and_range(untied(tiny("mattergen", 2, clip_x0=True)), records)
    assert bool(((draws >= lo - 5) & (draws <= hi + 5)).all())
    plain, _, _ = lattice_draws_and_range(untied(tiny("mattergen", 2, clip_x0=False)), records)
    assert float(plain.abs().max()) > 20


def test_mattergen_denoiser_rotates_with_particle_and_cell(records):
    """Noise prediction equivariant, species logits invariant when particle and cell rotate
    together; the cell's frame matters (rotating the particle alone changes the output)."""
    model = tiny("mattergen", 1).eval()
    batch = COLLATE[1]([(r, -1) for r in records[:2]])
    rotated = rotated_with_cell(batch)
    t = torch.full((batch.n_graphs,), 0.3)
    keep = torch.ones(batch.n_graphs, dtype=torch.bool)
    with torch.no_grad():
        eps0, logits0 = model.denoise(batch, batch.pos, batch.z, t, model.cell_condition(batch), keep)
        eps1, logits1 = model.denoise(rotated, rotated.pos, batch.z, t, model.cell_condition(rotated), keep)
        eps_frame, _ = model.denoise(batch, rotated.pos, batch.z, t, model.cell_condition(batch), keep)
    assert eps0.abs().max() > 0
    torch.testing.assert_close(eps1, eps0 @ ROT.T, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(logits1, logits0, atol=1e-4, rtol=1e-3)
    assert float((eps_frame - eps0 @ ROT.T).abs().max()) > 1e-4


def test_adit_works_in_the_cells_frame(records):
    """ADiT's coordinates live in the cell's frame: the VAE reconstruction and a whole seeded
    generation rotate exactly with particle and cell."""
    model = untied(tiny("adit", 1)).eval()
    batch = COLLATE[1]([(r, -1) for r in records[:2]])
    rotated = rotated_with_cell(batch)
    with torch.no_grad():
        lat0 = model.reconstruction(batch)["latents"]
        lat1 = model.reconstruction(rotated)["latents"]
    torch.testing.assert_close(lat1, lat0, atol=1e-4, rtol=1e-4)
    for (z0, p0), (z1, p1) in zip(model.generate(batch, seed=2), model.generate(rotated, seed=2)):
        np.testing.assert_array_equal(z0, z1)
        np.testing.assert_allclose(p1, p0 @ ROT.T.numpy().astype(np.float64), atol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_seeded_generation_fills_the_sphere_with_the_cells_species(records, name):
    model = untied(tiny(name, 1)).eval()
    batch = COLLATE[1]([(r, -1) for r in records[:2]])
    a = model.generate(batch, seed=3)
    b = model.generate(batch, seed=3)
    c = model.generate(batch, seed=4)
    with torch.no_grad():
        log_n, _ = model.size_and_species(batch, model.cell_condition(batch), torch.zeros(2, 0))
    for (z, pos), rec, ln in zip(a, records[:2], log_n):
        assert len(z) == len(pos) == int(np.rint(np.exp(float(ln))))  # the predicted count
        assert set(np.unique(z)) <= set(np.unique(rec.cell_numbers))
        assert np.all(np.linalg.norm(pos, axis=1) <= rec.radius + 1e-4)
    for (z1, p1), (z2, p2) in zip(a, b):
        np.testing.assert_array_equal(z1, z2)
        np.testing.assert_array_equal(p1, p2)
    assert not np.allclose(a[0][1], c[0][1])


def test_adit_logs_its_vae_reconstruction(records):
    """The VAE's reconstruction RMSD (Angstrom) is part of every training loss dict, and it
    falls as the VAE trains."""
    model = tiny("adit", 1)
    batch = COLLATE[1]([(r, -1) for r in records])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(30):
        torch.manual_seed(step)
        opt.zero_grad()
        out = model.loss(batch)
        first = float(out["recon_rmsd"]) if first is None else first
        out["loss"].backward()
        opt.step()
    with torch.no_grad():
        final = float(model.reconstruction(batch)["recon_rmsd"])
    assert {"recon_rmsd", "types", "latent_kl"} <= set(out) and "flow" not in out  # the VAE stage
    assert final < 0.7 * first, (first, final)


def test_adit_trains_its_vae_then_its_dit_on_the_frozen_vae(records):
    """ADiT's order: the VAE stage gives the DiT no gradient; the DiT stage gives the VAE
    (and the cell conditioning it reads) none, and adds the flow loss."""
    model = tiny("adit", 1)
    batch = COLLATE[1]([(r, -1) for r in records])
    vae = {id(p) for p in model.vae_parameters()}
    dit = [p for p in model.denoiser.parameters()]

    def grads():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        out = model.loss(batch)
        out["loss"].backward()
        return out

    out = grads()
    assert int(model.stage) == 0 and "flow" not in out
    assert all(p.grad is None for p in dit)
    assert all(p.grad is not None for p in model.vae_parameters())
    assert model.advance_stage() and int(model.stage) == 1 and not model.advance_stage()
    out = grads()
    assert "flow" in out and float(out["loss"]) > float(out["flow"]) > 0
    assert all(p.grad is None for p in model.vae_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in dit)
    others = [p for p in model.parameters() if id(p) not in vae]
    assert all(p.grad is not None for p in model.size_head.parameters()) and others
    assert "stage" in model.state_dict()  # a checkpoint knows its stage


def test_adit_refuses_to_generate_before_its_dit_has_trained(records):
    from c2np.errors import ConfigError

    model = tiny("adit", 1).eval()
    batch = COLLATE[1]([(records[0], -1)])
    with pytest.raises(ConfigError, match="still in its VAE stage"):
        model.generate(batch, seed=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_large_particle_trains_and_generates(small_store, name):
    """Forward + backward and one generation with a several-thousand-atom particle in the
    batch: every atom is generated, nothing is subsampled."""
    big = load_records(open_dataset(small_store), "ood", materials=["KMgH3"], radii=[30])
    small = load_records(open_dataset(small_store), "train", materials=["LiBeH3"], radii=[8])
    batch = COLLATE[1]([(big[0], -1), (small[0], -1)])
    assert batch.ptr[1] > 5000
    model = tiny(name, 1, steps=1, guidance=1.0)
    while True:  # every training stage (ADiT: its VAE, then its DiT) on the large particle
        out = model.loss(batch)
        out["loss"].backward()
        assert torch.isfinite(out["loss"])
        if not (hasattr(model, "advance_stage") and model.advance_stage()):
            break
    model.eval()
    # the size head is untrained: ask for the target's size by biasing log N
    with torch.no_grad():
        bias = batch.log_n - model.size_and_species(batch, model.cell_condition(batch), torch.zeros(2, 0))[0]
        model.size_head[-1].bias[0] += float(bias[0])
        (z, pos), _ = model.generate(batch, seed=0)
    assert abs(len(z) - int(batch.ptr[1])) <= 0.05 * int(batch.ptr[1])
    assert np.isfinite(pos).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_train_predict_evaluate_from_the_command_line(small_store, tmp_path, name):
    runs = tmp_path / "runs"
    sets = {1: TINY[name, 1] | {"steps": 2}, 2: TINY[name, 2]}
    for task, split in [(2, "ood"), (1, "id")]:
        args = [f"--set=model.{k}={v}" for k, v in sets[task].items()]
        epochs = 3 if (name, task) == ("adit", 1) else 2
        args += ["--set", f"train.epochs={epochs}", "--set", "train.radii=[8]"]
        if task == 1:  # Task 1 validates on a held-out training radius (9 of the small store's 8, 9)
            args[-1] = "train.radii=[8, 9]"
            args += ["--set", "train.val_radii=[9]"]
        if (name, task) == ("adit", 1):  # its VAE stage ends after epoch 1, so that the DiT trains in epoch 2
            args += ["--set", "train.patience=1", "--set", "train.rel_tol=10"]
        res = runner.invoke(app, ["train", "--task", str(task), "--model", name, "--store", str(small_store),
                                  "--out", str(runs), "-q", *args])
        assert res.exit_code == 0, res.output
        run = runs / f"{name}-task{task}-seed0"
        info = json.loads((run / "run.json").read_text())
        assert info["epochs"] == epochs and info["parameters"] > 0
        preds = tmp_path / f"t{task}.{'parquet' if task == 1 else 'csv'}"
        sample = ["--sample", "1"] if task == 1 else []
        res = runner.invoke(app, ["predict", "--checkpoint", str(run / "last.ckpt"), "--split", split,
                                  "--store", str(small_store), "--out", str(preds), "-q", *sample])
        assert res.exit_code == 0, res.output
        out = tmp_path / f"r{task}.json"
        res = runner.invoke(app, ["evaluate", "--task", str(task), "--split", split, "--predictions",
                                  str(preds), "--store", str(small_store), "--run-info", str(run / "run.json"),
                                  "--out", str(out), "-q", "-j", "1", *sample])
        assert res.exit_code == 0, res.output
        result = json.loads(out.read_text())
        assert result["model"] == name
        if task == 1:
            assert result["n_samples"] == 1 and result["metrics"]["rmsd"] > 0
        else:
            assert 0 <= result["metrics"]["spacegroup_accuracy"] <= 1


def test_mattergen_corrector_step_is_capped_and_survives_a_zero_score():
    """MatterGen's Langevin corrector caps its step (max_step_size): without the cap a zero
    noise prediction (an atom with no neighbour in reach) made the step ~1e23 and the
    particle fly apart."""
    from c2np.models.mattergen import capped_langevin_step

    batch = torch.tensor([0, 0, 1, 1])
    atoms = torch.tensor([2.0, 2.0])

    def norm(v):
        return torch.sqrt(torch.zeros(2).index_add_(0, batch, (v ** 2).sum(-1)) / atoms)

    x, noise = torch.zeros(4, 3), torch.ones(4, 3)
    cap = torch.tensor([4.0, 9.0])
    score = torch.cat([torch.zeros(2, 3), torch.full((2, 3), 10.0)])  # graph 0: zero score
    out = capped_langevin_step(x, score, noise, norm, batch, 0.4, cap)
    torch.testing.assert_close(out[:2], torch.full((2, 3), 8.0 ** 0.5))  # the cap, noise only
    step = 2 * (0.4 * 3 ** 0.5 / 300 ** 0.5) ** 2  # SNR step, below the cap
    torch.testing.assert_close(out[2:], torch.full((2, 3), step * 10 + (2 * step) ** 0.5))
    huge = capped_langevin_step(x, torch.full((4, 3), 1e-9), noise, norm, batch, 0.4, cap)
    # a tiny score: the capped step (sqrt(2 cap) of noise), not an uncapped ~1e17
    torch.testing.assert_close(huge, torch.cat([torch.full((2, 3), 8.0 ** 0.5), torch.full((2, 3), 18.0 ** 0.5)]))


@pytest.mark.parametrize("centre", [False, True])
def test_mattergen_pulls_an_atom_with_no_neighbours_only_through_the_centre_vector(records, centre):
    """An atom out of every neighbour's reach has no message: its noise prediction is zero
    unless the denoiser sees its position from the particle's centre, and then it is radial
    (rotation equivariance leaves no other direction)."""
    model = untied(tiny("mattergen", 1, centre_vector=centre)).eval()
    batch = COLLATE[1]([(records[0], -1)])
    pos = batch.pos.clone()
    pos[0] = torch.tensor([30.0, -20.0, 45.0])  # far outside the particle and the cutoff
    with torch.no_grad():
        cond = model.cell_condition(batch)
        t = torch.full((1,), 0.9)
        eps, _ = model.denoise(batch, pos, batch.z, t, cond, torch.ones(1, dtype=torch.bool))
    if not centre:
        assert float(eps[0].abs().max()) == 0.0
    else:
        assert float(eps[0].norm()) > 1e-3
        cos = torch.nn.functional.cosine_similarity(eps[0], pos[0], dim=0)
        assert abs(float(cos)) > 1 - 1e-5


def test_ragged_attention_in_bf16_is_fp32_attention_to_bf16_rounding():
    """``dtype``: the kernels see q, k, v in bf16 and the caller gets fp32 back, close to the
    fp32 attention (bf16 keeps 8 bits of mantissa), on the batched and the ragged path."""
    from c2np.models.adit import ragged_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(30, 2, 8, generator=g) for _ in range(3))
    for ptr in (torch.tensor([0, 15, 30]), torch.tensor([0, 7, 30])):
        exact = ragged_attention(q, k, v, ptr)
        half = ragged_attention(q, k, v, ptr, torch.bfloat16)
        assert half.dtype == torch.float32 and half.shape == exact.shape
        err = (half - exact).abs().max().item()
        assert 0 < err < 0.05, err  # rounded, not another attention (entries of order 1)
        assert torch.equal(ragged_attention(q, k, v, ptr, torch.float32), exact)


@pytest.fixture(scope="module")
def adit_checkpoint(small_store, tmp_path_factory):
    """A tiny ADiT Task 1 run past its VAE stage, so that it generates."""
    runs = tmp_path_factory.mktemp("adit-runs")
    args = [f"--set=model.{k}={v}" for k, v in (TINY["adit", 1] | {"steps": 2}).items()]
    args += ["--set", "train.epochs=3", "--set", "train.radii=[8, 9]", "--set", "train.val_radii=[9]",
             "--set", "train.patience=1", "--set", "train.rel_tol=10"]
    res = runner.invoke(app, ["train", "--task", "1", "--model", "adit", "--store", str(small_store),
                              "--out", str(runs), "-q", *args])
    assert res.exit_code == 0, res.output
    return runs / "adit-task1-seed0" / "last.ckpt"


def test_adit_generates_with_bf16_attention_and_never_mixes_it_with_fp32(adit_checkpoint, small_store, tmp_path,
                                                                       monkeypatch):
    """`c2np predict --attention bf16`: every attention kernel of the generation gets bf16,
    every one of the test Loss fp32 (so the Loss equals fp32's); the particles have the same
    sizes and nearly the same atoms; the chunk manifest records it, so --resume refuses to
    continue an fp32 folder in bf16."""
    import pandas as pd

    from c2np.training import predict as predict_mod

    seen: list[torch.dtype] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, *a, **k):
        seen.append(q.dtype)
        return sdpa(q, *a, **k)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    args = ["predict", "--checkpoint", str(adit_checkpoint), "--split", "id", "--store", str(small_store), "-q",
            "--batch-size", "1"]
    loss_file = adit_checkpoint.parent / "test_loss-id.json"
    out = {}
    for attention in ("fp32", "bf16"):
        seen.clear()
        out[attention] = tmp_path / f"{attention}.parquet"
        res = runner.invoke(app, [*args, "--out", str(out[attention]), "--attention", attention])
        assert res.exit_code == 0, res.output
        out[attention, "loss"] = json.loads(loss_file.read_text())["loss"]
        out[attention, "dtypes"] = list(seen)
        made = json.loads((adit_checkpoint.parent / "prediction-id.json").read_text())
        assert (made["attention"], made["file"], made.get("compile")) == (attention, f"{attention}.parquet", None)
    assert set(out["fp32", "dtypes"]) == {torch.float32}
    dtypes = out["bf16", "dtypes"]
    first = dtypes.index(torch.bfloat16)  # the test loss runs first, then the generation
    assert first > 0 and set(dtypes[:first]) == {torch.float32} and set(dtypes[first:]) == {torch.bfloat16}
    assert out["bf16", "loss"] == out["fp32", "loss"]
    a, b = pd.read_parquet(out["fp32"]), pd.read_parquet(out["bf16"])
    assert a.groupby("config_id").size().to_dict() == b.groupby("config_id").size().to_dict()
    shift = (a[["x", "y", "z"]].to_numpy() - b[["x", "y", "z"]].to_numpy())
    assert 0 < np.abs(shift).max() < 0.05 * np.abs(a[["x", "y", "z"]].to_numpy()).max()
    assert all(blk.attention_dtype is None for blk in predict_mod.load_module(adit_checkpoint).model.modules()
               if hasattr(blk, "attention_dtype"))

    class Killed(Exception):
        pass

    real, calls = predict_mod.generate_particles, []

    def stop_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*a, **k)

    resumed = tmp_path / "resumed.parquet"
    with monkeypatch.context() as m:
        m.setattr(predict_mod, "generate_particles", stop_second)
        res = runner.invoke(app, [*args, "--out", str(resumed), "--resume"])
    assert isinstance(res.exception, Killed)
    res = runner.invoke(app, [*args, "--out", str(resumed), "--resume", "--attention", "bf16"])
    assert res.exit_code == 2 and "(attention None there, 'bf16' now)" in res.output, res.output


def test_bf16_attention_is_refused_where_there_is_no_attention(adit_checkpoint, small_store, tmp_path):
    """An unknown precision, and bf16 for a model without transformer attention (SyMat Task
    1), are refused with a clear message before anything is written."""
    base = ["predict", "--checkpoint", str(adit_checkpoint), "--split", "id", "--store", str(small_store), "-q",
            "--out", str(tmp_path / "x.parquet")]
    res = runner.invoke(app, [*base, "--attention", "fp16"])
    assert res.exit_code == 2 and "choose one of fp32, bf16" in res.output, res.output
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["train", "--task", "1", "--model", "symat", "--store", str(small_store), "--out",
                              str(runs), "-q", "--set", "model.hidden=16", "--set", "model.interactions=1",
                              "--set", "model.gaussians=8", "--set", "model.n_sigmas=2",
                              "--set", "model.langevin_steps=1", "--set", "train.workers=0",
                              "--set", "train.epochs=1", "--set", "train.val_radii=[9]"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base[:2], str(runs / "symat-task1-seed0" / "best.ckpt"), *base[3:],
                              "--attention", "bf16"])
    assert res.exit_code == 2 and "not to SyMatTask1 (Task 1)" in res.output, res.output
    assert not (tmp_path / "x.parquet").exists()


def test_attention_benchmark_compares_both_precisions_and_leaves_the_run_alone(adit_checkpoint, small_store,
                                                                             tmp_path, capsys):
    """benchmarks/adit_attention.py: a row per precision and split, the paired comparison,
    JSON lines, and the run's folder as it was (it works on a copy of the checkpoint)."""
    from benchmark_scripts import load_benchmark

    before = {p.name: p.stat().st_mtime_ns for p in adit_checkpoint.parent.iterdir()}
    out = tmp_path / "rows.jsonl"
    load_benchmark("adit_attention").main([str(adit_checkpoint), "--store", str(small_store), "--splits", "id",
                                           "--sample", "1", "--jobs", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert "| id | bf16 |" in text and "| id | fp32 |" in text and "same scores" in text
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("attention") for r in lines[:2]] == ["bf16", "fp32"] and lines[0]["particles"] >= 1
    assert lines[0]["atoms"] > 0 and lines[0]["seconds"] > 0 and np.isfinite(lines[0]["rmsd_mean"])
    comparison = lines[2]["comparison"]
    assert comparison["split"] == "id" and comparison["speedup"] > 0 and isinstance(comparison["same_scores"], bool)
    assert {p.name: p.stat().st_mtime_ns for p in adit_checkpoint.parent.iterdir()} == before


def test_attention_benchmark_times_cpu_over_the_samplers_batches_only(monkeypatch):
    """benchmarks/adit_attention.py's CPU seconds cover the same batches as its wall seconds:
    work outside a sampler batch (reading the store, loading the model) is not counted. In
    s24 they covered the whole predict() call, so bf16's first OOD pass read 147 CPU-s."""
    from benchmark_scripts import load_benchmark

    from c2np.training import predict as predict_mod

    def burn(seconds: float) -> None:
        start = time.process_time()
        while time.process_time() - start < seconds:
            pass

    def sampler(model, device, chunk, seed, skin):
        burn(0.05)
        return "particles"

    monkeypatch.setattr(predict_mod, "generate_particles", sampler)
    wall, cpu = [], []
    timed = load_benchmark("adit_attention").timed_generation(wall, cpu)
    burn(0.2)  # outside a batch
    assert timed(None, torch.device("cpu"), None, 0, 1.0) == "particles"
    assert len(wall) == len(cpu) == 1 and 0.05 <= cpu[0] < 0.2 and wall[0] > 0

