"""The bundled benchmark itself: exact counts and byte-identical rebuilds (about a minute)."""

import json

import pytest

from c2np.config import BuildConfig
from c2np.materials.catalogue import load_materials
from c2np.store import layout
from c2np.store.build import build_store


@pytest.fixture(scope="module")
def full_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("full") / "store"
    summary = build_store(store, BuildConfig(), load_materials(), jobs=2, progress=False)
    return store, summary


def test_counts_match_the_paper(full_store):
    _, s = full_store
    assert (s.counts["train"], s.counts["id"], s.counts["ood"]) == (72_900, 45_198, 53_136)
    assert s.counts["total"] == 171_234
    assert 30 <= s.atoms_min < s.atoms_max <= 20_000


def test_rebuilt_materials_are_byte_identical(full_store, tmp_path):
    """Three materials rebuilt alone give the same bytes as in the full build (fast)."""
    store, _ = full_store
    names = ["KMgH3", "LiBeH3", "LiAlH3"]
    build_store(tmp_path / "three", BuildConfig(), load_materials(names=names), jobs=2, progress=False)
    full = json.loads((store / layout.MANIFEST).read_text())["files"]
    part = json.loads((tmp_path / "three" / layout.MANIFEST).read_text())["files"]
    same = [f for f in part if any(n in f for n in names) or f.startswith("rotations")]
    assert len(same) >= 2 * len(names) + 1
    assert {f: part[f] for f in same} == {f: full[f] for f in same}


@pytest.mark.slow
def test_rebuild_gives_identical_manifest(full_store, tmp_path):
    store, _ = full_store
    build_store(tmp_path / "again", BuildConfig(), load_materials(), jobs=2, progress=False)
    a = json.loads((store / layout.MANIFEST).read_text())
    b = json.loads((tmp_path / "again" / layout.MANIFEST).read_text())
    assert a["fingerprint"] == b["fingerprint"] and a["files"] == b["files"]
