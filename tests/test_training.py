"""Training protocol on the CPU: the cell-list radius graph, size-bucketed batches, the
validation split, convergence and stopping, resuming, and the Loss column from
`c2np predict` to the report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("pytorch_lightning")

from c2np.cli import app  # noqa: E402
from c2np.models.graph import radius_edges  # noqa: E402
from c2np.store.dataset import open_dataset  # noqa: E402
from c2np.training.data import BucketBatchSampler, RecordDataset, load_records, split_validation  # noqa: E402

runner = CliRunner()
TINY = ["--set", "model.hidden=16", "--set", "model.interactions=1", "--set", "model.gaussians=8",
        "--set", "train.workers=0"]
TINY_T1 = [*TINY, "--set", "model.n_sigmas=2", "--set", "model.langevin_steps=1", "--set", "train.val_radii=[9]"]


def brute_force(pos: torch.Tensor, ptr: torch.Tensor, cutoff: float) -> set[tuple[int, int]]:
    out = set()
    bounds = ptr.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        d = torch.cdist(pos[a:b].double(), pos[a:b].double())
        tgt, src = (d < cutoff).nonzero(as_tuple=True)
        keep = tgt != src
        out |= set(zip((src[keep] + a).tolist(), (tgt[keep] + a).tolist()))
    return out


@pytest.mark.parametrize("cutoff", [0.7, 2.0, 4.0, 9.0])
def test_cell_list_radius_graph_equals_brute_force(cutoff):
    gen = torch.Generator().manual_seed(int(cutoff * 10))
    # graphs of different extents and offsets, an empty one and a single atom at the boundaries
    parts = [torch.rand(40, 3, generator=gen) * 3 - 50, torch.empty(0, 3), torch.randn(300, 3, generator=gen) * 6,
             torch.rand(1, 3, generator=gen), torch.rand(250, 3, generator=gen) * 25 + 100]
    pos = torch.cat(parts)
    ptr = torch.tensor(np.cumsum([0] + [len(p) for p in parts]))
    edges = radius_edges(pos, ptr, cutoff)
    got = list(zip(*edges.tolist()))
    assert len(got) == len(set(got))  # no duplicate edges
    want = brute_force(pos, ptr, cutoff)
    assert set(got) == want and len(want) > 0
    assert torch.equal(edges, radius_edges(pos, ptr, cutoff))  # deterministic


@pytest.mark.parametrize("cutoff", [0.7, 4.0])
def test_graphs_of_several_position_sets_are_each_sets_own(cutoff):
    """radius_edges_sets: one cell list for a particle and its perturbed copies gives each
    set's radius_edges, edge for edge and in order; also a copy spread so far that it has
    no edges at all, and one that sits before the first set in space."""
    from c2np.models.graph import radius_edges_sets

    gen = torch.Generator().manual_seed(3)
    parts = [torch.randn(300, 3, generator=gen) * 6, torch.rand(1, 3, generator=gen), torch.empty(0, 3),
             torch.rand(120, 3, generator=gen) * 8 + 40]
    pos = torch.cat(parts)
    ptr = torch.tensor(np.cumsum([0] + [len(p) for p in parts]))
    sets = [pos, pos + 0.3 * torch.randn(pos.shape, generator=gen), pos * 1000.0, pos - 500.0]
    got = radius_edges_sets(sets, ptr, cutoff)
    for edges, p in zip(got, sets):
        assert torch.equal(edges, radius_edges(p, ptr, cutoff))
    assert got[0].shape[1] > 0 and got[2].shape[1] == 0
    spread = radius_edges_sets([pos * 1000.0, pos], ptr, cutoff)  # the first set without an edge
    assert spread[0].shape[1] == 0 and torch.equal(spread[1], got[0])
    assert radius_edges_sets([], ptr, cutoff) == []


def test_radius_graph_of_nothing():
    assert radius_edges(torch.empty(0, 3), torch.tensor([0]), 4.0).shape == (2, 0)
    assert radius_edges(torch.zeros(1, 3), torch.tensor([0, 1]), 4.0).shape == (2, 0)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [True, False])
def test_bucketing_covers_every_sample_once(world, shuffle):
    sizes = np.random.default_rng(1).integers(45, 18004, 203)
    seen = []
    per_rank = []
    for rank in range(world):
        s = BucketBatchSampler(list(sizes), batch_size=6, shuffle=shuffle, seed=4, rank=rank, world=world,
                               pool=4, epoch_in_index=False)
        s.set_epoch(3)
        batches = list(s)
        per_rank.append(len(batches))
        seen += [i for b in batches for i in b]
    assert len(set(per_rank)) == 1  # every rank steps the same number of times (DDP)
    dropped = 203 % 6 if 0 < 203 % 6 < world else 0  # a last batch too small to deal out
    assert len(seen) == len(set(seen)) == 203 - dropped
    # each global batch is a contiguous run of its pool sorted by size
    s = BucketBatchSampler(list(sizes), 6, shuffle, 4, pool=1000, epoch_in_index=False)
    ranks = np.argsort(np.argsort(sizes, kind="stable"), kind="stable")
    for b in s.global_batches():
        assert np.ptp(ranks[b]) == len(b) - 1


def test_bucketing_epochs_differ_and_indices_carry_the_epoch():
    s = BucketBatchSampler(list(range(50)), 5, True, 0)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(i for b in e0 for i in b) == list(range(50))
    assert sorted(i for b in e1 for i in b) == list(range(50, 100))  # epoch * n + i
    assert [[i - 50 for i in b] for b in e1] != e0


def test_lightning_advances_the_bucket_sampler_every_epoch():
    """Lightning calls ``set_epoch`` on ``loader.sampler`` and ``loader.batch_sampler.sampler``,
    never on the batch sampler itself: without a way in, every epoch of ``c2np train`` was
    epoch 0 (the same batches, and Task 2 the same rotation of each record, every epoch)."""
    import pytorch_lightning as pl

    from c2np.training.data import record_loader

    seen: list[list[int]] = []

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            seen[-1] += [int(i) for i in batch[2]]  # RecordDataset's item index: epoch * n + i
            return (self.w - 1).square().sum()

        def on_train_epoch_start(self):
            seen.append([])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), 0.1)

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, index):
            return None, -1, int(index)  # what RecordDataset yields: (record, rotation, index)

    loader = record_loader(2, Items(), list(range(1, 41)), 4, True, 0, epoch_in_index=True)
    loader.collate_fn = lambda items: (None, None, torch.tensor([i for _, _, i in items]))
    pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu").fit(Recorder(), loader)
    assert [sorted(e) for e in seen] == [list(range(40 * k, 40 * (k + 1))) for k in range(3)]
    assert [i % 40 for i in seen[0]] != [i % 40 for i in seen[1]]  # a new shuffle


def test_tf32_setting_holds_inside_the_fit_only(small_store, tmp_path, monkeypatch):
    """train.tf32: PyTorch's tf32 flags are on while the model trains (Inductor reads them
    when it compiles, inside the fit) and put back afterwards; the config records it."""
    import pytorch_lightning as pl

    seen = []
    fit = pl.Trainer.fit

    def spy(self, *args, **kwargs):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "fit", spy)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    for on in (True, False):
        res = CliRunner().invoke(app, ["train", "--task", "2", "--model", "cdvae", "--store", str(small_store),
                                       "--out", str(tmp_path / str(on)), "-q", "--set", "train.epochs=1",
                                       "--set", "train.limit=2", "--set", "model.hidden=8",
                                       "--set", f"train.tf32={str(on).lower()}"])
        assert res.exit_code == 0, res.output
        info = json.loads((tmp_path / str(on) / "cdvae-task2-seed0" / "run.json").read_text())
        assert info["config"]["train"]["tf32"] is on
    assert seen == [(True, True), (False, False)]
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.fixture(scope="module")
def ds(small_store):
    return open_dataset(small_store)


def test_validation_split_is_disjoint(ds):
    records = load_records(ds, "train")
    eval_radii = set(ds.index.loc[ds.index["split"] != "train", "radius"])
    assert not eval_radii & {r.radius for r in records}
    split = split_validation(records, [9], 0.0, seed=0)
    assert {r.radius for r, _ in split.val} == {9} and {r.radius for r in split.train} == {8}
    split = split_validation(records, [], 0.1, seed=0)
    assert len(split.val) == len(split.train) == len(records)
    dataset = RecordDataset(split.train, rotate=True, seed=0, rotations=split.rotations)
    for i, (rec, held) in enumerate(split.val):
        allowed = set(split.rotations[i].tolist())
        assert held not in allowed and len(allowed) == len(rec.quaternions) - 6  # 10 % of 59-60
        drawn = {dataset[epoch * len(dataset) + i][1] for epoch in range(40)}
        assert drawn <= allowed
    again = split_validation(records, [], 0.1, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(split.rotations, again.rotations))
    with pytest.raises(ValueError, match="not training radii"):
        split_validation(records, [10], 0.0, seed=0)


def _train(small_store, runs, *extra, task=2, model="cdvae", tiny=None):
    tiny = (TINY if task == 2 else TINY_T1) if tiny is None else tiny
    args = ["train", "--task", str(task), "--model", model, "--store", str(small_store), "--out", str(runs), "-q",
            *tiny, *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads((runs / f"{model}-task{task}-seed0" / "run.json").read_text())


def _epochs(run) -> list[int]:
    with (run / "metrics.csv").open() as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_early_stopping_fires_on_a_flat_curve(small_store, tmp_path):
    # lr = 0: the weights never change, so the (seeded) validation loss is flat
    info = _train(small_store, tmp_path, "--set", "train.lr=0", "--set", "train.patience=2",
                  "--set", "train.epochs=50")
    assert info["converged"] and info["stop_reason"] == "converged"
    assert info["best_epoch"] == 0 and info["converged_epoch"] == 2 and info["epochs"] == 3
    run = tmp_path / "cdvae-task2-seed0"
    assert (run / "best.ckpt").exists() and (run / "last.ckpt").exists() and (run / "curves.png").exists()
    with (run / "metrics.csv").open() as f:
        val = [float(r["val_loss"]) for r in csv.DictReader(f)]
    assert len(set(val)) == 1
    # best.ckpt is for prediction only (weights and hyper-parameters), last.ckpt for resuming
    best = torch.load(run / "best.ckpt", map_location="cpu", weights_only=False)
    last = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    assert "optimizer_states" not in best and last["optimizer_states"]
    assert best["hyper_parameters"] and best["state_dict"].keys() == last["state_dict"].keys()


def test_a_run_of_an_older_objective_trains_on_and_restarts_the_count(small_store, tmp_path):
    """A Task 1 run that converged under objective version 1 (the composition cross-entropy)
    is not finished under version 2: --resume trains at least `patience` more epochs, its
    best.ckpt is of the new objective, and run.json says where the count restarted."""
    flat = ["--set", "train.lr=0", "--set", "train.patience=2", "--set", "train.epochs=50"]
    info = _train(small_store, tmp_path, *flat, task=1)
    assert info["converged"] and info["epochs"] == 3 and info["objective_version"] == 2
    assert info["objective_changes"] == []
    run = tmp_path / "cdvae-task1-seed0"
    # what a run of before the version was recorded left behind
    old = json.loads((run / "run.json").read_text())
    del old["objective_version"], old["objective_changes"]
    (run / "run.json").write_text(json.dumps(old))
    ckpt = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    (key,) = [k for k in ckpt["callbacks"] if "RunMonitor" in k]
    for k in ("objective_version", "objective_changes"):
        del ckpt["callbacks"][key][k]
    torch.save(ckpt, run / "last.ckpt")
    again = _train(small_store, tmp_path, "--resume", task=1)
    assert again["converged"] and again["objective_version"] == 2
    assert again["best_epoch"] == 3 and again["converged_epoch"] == 5 and again["epochs"] == 6
    assert again["objective_changes"] == [{"epoch": 3, "from": 1, "to": 2, "best_val_loss_before":
                                           info["best_val_loss"], "best_epoch_before": 0}]
    assert torch.load(run / "best.ckpt", map_location="cpu", weights_only=False)["epoch"] == 3
    assert _train(small_store, tmp_path, "--resume", task=1) == again  # finished under version 2


ADIT_T1 = ["--set", "model.hidden=16", "--set", "model.heads=2", "--set", "model.layers=1",
           "--set", "model.vae_layers=1", "--set", "model.steps=2", "--set", "train.lr=1e-3",
           "--set", "train.workers=0", "--set", "train.val_radii=[9]"]


def test_staged_run_converges_each_stage_and_freezes_the_best_vae(small_store, tmp_path):
    """ADiT Task 1: the rule applies to the VAE stage, then to the DiT stage; the DiT stage
    starts from the VAE's best weights (here epoch 0's) and leaves them untouched."""
    # rel_tol = 10: no epoch improves by 1000 %, so each stage converges one epoch after its first
    rule = ["--set", "train.patience=1", "--set", "train.rel_tol=10"]
    info = _train(small_store, tmp_path, *rule, "--set", "train.epochs=1", task=1, model="adit", tiny=ADIT_T1)
    run = tmp_path / "adit-task1-seed0"
    assert info["stop_reason"] == "max_epochs" and info["stages"] == []
    vae_best = torch.load(run / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    info = _train(small_store, tmp_path, *rule, "--resume", "--set", "train.epochs=20", task=1, model="adit",
                  tiny=ADIT_T1)
    assert info["converged"] and info["converged_epoch"] == 3 and info["epochs"] == 4
    assert [(st["stage"], st["converged_epoch"], st["best_epoch"]) for st in info["stages"]] == [("vae", 1, 0)]
    assert info["best_epoch"] == 2 and "each training stage" in info["convergence_rule"]
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["stage"] for r in rows] == ["vae", "vae", "dit", "dit"]
    assert not rows[1]["val_flow"] and float(rows[2]["val_flow"]) > 0  # the DiT's loss only once it trains
    assert float(rows[2]["lr"]) == pytest.approx(1e-3 * 0.98)  # a fresh schedule (one decay step)
    # the switch epoch's row tells what it trained with and reached, before the reset
    assert float(rows[1]["lr"]) == pytest.approx(1e-3 * 0.98 ** 2) and float(rows[1]["best_val_loss"]) > 0
    final = torch.load(run / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    last = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert int(final["model.stage"]) == int(last["model.stage"]) == 1
    vae_keys = [k for k in final if k.startswith(("model.encoder.", "model.decoder.", "model.conditioner."))]
    assert vae_keys and all(torch.equal(final[k], vae_best[k]) and torch.equal(last[k], vae_best[k])
                            for k in vae_keys)
    dit_keys = [k for k in final if k.startswith("model.denoiser.")]
    assert any(not torch.equal(last[k], vae_best[k]) for k in dit_keys)
    assert (run / "curves.png").stat().st_size > 0  # drawn with the stage's end marked


def test_resume_continues_the_epoch_count(small_store, tmp_path):
    info = _train(small_store, tmp_path, "--set", "train.epochs=2")
    assert info["stop_reason"] == "max_epochs" and not info["converged"] and info["epochs"] == 2
    # a budget smaller than one epoch pauses after the first epoch of this invocation
    info = _train(small_store, tmp_path, "--resume", "--set", "train.epochs=5", "--budget", "0.01")
    assert info["stop_reason"] == "paused" and info["epochs"] == 3 and info["invocations"] == 2
    info = _train(small_store, tmp_path, "--resume")  # the run's own config: epochs = 5
    assert info["stop_reason"] == "max_epochs" and info["epochs"] == 5 and info["invocations"] == 3
    assert _epochs(tmp_path / "cdvae-task2-seed0") == [0, 1, 2, 3, 4]
    again = _train(small_store, tmp_path, "--resume")  # finished: left as is
    assert again == info
    # what each invocation paid before its first epoch and in its first step (compilation,
    # the DataLoader's first batch), apart from the epoch times
    log = info["invocation_log"]
    assert [e["epoch"] for e in log] == [0, 2, 3]
    for e in log:
        steps = e["first_steps_s"]
        assert 0 < e["setup_s"] < 600 and 1 <= len(steps) <= 3  # fewer where an epoch has fewer steps
        assert 0 < steps[0] and steps == sorted(steps) and steps[-1] <= info["epoch_seconds"][e["epoch"]]
        assert e["process_s"] is None or e["process_s"] >= e["setup_s"]
        assert len(e["first_steps_atoms"]) == len(steps) and all(n > 0 for n in e["first_steps_atoms"])
        assert e["peak_gb"] is None  # no GPU here: nothing measured, nothing made up


def test_peak_gpu_memory_is_read_only_where_a_gpu_was_used(monkeypatch):
    """run.json's invocation_log gives each invocation's peak GPU memory (training and
    validation, this process), which a user needs to plan runs on smaller cards."""
    from c2np.training import module as module_mod

    assert module_mod.peak_gpu_gb(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: int(3.25 * 2**30))
    assert module_mod.peak_gpu_gb(torch.device("cuda", 0)) == 3.25


def test_resume_after_the_run_moved_keeps_one_last_checkpoint(small_store, tmp_path):
    """A run carried to another folder (another GPU machine) and resumed there overwrites
    last.ckpt: Lightning's default wrote last-v1.ckpt beside the old one, and the next
    resume went back to the stale last.ckpt."""
    _train(small_store, tmp_path / "a", "--set", "train.epochs=4", "--budget", "0.01")
    (tmp_path / "a").rename(tmp_path / "b")
    _train(small_store, tmp_path / "b", "--resume", "--budget", "0.01")
    run = tmp_path / "b" / "cdvae-task2-seed0"
    assert sorted(p.name for p in run.glob("last*.ckpt")) == ["last.ckpt"]
    assert torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 2
    info = _train(small_store, tmp_path / "b", "--resume")
    assert info["epochs"] == 4 and _epochs(run) == [0, 1, 2, 3]


def test_loss_column_reaches_result_and_report(small_store, tmp_path):
    _train(small_store, tmp_path / "runs", "--set", "train.epochs=1", task=1, model="symat")
    run = tmp_path / "runs" / "symat-task1-seed0"
    preds = tmp_path / "t1.parquet"
    res = runner.invoke(app, ["predict", "--checkpoint", str(run / "best.ckpt"), "--split", "id", "--store",
                              str(small_store), "--out", str(preds), "--sample", "1", "-q"])
    assert res.exit_code == 0, res.output
    test_loss = json.loads((run / "test_loss-id.json").read_text())
    n_id = len(ds_records := load_records(open_dataset(small_store), "id"))
    assert test_loss["graphs"] == n_id == len(ds_records) and np.isfinite(test_loss["loss"])
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["evaluate", "--task", "1", "--split", "id", "--predictions", str(preds), "--store",
                              str(small_store), "--sample", "1", "--run-info", str(run / "run.json"),
                              "--out", str(out), "-q", "-j", "1"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["loss"] == pytest.approx(test_loss["loss"])
    assert result["model_run"]["validation"]["val_radii"] == [9]
    made = result["model_run"]["prediction"]  # how the predictions were made, from prediction-id.json
    assert made == json.loads((run / "prediction-id.json").read_text())
    assert (made["split"], made["file"], made["sample"], made["attention"], made["shards"]) == (
        "id", "t1.parquet", 1, "fp32", 1)
    assert made["checkpoint_sha256"] == test_loss["checkpoint_sha256"] and made["seed"] == 0
    res = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep" / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    cols = [c.strip() for c in header.split("|")[1:-1]]
    assert cols[:3] == ["model", "split", "samples"] and cols[3].startswith("Loss")  # first metric, as in Table 5
    assert "(1/radius)" in md and f"{test_loss['loss']:.3g}" in md  # the sample is marked


def test_plot_run_reports_a_missing_run(tmp_path):
    res = runner.invoke(app, ["plot-run", str(tmp_path)])
    assert res.exit_code == 2 and "metrics.csv" in res.output


def _train_on_cpu_processes(tmp_path, *args: str) -> None:
    """``c2np train ARGS`` as its own process with no GPU (``--devices N``: N gloo ranks).
    It runs from a script file because Lightning's launcher starts that file again for
    every further rank."""
    script = tmp_path / "c2np_cli.py"
    script.write_text("from c2np.cli import main\nmain()\n")
    done = subprocess.run([sys.executable, str(script), "train", *args], capture_output=True, text=True,
                          env=os.environ | {"CUDA_VISIBLE_DEVICES": ""}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one(small_store, tmp_path):
    """`--devices 2` (gloo) at the same effective batch follows the single-process loss curve."""
    curves = {}
    for n in (1, 2):
        _train_on_cpu_processes(tmp_path, "--task", "2", "--model", "cdvae", "--store", str(small_store),
                                "--out", str(tmp_path / f"d{n}"), "-q", *TINY, "--set", "train.epochs=3",
                                "--set", "train.lr=1e-3", "--set", "train.batch_size=4", "--devices", str(n))
        with (tmp_path / f"d{n}" / "cdvae-task2-seed0" / "metrics.csv").open() as f:
            curves[n] = np.array([float(r["val_loss"]) for r in csv.DictReader(f)])
    np.testing.assert_allclose(curves[2], curves[1], rtol=0.05)


@pytest.mark.slow
def test_staged_model_under_ddp_switches_stage_on_every_rank(small_store, tmp_path):
    """ADiT Task 1 with `--devices 2` (gloo): the stage switch (a barrier, then every rank
    reads rank 0's best.ckpt) neither hangs nor splits the ranks: the run converges in both
    stages at the epochs a single process gives, and the DiT stage leaves the VAE's best
    weights frozen."""
    rule = ["--set", "train.patience=1", "--set", "train.rel_tol=10", "--set", "train.epochs=20",
            "--set", "train.batch_size=4"]
    _train_on_cpu_processes(tmp_path, "--task", "1", "--model", "adit", "--store", str(small_store),
                            "--out", str(tmp_path), "-q", *ADIT_T1, *rule, "--devices", "2")
    run = tmp_path / "adit-task1-seed0"
    info = json.loads((run / "run.json").read_text())
    assert info["devices"] == 2 and info["converged"] and info["converged_epoch"] == 3
    assert [(st["stage"], st["converged_epoch"], st["best_epoch"]) for st in info["stages"]] == [("vae", 1, 0)]
    with (run / "metrics.csv").open() as f:
        assert [r["stage"] for r in csv.DictReader(f)] == ["vae", "vae", "dit", "dit"]
    final = torch.load(run / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    last = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    vae_keys = [k for k in final if k.startswith(("model.encoder.", "model.decoder.", "model.conditioner."))]
    assert vae_keys and all(torch.equal(final[k], last[k]) for k in vae_keys)
    assert any(not torch.equal(final[k], last[k]) for k in final if k.startswith("model.denoiser."))


@pytest.mark.parametrize("compile_mode, fused, compiled, fused_expected", [
    ("gpu", "gpu", False, False),   # the configs' default on a CPU: eager, foreach Adam
    ("edges", True, True, True),    # explicit settings hold on any device
])
def test_gpu_only_defaults_stay_off_on_the_cpu(compile_mode, fused, compiled, fused_expected):
    from c2np.training.configs import load_training_config
    from c2np.training.module import BaselineModule

    cfg = load_training_config("cdvae", 2)
    train = cfg["train"] | {"compile": compile_mode, "fused_adam": fused}
    module = BaselineModule(cfg["model"], train)
    module.on_fit_start()
    interact = module.model.encoder.interact
    assert hasattr(interact, "_torchdynamo_orig_callable") == compiled
    opt = module.configure_optimizers()["optimizer"]
    assert bool(opt.defaults.get("fused")) == fused_expected


@pytest.mark.parametrize("devices, many", [(1, False), (2, True), (-1, True), ("1", False), ("0,1", True),
                                           ([0], False), ([0, 1], True)])
def test_many_devices_reads_lightnings_forms(devices, many):
    """A staged model under DDP needs find_unused_parameters: the count must be read right."""
    from c2np.training.run import _many

    assert _many(devices) is many
