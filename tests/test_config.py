import pytest

from c2np.config import BuildConfig, config_from_dict, load_config
from c2np.errors import ConfigError
from c2np.store.build import config_toml


def test_default_counts_for_81_materials():
    cfg = BuildConfig()
    per = {"train": 0, "id": 0, "ood": 0}
    for r in cfg.radii:
        per[cfg.split_of(r)] += {"train": 60, "id": 93, "ood": 164}[cfg.split_of(r)] * 81
    assert per == {"train": 72_900, "id": 45_198, "ood": 53_136}
    assert sum(per.values()) == 171_234


def test_toml_round_trip(tmp_path):
    cfg = BuildConfig(radii=(6, 7, 12), id_radii=(12,), ood_radii=(6,), buffer=7.5)
    path = tmp_path / "c.toml"
    path.write_text(config_toml(cfg))
    again = load_config(path)
    assert again == cfg and again.fingerprint() == cfg.fingerprint()
    assert BuildConfig().fingerprint() != cfg.fingerprint()


@pytest.mark.parametrize("data,match", [
    ({"carve": {"radius": [6]}}, "unknown key"),
    ({"carv": {}}, "unknown key"),
    ({"carve": {"radii": [6, 6]}}, "strictly increasing"),
    ({"carve": {"radii": [0, 5]}}, "1..200"),
    ({"carve": {"radii": [6.5]}}, "integer"),
    ({"splits": {"id": [10], "ood": [10]}}, "both"),
    ({"splits": {"id": [99]}}, "not in carve.radii"),
    ({"rotations": {"id": {"theta": 0}}}, "theta"),
    ({"rotations": {"id": {"seed": 5, "seed_base": 5}}}, "exactly one"),
    ({"carve": {"centre": [0.5, 0.5, 1.5]}}, "centre"),
    ({"duplicates": {"tolerance": -1}}, "tolerance"),
])
def test_invalid_configs_are_rejected(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[carve\nradii = ")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such"):
        load_config(tmp_path / "missing.toml")
