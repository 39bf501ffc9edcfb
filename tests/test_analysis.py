"""Dataset statistics, figures and the viewer, checked against hand-made particles."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from c2np.analysis.statistics import (bbox_volumes, composition_counts, correlations,
                                      lattice_table, particle_geometry, particle_table,
                                      surface_mask)
from c2np.analysis.viewer import configuration_page, page
from c2np.cli import app
from c2np.errors import StoreError, UnknownMaterialError
from c2np.store.dataset import open_dataset

runner = CliRunner()


def cube_grid(n: int, a: float) -> np.ndarray:
    """n x n x n simple-cubic points with spacing a, centred on the origin."""
    g = (np.arange(n) - (n - 1) / 2) * a
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)


def test_simple_cubic_geometry():
    n, a = 5, 2.0
    geo = particle_geometry(cube_grid(n, a))
    assert geo.n_atoms == n ** 3
    assert geo.hull_volume == pytest.approx(((n - 1) * a) ** 3)
    assert geo.shortest_distance == pytest.approx(a)
    # per axis the variance of n equispaced points is a^2 (n^2 - 1) / 12
    assert geo.radius_of_gyration == pytest.approx(np.sqrt(3 * a * a * (n * n - 1) / 12))
    assert geo.hull_density == pytest.approx(n ** 3 / ((n - 1) * a) ** 3)
    assert len(geo.hull_vertices) == 8  # only the cube's corners are hull vertices


def test_bounding_box_follows_rotation():
    pos = cube_grid(4, 1.5)
    side = 3 * 1.5
    identity = np.array([[0.0, 0.0, 0.0, 1.0]])
    z45 = Rotation.from_euler("z", 45, degrees=True).as_quat()[None]
    geo = particle_geometry(pos)
    vols = bbox_volumes(geo.hull_vertices, np.vstack([identity, z45]))
    assert vols[0] == pytest.approx(side ** 3)
    assert vols[1] == pytest.approx(2 * side ** 3)  # the square's diagonal along x and y
    # the hull-vertex shortcut equals the box of every atom
    full = bbox_volumes(pos, z45)
    assert full[0] == pytest.approx(vols[1])


def test_surface_atoms_of_a_simple_cubic_sphere():
    a, radius = 2.0, 5.0
    cell = Atoms("Po", cell=np.eye(3) * a, pbc=True)
    from c2np.carve import carve

    particle = carve(cell, radius, (12, 12, 12))
    mask = surface_mask(cell, particle.positions, radius, (12, 12, 12), (0.5, 0.5, 0.5), 1e-6,
                        cutoff=1.1 * a)
    # brute force: an atom is at the surface when one of its six neighbours was cut away
    steps = np.vstack([np.eye(3), -np.eye(3)]) * a
    expected = np.array([np.any(np.linalg.norm(p + steps, axis=1) > radius + 1e-6)
                         for p in particle.positions])
    assert mask.sum() > 0 and (~mask).sum() > 0
    np.testing.assert_array_equal(mask, expected)


def test_surface_mask_detects_a_mismatched_particle():
    cell = Atoms("Po", cell=np.eye(3) * 2.0, pbc=True)
    with pytest.raises(StoreError, match="different count"):
        surface_mask(cell, np.zeros((3, 3)), 5.0, (12, 12, 12), (0.5, 0.5, 0.5), 1e-6)


def test_lattice_tables():
    mats = pd.DataFrame({"name": ["X", "Y", "Z", "W"], "A": ["Li", "Li", "Na", "Li"],
                         "B": ["V", "V", "V", "Cu"], "a": [4.0, 5.0, 6.0, 4.5],
                         "b": [4.0, 7.0, 9.0, 5.0], "c": [4.0, 5.1, 6.2, 4.4],
                         "alpha": 90.0, "beta": 90.0, "gamma": 90.0, "volume": [64.0, 178.5, 334.8, 99.0],
                         "spacegroup_number": [221, 62, 62, 62],
                         "spacegroup_symbol": ["Pm-3m", "Pnma", "Pnma", "Pnma"]})
    lat = lattice_table(mats)
    np.testing.assert_allclose(lat["b/a"], mats["b"] / mats["a"])
    np.testing.assert_allclose(lat["c/a"], mats["c"] / mats["a"])
    r = correlations(lat).set_index("pair")["pearson_r"]
    assert r["a-b"] == pytest.approx(np.corrcoef(mats["a"], mats["b"])[0, 1])
    counts = composition_counts(lat)
    assert counts["space_groups"].iloc[0].tolist() == ["Pnma (62)", 3]
    assert counts["a_site"].set_index("element")["count"].to_dict() == {"Li": 3, "Na": 1}
    assert counts["ab_pairs"]["distinct_ab_pairs"].item() == 3  # Li-V, Na-V, Li-Cu
    with pytest.raises(StoreError, match="lacks column"):
        lattice_table(mats.drop(columns=["spacegroup_symbol"]))


def test_particle_table_on_the_store(small_store):
    ds = open_dataset(small_store)
    stats = particle_table(small_store, progress=False)
    parts = stats.particles
    assert len(parts) == 3 * 5
    for row in parts.itertuples():
        atoms = ds.canonical(row.material, row.radius)
        assert row.n_atoms == len(atoms)
        assert row.hull_volume < 4 / 3 * np.pi * row.radius ** 3  # a hull inside its sphere
        assert 0 < row.surface_fraction <= 1
    assert len(stats.configurations) == len(ds)  # one bounding box per configuration
    by_r = stats.by_radius()
    assert by_r["radius"].tolist() == [6, 8, 9, 10, 30]
    assert by_r.set_index("radius").loc[10, "split"] == "id"
    # the surface shrinks relative to the volume as R grows
    assert by_r["surface_fraction_mean"].is_monotonic_decreasing
    with pytest.raises(StoreError, match="not in the store"):
        particle_table(small_store, radii=[7], progress=False)


def test_stats_command_writes_every_format(small_store, tmp_path):
    for fmt in ("json", "csv", "md"):
        out = tmp_path / f"stats.{fmt}"
        res = runner.invoke(app, ["stats", str(small_store), "--format", fmt, "--out", str(out), "-q"])
        assert res.exit_code == 0, res.output
        assert out.stat().st_size > 0
    data = json.loads((tmp_path / "stats.json").read_text())
    assert set(data) == {"lattice", "correlations", "space_groups", "a_site", "b_site", "ab_pairs",
                         "per_radius"}
    assert [r["radius"] for r in data["per_radius"]] == [6, 8, 9, 10, 30]
    tidy = pd.read_csv(tmp_path / "stats.csv")
    assert list(tidy.columns) == ["section", "row", "column", "value"]
    assert "## per_radius" in (tmp_path / "stats.md").read_text()
    res = runner.invoke(app, ["stats", str(small_store), "--format", "xml", "--out", "x"])
    assert res.exit_code != 0


def test_plot_writes_all_panels(small_store, tmp_path):
    res = runner.invoke(app, ["plot", str(small_store), "--out", str(tmp_path), "-q",
                              "--fig2-materials", "KMgH3,LiBeH3,LiAlH3"])
    assert res.exit_code == 0, res.output
    names = {p.name for p in tmp_path.iterdir()}
    for letter in "abcdefghijkl":
        assert {f"figure3_{letter}.png", f"figure3_{letter}.pdf"} <= names
    assert {"figure3.png", "figure3.pdf", "figure2.png", "figure2.pdf"} <= names
    res = runner.invoke(app, ["plot", str(small_store), "--out", str(tmp_path), "--figure", "2",
                              "--fig2-materials", "Nope"])
    assert res.exit_code == 2 and "unknown material" in res.output


def test_viewer_page_is_self_contained(small_store):
    ds = open_dataset(small_store)
    html = configuration_page(ds, "LiBeH3", 10, rotation=3)
    assert "<script src" not in html and "http" not in html.replace("http-equiv", "")
    start = html.index('type="application/json">') + len('type="application/json">')
    data = json.loads(html[start:html.index("</script>", start)])
    particle, cell = data["scenes"]
    rows = ds.index[(ds.index["material"] == "LiBeH3") & (ds.index["radius"] == 10)]
    expected = ds.by_id(int(rows[rows["rotation_id"] == 3]["config_id"].iloc[0]))
    np.testing.assert_allclose(np.reshape(particle["positions"], (-1, 3)), expected.positions, atol=1e-3)
    assert len(cell["edges"]) == 12
    with pytest.raises(StoreError, match="rotations 0-"):
        configuration_page(ds, "LiBeH3", 10, rotation=10_000)
    with pytest.raises(StoreError, match="radii"):
        configuration_page(ds, "LiBeH3", 11)
    with pytest.raises(UnknownMaterialError):
        configuration_page(ds, "XxYH3", 10)
    with pytest.raises(ValueError):
        page([], "empty")


def test_view_command(small_store, tmp_path):
    out = tmp_path / "v.html"
    res = runner.invoke(app, ["view", "KMgH3", "30", "--store", str(small_store), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("<!DOCTYPE html>")
    res = runner.invoke(app, ["view", "KMgH3", "31", "--store", str(small_store), "--out", str(out)])
    assert res.exit_code == 2 and "radii" in res.output


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                             "chromium); the viewer page is not rendered")
def test_viewer_draws_in_headless_chromium(small_store, tmp_path):
    import matplotlib.image

    ds = open_dataset(small_store)
    atoms = ds.canonical("LiBeH3", 10)
    html_path = tmp_path / "view.html"
    html_path.write_text(configuration_page(ds, "LiBeH3", 10))
    base = [CHROMIUM, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,700"]
    dom = subprocess.run([*base, "--dump-dom", html_path.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    # the script ran to the end and drew every atom of the particle
    assert f'data-drawn-atoms="{len(atoms)}"' in dom
    assert "LiBeH3, R = 10" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", html_path.as_uri()], capture_output=True,
                   timeout=120, check=True)
    img = matplotlib.image.imread(shot)[..., :3]
    canvas = img[150:, :, :]  # below the header
    coloured = np.ptp(canvas, axis=2) > 0.15  # saturated pixels: Li purple, Be green, not white
    assert coloured.mean() > 0.02, "the canvas shows no coloured atoms"
