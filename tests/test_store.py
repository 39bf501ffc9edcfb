import json
import shutil

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import c2np
from c2np.carve import carve
from c2np.errors import StoreError, UnknownMaterialError
from c2np.store import layout
from c2np.store.build import build_store
from c2np.store.manifest import verify_store


def test_counts_and_index(small_store, small_config, small_materials):
    ds = c2np.open_dataset(small_store, verify=True)
    per_radius = {"train": 60, "id": 93, "ood": 164}
    expected = {s: 0 for s in per_radius}
    for r in small_config.radii:
        expected[small_config.split_of(r)] += per_radius[small_config.split_of(r)] * 3
    assert ds.index["split"].value_counts().to_dict() == expected
    assert ds.index["config_id"].tolist() == list(range(len(ds)))
    manifest = json.loads((small_store / layout.MANIFEST).read_text())
    assert manifest["counts"]["total"] == len(ds)
    assert set(manifest["files"]) == set(layout.store_files(small_store))


def test_configurations_are_rotated_canonical_particles(small_store, small_materials):
    ds = c2np.open_dataset(small_store).split("ood")
    rng = np.random.default_rng(0)
    for i in rng.choice(len(ds), 10, replace=False):
        atoms = ds[i]
        info = atoms.info
        (m,) = [m for m in small_materials if m.name == info["material"]]
        ref = carve(m.cell, info["radius"], name=m.name)
        rot = Rotation.from_quat(info["quaternion_xyzw"]).as_matrix()
        np.testing.assert_array_equal(atoms.numbers, ref.numbers)
        np.testing.assert_allclose(atoms.positions, ref.positions @ rot.T, atol=1e-12)
        assert info["split"] == "ood" and not atoms.pbc.any()
        assert ds.by_id(info["config_id"]).info == info


def test_dataset_views_and_unit_cells(small_store):
    ds = c2np.open_dataset(small_store)
    assert len(ds.split("train")) + len(ds.split("id")) + len(ds.split("ood")) == len(ds)
    view = ds.filter(materials=["KMgH3"], radii=[10])
    assert len(view) == 93 and set(view.index["material"]) == {"KMgH3"}
    assert view[0].info["rotation_id"] == 0
    np.testing.assert_allclose(view[0].positions, ds.canonical("KMgH3", 10).positions)
    assert ds.unit_cell("LiBeH3").pbc.all()
    assert ds.config.radii == (6, 8, 9, 10, 30)
    with pytest.raises(UnknownMaterialError, match="NotAMaterial"):
        ds.unit_cell("NotAMaterial")
    with pytest.raises(ValueError, match="unknown split"):
        ds.split("test")
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_two_builds_are_byte_identical(tmp_path, small_store, small_config, small_materials):
    other = tmp_path / "again"
    build_store(other, small_config, small_materials, jobs=2, progress=False)
    assert (other / layout.MANIFEST).read_bytes() == (small_store / layout.MANIFEST).read_bytes()


def test_resume_after_interruption(tmp_path, small_store, small_config, small_materials):
    store = tmp_path / "s"
    shutil.copytree(small_store, store)
    # What a kill leaves behind: no manifest yet, one material not written, a temp file.
    # The journal records the hash of each particle file the build finished.
    fingerprint = json.loads((store / layout.MANIFEST).read_text())["fingerprint"]
    (store / layout.MANIFEST).unlink()
    done = {m: layout.sha256_file(layout.particle_file(store, m)) for m in ("KMgH3", "LiAlH3")}
    (store / layout.IN_PROGRESS).write_text(json.dumps({"fingerprint": fingerprint, "files": done}))
    layout.particle_file(store, "LiBeH3").unlink()
    (store / layout.PARTICLES / ".KMgH3.parquet.x.tmp").write_bytes(b"partial")
    (store / ".index.parquet.y.tmp").write_bytes(b"partial")  # a top-level leftover too
    with pytest.raises(StoreError, match="interrupted"):
        c2np.open_dataset(store)
    summary = build_store(store, small_config, small_materials, jobs=1, progress=False)
    assert summary.reused == 2
    assert (store / layout.MANIFEST).read_bytes() == (small_store / layout.MANIFEST).read_bytes()
    assert not (store / layout.IN_PROGRESS).exists()
    assert not [p for p in store.rglob("*.tmp")]


def test_resume_recarves_leftovers_that_were_edited_or_never_recorded(
        tmp_path, small_store, small_config, small_materials):
    import numpy as np

    from c2np.store.particles import ParticleFile, write_particles

    store = tmp_path / "s"
    shutil.copytree(small_store, store)
    fingerprint = json.loads((store / layout.MANIFEST).read_text())["fingerprint"]
    (store / layout.MANIFEST).unlink()
    recorded = layout.sha256_file(layout.particle_file(store, "KMgH3"))
    # A leftover edited by 0.5 A after the journal recorded it: a valid file, wrong content.
    pf = ParticleFile(layout.particle_file(store, "KMgH3"))
    moved = {r: pf.particle(r) for r in pf.radii}
    for p in moved.values():
        p.positions += np.array([0.5, 0.0, 0.0])
    write_particles(layout.particle_file(store, "KMgH3"), "KMgH3", moved)
    (store / layout.IN_PROGRESS).write_text(json.dumps({"fingerprint": fingerprint,
                                                         "files": {"KMgH3": recorded}}))
    summary = build_store(store, small_config, small_materials, jobs=1, progress=False)
    assert summary.reused == 0  # LiAlH3 and LiBeH3 were never recorded, KMgH3 was edited
    assert (store / layout.MANIFEST).read_bytes() == (small_store / layout.MANIFEST).read_bytes()
    assert verify_store(store) == []


def test_rebuild_same_config_is_a_no_op_and_other_config_needs_force(
        tmp_path, small_store, small_config, small_materials):
    store = tmp_path / "s"
    shutil.copytree(small_store, store)
    assert build_store(store, small_config, small_materials, progress=False).up_to_date
    changed = small_config.with_overrides(buffer=6.0)
    with pytest.raises(StoreError, match="--force"):
        build_store(store, changed, small_materials, progress=False)
    summary = build_store(store, changed, small_materials, progress=False, force=True)
    assert not summary.up_to_date
    assert json.loads((store / layout.MANIFEST).read_text())["config"]["buffer"] == 6.0


def test_refuses_to_write_into_a_foreign_directory(tmp_path, small_config, small_materials):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not a c2np store"):
        build_store(tmp_path, small_config, small_materials, progress=False, force=True)
    assert (tmp_path / "thesis.tex").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]  # not even a lock file


def test_verify_detects_altered_missing_and_extra_files(tmp_path, small_store):
    store = tmp_path / "s"
    shutil.copytree(small_store, store)
    assert verify_store(store) == []
    target = layout.particle_file(store, "KMgH3")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    (store / layout.CIFS / "LiAlH3.cif").unlink()
    (store / "cifs" / "extra.cif").write_text("x")
    problems = verify_store(store)
    assert any("altered: particles/KMgH3.parquet" in p for p in problems)
    assert any("missing: cifs/LiAlH3.cif" in p for p in problems)
    assert any("unexpected: cifs/extra.cif" in p for p in problems)
    with pytest.raises(StoreError, match="integrity"):
        c2np.open_dataset(store, verify=True)


def test_corrupt_manifest_and_missing_store(tmp_path, small_store):
    with pytest.raises(StoreError, match="no such store"):
        c2np.open_dataset(tmp_path / "nope")
    store = tmp_path / "s"
    shutil.copytree(small_store, store)
    (store / layout.MANIFEST).write_text("{not json")
    with pytest.raises(StoreError, match="corrupt manifest"):
        c2np.open_dataset(store)


def test_drop_duplicates_keeps_stable_ids(tmp_path, small_materials):
    from c2np.config import BuildConfig

    cfg = BuildConfig(radii=(6, 7), id_radii=(), ood_radii=(6,), drop_duplicates=True)
    summary = build_store(tmp_path / "d", cfg, small_materials[:1], progress=False)
    ds = c2np.open_dataset(tmp_path / "d")
    assert summary.counts["total"] == len(ds) == 60 + 164 - summary.duplicates
    assert not ds.index["duplicate"].any()
