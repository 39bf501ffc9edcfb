"""Training configurations: one TOML file per (model, task) in ``configs/``, overridable
with ``section.key=value`` strings (``c2np train --set train.epochs=5``)."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path

from c2np.errors import ConfigError

SECTIONS = ("model", "train", "predict")


def config_path(model: str, task: int) -> Path:
    """The bundled config file of ``model`` on ``task``."""
    return Path(str(resources.files("c2np.training") / "configs" / f"{model}_task{task}.toml"))


def bundled_models() -> list[str]:
    """Model names with a bundled Task 1 config (the registry's families), sorted; read
    from the config files so that the CLI can list them without importing PyTorch."""
    folder = resources.files("c2np.training") / "configs"
    return sorted(p.name.removesuffix("_task1.toml") for p in folder.iterdir()
                  if p.name.endswith("_task1.toml"))


def load_training_config(model: str, task: int, path: Path | None = None,
                         overrides: list[str] | None = None) -> dict:
    """Read the config (bundled unless ``path``) and apply ``overrides``."""
    path = Path(path) if path is not None else config_path(model, task)
    if not path.exists():
        raise ConfigError(f"{path}: no such config (bundled: {', '.join(bundled_models())}; task 1/2)")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg = apply_overrides(cfg, overrides or [])
    missing = [s for s in SECTIONS if s not in cfg]
    if missing:
        raise ConfigError(f"{path}: missing section(s) {missing}")
    if cfg["model"].get("name") != model or int(cfg["model"].get("task", 0)) != task:
        raise ConfigError(f"{path}: is for model {cfg['model'].get('name')!r} task "
                          f"{cfg['model'].get('task')}, not {model!r} task {task}")
    return cfg


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """``["train.epochs=5", "model.hidden=32"]`` -> a new config; values are TOML literals
    (bare words are strings)."""
    out = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in SECTIONS or not name:
            raise ConfigError(f"override {item!r}: use section.key=value with section in {SECTIONS}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        if name not in out.get(section, {}):
            known = ", ".join(sorted(out.get(section, {})))
            raise ConfigError(f"override {item!r}: {section} has no key {name!r} (keys: {known})")
        out[section][name] = value
    return out
