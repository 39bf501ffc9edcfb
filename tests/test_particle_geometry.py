"""benchmarks/particle_geometry.py --predictions: atoms on top of each other in generated
particles are counted per radius, beside the references, from a file or a chunks folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from benchmark_scripts import load_benchmark

from c2np.store.dataset import open_dataset
from c2np.tasks.targets import task1_samples

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pg():
    return load_benchmark("particle_geometry")


def _particle(ds, row, duplicate: int) -> pd.DataFrame:
    ref = ds.canonical(row.material, int(row.radius))
    pos = np.vstack([ref.positions, ref.positions[:duplicate] + 0.1])  # `duplicate` atoms 0.17 A off
    z = np.concatenate([ref.numbers, ref.numbers[:duplicate]])
    return pd.DataFrame({"config_id": row.config_id, "Z": z, "x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2]})


def test_close_atoms_are_counted_per_radius_from_a_chunks_folder(pg, small_store, tmp_path):
    ds = open_dataset(small_store)
    samples = task1_samples(ds, "id")
    rows = list(samples.itertuples())[:2]
    chunks = tmp_path / "p.parquet.chunks"
    chunks.mkdir()
    (chunks / "manifest.json").write_text(json.dumps({"batches": 3}))  # batch 2 not done yet
    for b, row in enumerate(rows):
        _particle(ds, row, duplicate=3 * b).to_parquet(chunks / f"batch-{b:05d}.parquet")
    preds = pg.read_predictions(chunks)
    assert preds.config_id.nunique() == 2
    table = pg.overlap_table(preds, ds, "id", close=0.5)
    n = [len(ds.canonical(r.material, int(r.radius)).positions) for r in rows]
    # particle 0: no close atoms; particle 1: 3 duplicated pairs = 6 close atoms of n[1] + 3
    fractions = [0.0, 6 / (n[1] + 3)]
    last = table.splitlines()[-1].split("|")
    assert last[1].strip() == "all" and int(last[2]) == 2
    mean, largest = (float(x) for x in last[3].split("/"))
    assert mean == pytest.approx(np.mean(fractions), abs=1e-3) and largest == pytest.approx(fractions[1], abs=1e-3)
    assert last[5].strip() == "0.000 / 0.000"  # the references have none


def test_predictions_of_another_split_are_refused(pg, small_store, tmp_path):
    ds = open_dataset(small_store)
    row = next(task1_samples(ds, "id").itertuples())
    path = tmp_path / "p.parquet"
    _particle(ds, row, duplicate=0).to_parquet(path)
    with pytest.raises(SystemExit, match="not in the ood split"):
        pg.overlap_table(pg.read_predictions(path), ds, "ood", close=0.5)
    with pytest.raises(SystemExit, match="no Task 1 predictions"):
        pg.read_predictions(tmp_path / "missing.parquet")


def test_score_names_the_one_broken_particle_and_takes_every_particle_in_batches(pg, small_store, tmp_path,
                                                                                  monkeypatch, capsys):
    """--checkpoint --score --n 0 --batch: every particle of the radius, generated a batch at a
    time with seed + batch, each scored; the per-radius line's largest LEV error is the broken one's."""
    from types import SimpleNamespace

    from c2np.evaluation.predictions import task1_frame

    ds = open_dataset(small_store)
    radius = int(task1_samples(ds, "id")["radius"].iloc[0])
    calls = []

    def generate(model, device, chunk, seed, skin):
        calls.append((len(chunk), seed))
        made = {}
        for rec, cid in chunk:
            atoms = ds.canonical(rec.material, int(rec.radius)).copy()
            if rec.material == chunk[0][0].material and seed == 5:  # one particle squeezed
                atoms.positions = atoms.positions * 0.5
            made[cid] = atoms
        return task1_frame(made)

    monkeypatch.setattr(pg, "load_module", lambda ck, device: SimpleNamespace(model=object(), device="cpu"))
    monkeypatch.setattr(pg, "generate_particles", generate)
    out = tmp_path / "rows.csv"
    monkeypatch.setattr(sys, "argv", ["pg", "--checkpoint", "x.ckpt", "--store", str(small_store), "--split", "id",
                                      "--radii", str(radius), "--n", "0", "--batch", "2", "--seed", "5",
                                      "--score", "--out", str(out)])
    pg.main()
    rows = pd.read_csv(out)
    n = int((task1_samples(ds, "id")["radius"] == radius).sum())
    assert len(rows) == n and [c[1] for c in calls] == list(range(5, 5 + len(calls)))
    assert sum(c[0] for c in calls) == n and max(c[0] for c in calls) == 2
    assert (rows["rmsd"] > 1e-6).sum() == 1 and rows["lev_error"].idxmax() == rows["rmsd"].idxmax()
    summary = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    assert int(summary[1]) == radius and int(summary[2]) == n
    assert float(summary[5].split("/")[1]) == pytest.approx(rows["lev_error"].max(), rel=1e-2)
