"""Checks that every learned family's CPU tests share: fit a tiny model to one fixed
batch, and the invariance and seeding of a generative Task 2 model."""

from __future__ import annotations

import torch

from c2np.training.data import COLLATE


def fit_fixed_batch(model, batch, steps: int, lr: float = 3e-3) -> dict[str, torch.Tensor]:
    """``steps`` seeded Adam steps (clipping 1.0, as in training) on one batch; returns
    the last step's loss terms."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    out = {}
    for step in range(steps):
        torch.manual_seed(step)
        opt.zero_grad()
        out = model.loss(batch)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return out


def check_generative_task2(model, records, atol: float) -> None:
    """Same prediction for a rotated particle with the same seed, another with another
    seed (a generative model draws), and the same space group."""
    base = COLLATE[2]([(r, -1) for r in records])
    model.fit_targets(base.lattice, base.spacegroup)
    rotated = COLLATE[2]([(r, 5) for r in records])
    assert not torch.allclose(base.pos, rotated.pos)
    lat0, sg0 = model.predict(base, seed=4)
    lat1, sg1 = model.predict(rotated, seed=4)
    torch.testing.assert_close(lat0, lat1, atol=atol, rtol=atol)
    assert torch.equal(sg0, sg1)
    lat2, _ = model.predict(base, seed=5)
    assert not torch.allclose(lat0, lat2)


def task1_cli_round_trip(store, runs, tmp_path, name: str, train_args: list[str]) -> dict:
    """`c2np train` -> `predict --sample 1` -> `evaluate --sample 1` for a Task 1 model;
    returns the result JSON."""
    import json

    from typer.testing import CliRunner

    from c2np.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["train", "--task", "1", "--model", name, "--store", str(store),
                              "--out", str(runs), "-q", *train_args])
    assert res.exit_code == 0, res.output
    preds = tmp_path / "t1.parquet"
    res = runner.invoke(app, ["predict", "--checkpoint", str(runs / f"{name}-task1-seed0" / "last.ckpt"),
                              "--split", "id", "--store", str(store), "--out", str(preds),
                              "--sample", "1", "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "--task", "1", "--split", "id", "--predictions", str(preds),
                              "--store", str(store), "--sample", "1", "--out",
                              str(tmp_path / "r1.json"), "-q", "-j", "1"])
    assert res.exit_code == 0, res.output
    return json.loads((tmp_path / "r1.json").read_text())


def lattice_draws_and_range(model, records) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardised lattice draws of a generative Task 2 model (targets fitted on
    ``records``, seeded) with the training targets' standardised range (lo, hi)."""
    batch = COLLATE[2]([(r, 0) for r in records])
    model.fit_targets(batch.lattice, batch.spacegroup)
    model.eval()
    with torch.no_grad():
        draws = model.sample_lattice(model.embed(batch), torch.Generator().manual_seed(0))
    return draws, model.target_lo, model.target_hi
