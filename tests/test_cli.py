import shutil

from typer.testing import CliRunner

from c2np.cli import app, parse_radii
from c2np.store import layout

runner = CliRunner()
SMALL = "[carve]\nradii = [6, 7, 10]\n[splits]\nid = [10]\nood = [6]\n"


def test_help_teaches_the_commands():
    out = runner.invoke(app, ["--help"]).output
    for cmd in ("build", "verify", "info", "export", "materials"):
        assert cmd in out
    assert "--cifs" in runner.invoke(app, ["build", "--help"]).output


def test_build_info_verify_export(tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    store = tmp_path / "store"
    res = runner.invoke(app, ["build", str(store), "--config", str(cfg), "-m", "KMgH3,LiBeH3", "-q", "-j", "1"])
    assert res.exit_code == 0, res.output
    assert "train" in res.output and "120" in res.output and "328" in res.output  # 2*60, 2*164
    res = runner.invoke(app, ["info", str(store)])
    assert res.exit_code == 0 and "fingerprint" in res.output
    # the fingerprint result JSONs record (store_fingerprint), which c2np report compares
    from c2np.store.dataset import open_dataset

    content = open_dataset(store).fingerprint
    assert f"content fingerprint {content[:16]}" in " ".join(res.output.split())
    assert runner.invoke(app, ["verify", str(store)]).exit_code == 0
    res = runner.invoke(app, ["export", "xyz", str(store), str(tmp_path / "x"), "-r", "7", "-m", "KMgH3", "-q"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "x/quaternions/KMgH3/R7/xyz").iterdir())) == 60
    # Alter a file: verify must fail with exit 1 and name it.
    (store / layout.CIFS / "KMgH3.cif").write_text("tampered")
    res = runner.invoke(app, ["verify", str(store)])
    assert res.exit_code == 1 and "cifs/KMgH3.cif" in res.output


def test_errors_are_one_clear_line(tmp_path):
    res = runner.invoke(app, ["build", str(tmp_path / "s"), "-m", "NoSuchH3"])
    assert res.exit_code == 2 and "error:" in res.output and "NoSuchH3" in res.output
    (tmp_path / "cifs").mkdir()
    (tmp_path / "cifs" / "Broken.cif").write_text("data_x\n_cell_length_a 4\n")
    res = runner.invoke(app, ["build", str(tmp_path / "s2"), "--cifs", str(tmp_path / "cifs")])
    assert res.exit_code == 2 and "Broken.cif" in res.output
    assert not (tmp_path / "s2").exists()
    res = runner.invoke(app, ["verify", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "manifest" in res.output


def test_user_cifs_build(tmp_path):
    from c2np.materials.catalogue import bundled_dir

    cifs = tmp_path / "mine"
    cifs.mkdir()
    shutil.copy(bundled_dir() / "cifs" / "NaMgH3.cif", cifs / "MyPerovskite.cif")
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    res = runner.invoke(app, ["build", str(tmp_path / "s"), "--cifs", str(cifs), "--config", str(cfg), "-q"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s" / "cifs" / "MyPerovskite.cif").exists()


def test_parse_radii():
    assert parse_radii("6-9,30,7") == [6, 7, 8, 9, 30]
    assert parse_radii(None) is None
