"""Hostile input, corruption and races (issue 12).

Every store file with flipped bits must be refused on open (never read as data), two
builds into one directory must leave one valid store and one refusal naming the holder's
PID, and every hostile command line must exit 2 with one line on stderr, no traceback,
and nothing written where the command was run.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import c2np
from c2np.cli import main
from c2np.errors import StoreError
from c2np.evaluation.evaluator import Evaluator
from c2np.evaluation.predictions import write_task1, write_task2
from c2np.materials.catalogue import bundled_dir
from c2np.store import layout
from c2np.store.build import build_store, config_toml
from c2np.store.lock import store_lock
from c2np.store.manifest import verify_store
from c2np.store.particles import ParticleFile

GOOD_CIF = (bundled_dir() / "cifs" / "KMgH3.cif").read_text()
SITE_HEADER, _ = GOOD_CIF.split("  K   K1")
FLIPS_PER_FILE = 8


def _flip(path: Path, rng: np.random.Generator, lo: int = 0, hi: int | None = None) -> tuple[int, int]:
    data = bytearray(path.read_bytes())
    pos = int(rng.integers(lo, hi if hi is not None else len(data)))
    bit = 1 << int(rng.integers(0, 8))
    data[pos] ^= bit
    path.write_bytes(bytes(data))
    return pos, bit


@pytest.fixture
def store(tmp_path, small_store) -> Path:
    out = tmp_path / "store"
    shutil.copytree(small_store, out)
    return out


# ---------------------------------------------------------------- corruption


def test_bit_flips_in_every_store_file_are_refused_on_open(store):
    """Open (default verify) and `c2np verify` agree on every flip, and neither lets one pass."""
    rng = np.random.default_rng(12)
    files = [layout.MANIFEST, *layout.store_files(store)]
    assert len(files) == 11  # manifest, config, index, rotations, materials, 3 CIFs, 3 particle files
    for rel in files:
        path = store / rel
        original = path.read_bytes()
        for _ in range(FLIPS_PER_FILE):
            _flip(path, rng)
            try:
                c2np.open_dataset(store)
                opened = True
            except StoreError:
                opened = False
            try:
                verified = verify_store(store) == []
            except StoreError:
                verified = False
            assert opened == verified, rel
            if opened:  # only a flip that JSON reads back identically (1e-06 -> 1E-06)
                assert rel == layout.MANIFEST
                assert json.loads(path.read_bytes()) == json.loads(original)
            path.write_bytes(original)
    c2np.open_dataset(store)


def test_page_checksums_catch_flips_when_verification_is_skipped(store):
    """With verify=False a flipped bit in a particle file's pages is an error on read,
    never different atoms."""
    rng = np.random.default_rng(3)
    path = layout.particle_file(store, "LiBeH3")
    original = path.read_bytes()
    clean = ParticleFile(path)
    expected = {r: clean.read(r) for r in clean.radii}
    footer = len(original) - 8 - int.from_bytes(original[-8:-4], "little")
    caught = 0
    for _ in range(40):
        _flip(path, rng, 4, footer)  # column chunks: page headers and data
        try:
            pf = ParticleFile(path)
            got = {r: pf.read(r) for r in pf.radii}
        except StoreError:
            caught += 1
        else:
            for r, (z, pos) in expected.items():
                assert np.array_equal(got[r][0], z) and np.array_equal(got[r][1], pos)
        path.write_bytes(original)
    assert caught > 30


def test_a_one_digit_cif_edit_cannot_change_scores_under_the_same_fingerprint(store):
    cif = store / layout.CIFS / "LiBeH3.cif"
    cif.write_text(cif.read_text().replace("_cell_length_a       ", "_cell_length_a       1", 1))
    with pytest.raises(StoreError, match="altered: cifs/LiBeH3.cif"):
        Evaluator(2, "id", store)
    ds = c2np.open_dataset(store, verify=False)
    assert not ds.verified  # an unverified result says so


def test_fingerprint_is_computed_from_the_bytes_read(store, small_store):
    ds = c2np.open_dataset(store)
    assert ds.verified and ds.fingerprint == ds.manifest["content_fingerprint"]
    index = pd.read_parquet(store / layout.INDEX)
    index.loc[0, "qx"] = 0.5
    index.to_parquet(store / layout.INDEX)
    with pytest.raises(StoreError, match="altered: index.parquet"):
        c2np.open_dataset(store)


def test_manifest_with_missing_keys_is_one_clear_error(store):
    from c2np.store.manifest import _self_digest

    manifest = json.loads((store / layout.MANIFEST).read_text())
    del manifest["files"]
    (store / layout.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="manifest altered"):
        c2np.open_dataset(store)
    manifest["manifest_sha256"] = _self_digest(manifest)  # a consistent but incomplete one
    (store / layout.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"corrupt manifest \(missing or malformed: files\)"):
        c2np.open_dataset(store)
    manifest["format_version"] = 1
    (store / layout.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="store format 1 is not supported"):
        c2np.open_dataset(store)


def test_store_files_get_the_umask_mode_not_0600(small_store):
    mask = os.umask(0)
    os.umask(mask)
    for rel in [layout.MANIFEST, *layout.store_files(small_store)]:
        assert stat.S_IMODE((small_store / rel).stat().st_mode) == 0o666 & ~mask, rel


# ---------------------------------------------------------------- races and kills


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from c2np.cli import main; main()", *args]


def _env() -> dict:
    src = str(Path(c2np.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_racing_builds_give_one_store_and_one_refusal_naming_the_pid(tmp_path, small_config,
                                                                     small_materials):
    target = tmp_path / "race"
    config = tmp_path / "c.toml"
    config.write_text(config_toml(small_config))
    first = subprocess.Popen(_cli("build", str(target), "--config", str(config), "-m",
                                  "KMgH3,LiAlH3,LiBeH3", "-j", "1", "-q"),
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = target / ".c2np.lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and f"PID {first.pid}" in lock.read_text()):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # The second writer, another material set, starts while the first holds the lock.
    with pytest.raises(StoreError, match=f"in use by PID {first.pid}"):
        build_store(target, small_config, small_materials[:1], progress=False)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert verify_store(target) == []
    ds = c2np.open_dataset(target)
    assert sorted(ds.material_names()) == ["KMgH3", "LiAlH3", "LiBeH3"]


def test_a_locked_store_is_refused_by_the_cli_with_the_holders_pid(tmp_path, monkeypatch, capsys):
    # flock locks belong to an open file, so a second open in this process is refused too.
    target = tmp_path / "held"
    with store_lock(target, "test"):
        code, _, err = _run(monkeypatch, capsys, "build", str(target), "-m", "KMgH3", "-q")
    _assert_one_line_error(code, err)
    assert err.strip() == f"error: {target}: in use by PID {os.getpid()} (test); wait for it " \
                          "to finish or use another directory"


def test_leftover_temporaries_neither_block_build_nor_force_and_verify_reports_them(
        store, small_config, small_materials):
    (store / ".index.parquet.abc.tmp").write_bytes(b"half")
    problems = verify_store(store)
    assert problems == ["leftover temporary: .index.parquet.abc.tmp (not in the manifest)"]
    with pytest.raises(StoreError, match="leftover temporary"):
        c2np.open_dataset(store)
    assert build_store(store, small_config, small_materials, progress=False).up_to_date
    assert verify_store(store) == []
    (store / layout.MANIFEST).unlink()  # a killed build: no manifest, a temporary left
    (store / ".index.parquet.def.tmp").write_bytes(b"half")
    build_store(store, small_config, small_materials, progress=False, force=True)
    assert verify_store(store) == []


# ---------------------------------------------------------------- hostile command lines


def _snapshot(root: Path) -> dict[str, float]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*")}


def _run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["c2np", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], (text, lines[0])


CONFIGS = {
    'duplicates = {drop = "no"}': "duplicates.drop must be true or false, got 'no'",
    '[rotations.train]\nseed = "1337"': "rotations.train.seed must be an integer, got '1337'",
    "[rotations.train]\nseed = 1337.5": "rotations.train.seed must be an integer, got 1337.5",
    "[rotations.train]\nseed = -1": "rotations.train.seed",
    "[rotations.id]\ntheta = 0.5": "rotations.id.theta must lie in [5, 180)",
    "[rotations.id]\nmargin = 179.0": "rotations.id.margin must lie in [0, 7.5]",
    '[rotations.id]\noffset = ["a", 1, 2]': "rotations.id.offset[0] must be a number, got 'a'",
    "[carve]\nradius = [6]": "unknown key 'carve.radius'",
    '[carve]\n"[red]x[/b]" = 1': "unknown key 'carve.[red]x[/b]'",
    '[carve]\nradii = ["6"]': "carve.radii[0] must be an integer",
    "[carve]\nradii = 6": "carve.radii must be an array",
    "carve = 5": "carve must be a table",
    "[carve\nradii =": "invalid TOML",
}


@pytest.mark.parametrize("text", list(CONFIGS), ids=range(len(CONFIGS)))
def test_hostile_configs(tmp_path, monkeypatch, capsys, text):
    monkeypatch.chdir(tmp_path)
    Path("c.toml").write_text(text)
    before = _snapshot(tmp_path)
    code, _, err = _run(monkeypatch, capsys, "build", "out", "--config", "c.toml", "-m", "KMgH3", "-q")
    _assert_one_line_error(code, err, "c.toml: ", CONFIGS[text])
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("config,expected", [
    (b"\xff\xfe\x00binary\x00", "not a text file"),
    (None, "is a directory"),
])
def test_unreadable_config_files(tmp_path, monkeypatch, capsys, config, expected):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.bin"
    if config is None:
        path.mkdir()
    else:
        path.write_bytes(config)
    code, _, err = _run(monkeypatch, capsys, "build", "out", "--config", str(path), "-q")
    _assert_one_line_error(code, err, expected)
    assert not (tmp_path / "out").exists()


def _site_rows(rows: list[str]) -> str:
    return SITE_HEADER + "".join(rows)


CIFS = {
    "duplicate": (_site_rows(["  K   K1  1.0  0.5  0.5  0.5  1.0\n", "  Mg  Mg1  1.0  0.0  0.0  0.0  1.0\n",
                              "  H   H1  1.0  0.5  0.0  0.0  1.0\n", "  H   H2  1.0  0.0  0.5  0.0  1.0\n",
                              "  H   H3  1.0  0.0  0.0  0.5  1.0\n", "  H   H4  1.0  0.0  0.0  0.5  1.0\n"]),
                  "sites H3 and H4 are at the same position"),
    "half": (GOOD_CIF.replace("  K   K1        1.0  0.5  0.5  0.5  1.0000",
                              "  K   K1        1.0  0.5  0.5  0.5  0.5"), "site K1 has occupancy 0.5"),
    "negative": (GOOD_CIF.replace("  K   K1        1.0  0.5  0.5  0.5  1.0000",
                                  "  K   K1        1.0  0.5  0.5  0.5  -1"), "site K1 has occupancy -1"),
    "huge_abc": (GOOD_CIF.replace("4.024704852612843", "1000.0"), "atom(s) (fewer than 4)"),
    "huge_a": (GOOD_CIF.replace("_cell_length_a       4.024704852612843", "_cell_length_a       1000.0"),
               "particle is flat"),
    "many": (_site_rows([f"  H   H{i}  1.0  {i / 1200:.6f}  0.1  0.2  1.0\n" for i in range(1200)]),
             "1200 atom sites exceed the limit of 1000"),
    "enormous": (_site_rows(["  H   H1  1.0  0.1  0.1  0.2  1.0\n"] * 40_000), "far larger than a unit cell"),
    "unknown": (GOOD_CIF.replace("  K   K1  ", "  Xx  Xx1 "), "unknown element symbol 'Xx'"),
    "junk": ("this is not a CIF file\n_cell_length_a\n", "not a valid CIF"),
    "truncated": (GOOD_CIF[: len(GOOD_CIF) // 3], "no crystal structure in the file"),
    "empty": ("", "no crystal structure in the file"),
}


@pytest.mark.parametrize("name", list(CIFS))
def test_hostile_cifs(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    cifs = tmp_path / "cifs[bold]"
    cifs.mkdir()
    text, expected = CIFS[name]
    (cifs / f"{name}.cif").write_text(text)
    before = _snapshot(tmp_path)
    code, _, err = _run(monkeypatch, capsys, "build", "out", "--cifs", str(cifs), "-q")
    _assert_one_line_error(code, err, expected, "cifs[bold]" if not name.startswith("huge") else name)
    assert _snapshot(tmp_path) == before


@pytest.fixture
def task1_frame(small_store) -> pd.DataFrame:
    ev = Evaluator(1, "ood", small_store)
    ds = c2np.open_dataset(small_store)
    preds = {int(r.config_id): ds.canonical(r.material, int(r.radius)) for r in ev.targets().itertuples()}
    path = small_store.parent / "t1.parquet"
    write_task1(path, preds)
    return pd.read_parquet(path)


def _t1_cases(frame: pd.DataFrame) -> dict:
    first = frame["config_id"] == frame["config_id"].iloc[0]
    big = frame[first].iloc[[0]].loc[lambda f: f.index.repeat(100_000)].assign(
        x=np.arange(100_000) * 0.05)
    return {
        "string_ids": (frame.assign(config_id=frame["config_id"].astype(str) + "a"), "config_id must hold integers"),
        "fraction_ids": (frame.assign(config_id=frame["config_id"] + 0.9), "config_id must be integers"),
        "string_coords": (frame.assign(x=frame["x"].astype(str)), "column x must be numeric"),
        "null_symbols": (frame.drop(columns="Z").assign(symbol=None), "column symbol has empty"),
        "huge_coords": (frame.assign(x=frame["x"] * 1e300), "positions beyond"),
        "too_many_atoms": (pd.concat([frame[~first], big]), "at most 2x the target's atoms"),
    }


@pytest.mark.parametrize("case", ["string_ids", "fraction_ids", "string_coords", "null_symbols",
                                  "huge_coords", "too_many_atoms"])
def test_hostile_task1_predictions(tmp_path, monkeypatch, capsys, small_store, task1_frame, case):
    monkeypatch.chdir(tmp_path)
    frame, expected = _t1_cases(task1_frame)[case]
    frame.to_parquet(tmp_path / "p[red]x.parquet", index=False)
    before = _snapshot(tmp_path)
    code, _, err = _run(monkeypatch, capsys, "evaluate", "--task", "1", "--split", "ood", "--predictions",
                        "p[red]x.parquet", "--store", str(small_store), "--out", "r.json", "-q", "-j", "1")
    _assert_one_line_error(code, err, "p[red]x.parquet", expected)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("config_id,expected", [("abc", "config_id='abc'"), ("15339.9", "config_id=15339.9")])
def test_hostile_extxyz_ids(tmp_path, monkeypatch, capsys, small_store, config_id, expected):
    monkeypatch.chdir(tmp_path)
    Path("p.extxyz").write_text(f'1\nProperties=species:S:1:pos:R:3 config_id={config_id}\nH 0 0 0\n')
    code, _, err = _run(monkeypatch, capsys, "evaluate", "--task", "1", "--split", "ood",
                        "--predictions", "p.extxyz", "--store", str(small_store), "-q")
    _assert_one_line_error(code, err, expected)


@pytest.fixture
def task2_frame(small_store) -> pd.DataFrame:
    return Evaluator(2, "ood", small_store).targets()


@pytest.mark.parametrize("case,expected", [
    ("huge_length", "zero, negative or absurd lengths"),
    ("bool_spacegroup", "column spacegroup must be numeric"),
    ("header_only", "no rows"),
    ("directory", "is a directory, not a prediction file"),
    ("missing", "no such prediction file"),
])
def test_hostile_task2_predictions(tmp_path, monkeypatch, capsys, small_store, task2_frame, case, expected):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "p[red].csv"
    if case == "huge_length":
        write_task2(path, task2_frame.assign(a=1e308))
    elif case == "bool_spacegroup":
        write_task2(path, task2_frame.assign(spacegroup=True))
    elif case == "header_only":
        write_task2(path, task2_frame.iloc[:0])
    elif case == "directory":
        path.mkdir()
    before = _snapshot(tmp_path)
    code, _, err = _run(monkeypatch, capsys, "evaluate", "--task", "2", "--split", "ood", "--predictions",
                        path.name, "--store", str(small_store), "--out", "r.json", "-q")
    _assert_one_line_error(code, err, "p[red].csv", expected)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("args,expected", [
    (["--sample", "-1"], "sample must be a positive integer"),
    (["--sample", "0"], "sample must be a positive integer"),
    (["--out", "."], "is a directory"),
    (["--task", "x"], "Invalid value for '--task'"),
])
def test_hostile_evaluate_options(tmp_path, monkeypatch, capsys, small_store, task2_frame, args, expected):
    monkeypatch.chdir(tmp_path)
    write_task2(tmp_path / "p.csv", task2_frame)
    before = _snapshot(tmp_path)
    base = {"--task": "2", "--split": "ood", "--predictions": "p.csv", "--store": str(small_store)}
    base.update(dict(zip(args[::2], args[1::2])))
    code, _, err = _run(monkeypatch, capsys, "evaluate", *[x for kv in base.items() for x in kv], "-q")
    _assert_one_line_error(code, err, expected)
    assert _snapshot(tmp_path) == before


def test_targets_into_a_new_folder_writes_only_there(tmp_path, monkeypatch, capsys, small_store):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(monkeypatch, capsys, "targets", "--task", "2", "--split", "ood", "--out",
                        "nodir/x.csv", "--store", str(small_store))
    assert code == 0, err
    assert sorted(_snapshot(tmp_path)) == ["nodir", "nodir/x.csv"]


@pytest.mark.parametrize("command", [["view", "LiBeH3", "10", "--out", "v.html"], ["info"], ["stats"]])
def test_commands_on_a_corrupt_store_fail_in_one_line(tmp_path, monkeypatch, capsys, store, command):
    monkeypatch.chdir(tmp_path)
    _flip(layout.particle_file(store, "LiBeH3"), np.random.default_rng(0), 100, 200)
    args = [*command[:1], *(["--store", str(store)] if command[0] == "view" else [str(store)]), *command[1:]]
    code, out, err = _run(monkeypatch, capsys, *args)
    if command[0] == "info":  # info reads only the manifest and index: it says what it can
        assert code == 0 and "fingerprint" in out
        return
    _assert_one_line_error(code, err, "altered: particles/LiBeH3.parquet")
    assert not (tmp_path / "v.html").exists()


def test_long_errors_are_not_wrapped_and_markup_is_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    name = "a-very-long-directory-name-" * 5 + "[red]x[/b]"
    code, _, err = _run(monkeypatch, capsys, "info", name)
    _assert_one_line_error(code, err, name)


def test_verify_names_a_fix_that_works(store, monkeypatch, capsys, small_config, small_materials):
    (store / "notes.txt").write_text("mine")
    code, _, err = _run(monkeypatch, capsys, "verify", str(store))
    assert code == 1
    assert err.strip().splitlines() == [
        "unexpected: notes.txt (not in the manifest)",
        f"1 problem(s): remove notes.txt from {store}, then rebuild with `c2np build {store} --force`"]
    (store / "notes.txt").unlink()
    _flip(store / layout.INDEX, np.random.default_rng(1))
    code, _, err = _run(monkeypatch, capsys, "verify", str(store))
    assert code == 1 and err.strip().endswith(f"rebuild with `c2np build {store} --force`")
    build_store(store, small_config, small_materials, progress=False, force=True)  # the fix works
    code, out, _ = _run(monkeypatch, capsys, "verify", str(store))
    assert code == 0 and out.startswith("ok: every file")
