"""Build configuration: what is carved, how it is rotated and how it is split.

Defaults reproduce the C2NP benchmark (``../shared/SPEC.md``). A configuration can be
read from TOML; unknown keys and inconsistent values are errors, never ignored, since a
silently ignored typo would build a different dataset under the same name.

Example ``c2np.toml`` (every key optional)::

    [carve]
    radii = [6, 7, 8]            # Angstrom, integers
    supercell = [20, 20, 20]
    centre = [0.5, 0.5, 0.5]     # fractional coordinates of the supercell
    buffer = 5.0                 # Angstrom between sphere and supercell faces, total
    boundary_tolerance = 1e-6    # Angstrom; atoms at |x - x0| <= R + tol are kept

    [splits]
    id = [10, 11, 17, 21, 24, 26]
    ood = [6, 7, 29, 30]         # every other radius is train
    scheme = "radius"            # or "materials": hold out a fold of materials (docs/splits.md)
    folds = 5                    # materials scheme: stratified folds over materials
    fold = 0                     # materials scheme: the held-out fold, 0 .. folds-1
    seed = 0                     # materials scheme: seed of the fold assignment

    [rotations.train]
    theta = 15.0
    seed = 1337

    [rotations.id]
    theta = 12.0
    margin = 6.0
    offset = [6.0, 8.0, 12.0]    # Euler xyz, degrees, left-multiplied
    seed_base = 1000             # seed = int(seed_base + R + theta)

    [duplicates]
    tolerance = 0.01             # Angstrom
    drop = false
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from c2np.errors import ConfigError

SPLITS = ("train", "id", "ood")
#: Splits of held-out materials (``materials`` scheme): every radius of them is test data.
UNSEEN_SPLITS = ("unseen_train", "unseen_id", "unseen_ood")
SCHEMES = ("radius", "materials")


@dataclass(frozen=True)
class GridSpec:
    """One orientation grid: separation ``theta``, margin from the train grid, offset, seed.

    Exactly one of ``seed`` (the same grid for every radius) and ``seed_base`` (seed
    ``int(seed_base + R + theta)`` per radius) is set.
    """

    theta: float
    seed: int | None = None
    seed_base: int | None = None
    margin: float = 0.0
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def seed_for(self, radius: int) -> int:
        """The sampler seed for ``radius``."""
        if self.seed is not None:
            return int(self.seed)
        return int(self.seed_base + radius + self.theta)


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the content of a dataset store."""

    radii: tuple[int, ...] = tuple(range(6, 31))
    supercell: tuple[int, int, int] = (20, 20, 20)
    centre: tuple[float, float, float] = (0.5, 0.5, 0.5)
    buffer: float = 5.0
    boundary_tolerance: float = 1e-6
    id_radii: tuple[int, ...] = (10, 11, 17, 21, 24, 26)
    ood_radii: tuple[int, ...] = (6, 7, 29, 30)
    grids: dict[str, GridSpec] = field(default_factory=lambda: {
        "train": GridSpec(theta=15.0, seed=1337),
        "id": GridSpec(theta=12.0, seed_base=1000, margin=6.0, offset=(6.0, 8.0, 12.0)),
        "ood": GridSpec(theta=9.0, seed_base=1000, margin=4.5, offset=(15.0, 25.0, 35.0)),
    })
    dedup_tolerance: float = 0.01
    drop_duplicates: bool = False
    split_scheme: str = "radius"
    material_folds: int = 5
    material_fold: int = 0
    material_seed: int = 0

    def __post_init__(self) -> None:
        _validate(self)

    def split_of(self, radius: int) -> str:
        """The split a radius belongs to."""
        if radius in self.ood_radii:
            return "ood"
        if radius in self.id_radii:
            return "id"
        return "train"

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names a store of this configuration holds."""
        return SPLITS + (UNSEEN_SPLITS if self.split_scheme == "materials" else ())

    @property
    def scheme_name(self) -> str:
        """The split scheme as recorded in manifests and result JSONs.

        ``radius`` is the paper's; ``materials-fold{f}of{k}-seed{s}`` holds out fold ``f``.
        """
        if self.split_scheme == "radius":
            return "radius"
        return f"materials-fold{self.material_fold}of{self.material_folds}-seed{self.material_seed}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable, canonical form (used in the manifest and the fingerprint)."""
        d = asdict(self)
        d["grids"] = {k: asdict(v) for k, v in sorted(self.grids.items())}
        if self.split_scheme == "radius":  # the paper's stores keep their fingerprint
            for k in ("split_scheme", "material_folds", "material_fold", "material_seed"):
                del d[k]
        return json.loads(json.dumps(d))

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON form: equal configs give equal fingerprints."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def with_overrides(self, **changes: Any) -> BuildConfig:
        """A copy with fields replaced (validated again)."""
        return replace(self, **changes)


def _validate(cfg: BuildConfig) -> None:
    radii = list(cfg.radii)
    if not radii:
        raise ConfigError("carve.radii is empty")
    if any(not isinstance(r, int) or isinstance(r, bool) for r in radii):
        raise ConfigError(f"carve.radii must be integers (Angstrom), got {radii}")
    if any(r <= 0 or r > 200 for r in radii):
        raise ConfigError(f"carve.radii must lie in 1..200 Angstrom, got {radii}")
    if len(set(radii)) != len(radii) or radii != sorted(radii):
        raise ConfigError(f"carve.radii must be strictly increasing, got {radii}")
    if len(cfg.supercell) != 3 or any(not isinstance(n, int) or n < 1 for n in cfg.supercell):
        raise ConfigError(f"carve.supercell must be three positive integers, got {cfg.supercell}")
    if len(cfg.centre) != 3 or any(not 0.0 <= c <= 1.0 for c in cfg.centre):
        raise ConfigError(f"carve.centre must be three fractions in [0, 1], got {cfg.centre}")
    if not 0.0 <= cfg.buffer < 1e3:
        raise ConfigError(f"carve.buffer must be >= 0 Angstrom, got {cfg.buffer}")
    if not 0.0 <= cfg.boundary_tolerance <= 0.1:
        raise ConfigError(f"carve.boundary_tolerance must lie in [0, 0.1] A, got {cfg.boundary_tolerance}")
    overlap = set(cfg.id_radii) & set(cfg.ood_radii)
    if overlap:
        raise ConfigError(f"radii {sorted(overlap)} are in both splits.id and splits.ood")
    stray = (set(cfg.id_radii) | set(cfg.ood_radii)) - set(radii)
    if stray:
        raise ConfigError(f"split radii {sorted(stray)} are not in carve.radii")
    if set(cfg.grids) != set(SPLITS):
        raise ConfigError(f"rotations must define exactly {SPLITS}, got {sorted(cfg.grids)}")
    for name, g in cfg.grids.items():
        if not 0.0 < g.theta < 180.0:
            raise ConfigError(f"rotations.{name}.theta must lie in (0, 180) degrees, got {g.theta}")
        if (g.seed is None) == (g.seed_base is None):
            raise ConfigError(f"rotations.{name}: give exactly one of seed and seed_base")
        if not 0.0 <= g.margin < 180.0:
            raise ConfigError(f"rotations.{name}.margin must lie in [0, 180) degrees")
        if len(g.offset) != 3:
            raise ConfigError(f"rotations.{name}.offset must be three Euler angles (degrees)")
    if cfg.grids["train"].margin != 0.0:
        raise ConfigError("rotations.train.margin must be 0: the margin is measured from the train grid")
    if not 0.0 < cfg.dedup_tolerance < 1.0:
        raise ConfigError(f"duplicates.tolerance must lie in (0, 1) Angstrom, got {cfg.dedup_tolerance}")
    if cfg.split_scheme not in SCHEMES:
        raise ConfigError(f"splits.scheme must be one of {', '.join(SCHEMES)}, got {cfg.split_scheme!r}")
    for key, value in (("folds", cfg.material_folds), ("fold", cfg.material_fold), ("seed", cfg.material_seed)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"splits.{key} must be an integer, got {value!r}")
    if cfg.material_folds < 2:
        raise ConfigError(f"splits.folds must be >= 2, got {cfg.material_folds}")
    if not 0 <= cfg.material_fold < cfg.material_folds:
        raise ConfigError(f"splits.fold must lie in 0..{cfg.material_folds - 1}, got {cfg.material_fold}")


_SECTIONS = {
    "carve": {"radii", "supercell", "centre", "buffer", "boundary_tolerance"},
    "splits": {"id", "ood", "scheme", "folds", "fold", "seed"},
    "rotations": set(SPLITS),
    "duplicates": {"tolerance", "drop"},
}
_GRID_KEYS = {"theta", "seed", "seed_base", "margin", "offset"}


def _check_keys(where: str, got: dict, allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def config_from_dict(data: dict[str, Any], where: str = "config") -> BuildConfig:
    """Build a validated :class:`BuildConfig` from TOML-shaped data (missing keys: defaults)."""
    _check_keys(where, data, set(_SECTIONS))
    for sec, keys in _SECTIONS.items():
        if not isinstance(data.get(sec, {}), dict):
            raise ConfigError(f"{where}: [{sec}] must be a table")
        _check_keys(f"{where} [{sec}]", data.get(sec, {}), keys)
    base = BuildConfig()
    carve, splits, dup = data.get("carve", {}), data.get("splits", {}), data.get("duplicates", {})
    grids = dict(base.grids)
    for name, g in data.get("rotations", {}).items():
        if not isinstance(g, dict):
            raise ConfigError(f"{where}: [rotations.{name}] must be a table")
        _check_keys(f"{where} [rotations.{name}]", g, _GRID_KEYS)
        merged = {**asdict(grids[name]), **g}
        if "seed" in g and "seed_base" not in g:
            merged["seed_base"] = None
        if "seed_base" in g and "seed" not in g:
            merged["seed"] = None
        merged["offset"] = tuple(float(x) for x in merged["offset"])
        grids[name] = GridSpec(**merged)
    try:
        return BuildConfig(
            radii=tuple(carve.get("radii", base.radii)),
            supercell=tuple(carve.get("supercell", base.supercell)),
            centre=tuple(float(x) for x in carve.get("centre", base.centre)),
            buffer=float(carve.get("buffer", base.buffer)),
            boundary_tolerance=float(carve.get("boundary_tolerance", base.boundary_tolerance)),
            id_radii=tuple(splits.get("id", base.id_radii)),
            ood_radii=tuple(splits.get("ood", base.ood_radii)),
            grids=grids,
            dedup_tolerance=float(dup.get("tolerance", base.dedup_tolerance)),
            drop_duplicates=bool(dup.get("drop", base.drop_duplicates)),
            split_scheme=splits.get("scheme", base.split_scheme),
            material_folds=splits.get("folds", base.material_folds),
            material_fold=splits.get("fold", base.material_fold),
            material_seed=splits.get("seed", base.material_seed),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_config(path: Path | None) -> BuildConfig:
    """Read a TOML build configuration; ``None`` gives the benchmark defaults."""
    if path is None:
        return BuildConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    return config_from_dict(data, str(path))
