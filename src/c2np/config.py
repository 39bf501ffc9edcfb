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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from c2np.errors import ConfigError

SPLITS = ("train", "id", "ood")
#: Smallest grid separation (degrees): N(theta) grows as 1/theta^2 (525 rotations per
#: radius at 5 degrees, 52,522 at 0.5), and with it the store and the duplicate search.
MIN_THETA = 5.0
#: Splits of held-out materials (``materials`` scheme): every radius of them is test data.
UNSEEN_SPLITS = ("unseen_train", "unseen_id", "unseen_ood")
SCHEMES = ("radius", "materials")
#: Version of the learned baselines' training objective per task, recorded in run.json and
#: in every learned result. Task 1 version 2: the composition term is a KL divergence (1
#: was the cross-entropy, whose floor of about 0.95 nats loosened the stopping rule).
#: Results of an older version are reported under their own name (``c2np.reporting``).
OBJECTIVE_VERSIONS = {1: 2, 2: 1}
#: A model whose objective moved on alone: FlowMM Task 1 version 3 adds the exact drift of
#: uniform-ball data to its network's output (the network regresses the residual; version
#: 2's network could not give that drift and collapsed large particles; c2np.models.flowmm).
MODEL_OBJECTIVE_VERSIONS = {("flowmm", 1): 3}


def objective_version(task: int, model: str) -> int:
    """The current objective version of ``model`` on ``task``."""
    return MODEL_OBJECTIVE_VERSIONS.get((model, int(task)), OBJECTIVE_VERSIONS[int(task)])


#: run.json stop reasons after which a run trains no further: its best.ckpt is final and
#: only prediction is left (benchmarks/table5_lib.sh's stopped_for_good tests the same three).
FINAL_STOP_REASONS = ("converged", "max_epochs", "max_time")


def recorded_objective(run: dict) -> int:
    """The objective version a run.json (or a result's ``model_run``) records; runs of
    before the version was recorded trained under version 1."""
    return int(run.get("objective_version") or 1)


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
        if not MIN_THETA <= g.theta < 180.0:
            raise ConfigError(f"rotations.{name}.theta must lie in [{MIN_THETA:g}, 180) degrees, got "
                              f"{g.theta} (the grid holds ~2/(1-cos theta) rotations per radius)")
        if (g.seed is None) == (g.seed_base is None):
            raise ConfigError(f"rotations.{name}: give exactly one of seed and seed_base")
        for key in ("seed", "seed_base"):
            value = getattr(g, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ConfigError(f"rotations.{name}.{key} must be a non-negative integer, got {value!r}")
        if name != "train" and not 0.0 <= g.margin <= cfg.grids["train"].theta / 2:
            raise ConfigError(
                f"rotations.{name}.margin must lie in [0, {cfg.grids['train'].theta / 2:g}] degrees "
                f"(half of rotations.train.theta, so that SO(3) keeps room for the grid), got {g.margin}")
        if len(g.offset) != 3:
            raise ConfigError(f"rotations.{name}.offset must be three Euler angles (degrees)")
    if cfg.grids["train"].margin != 0.0:
        raise ConfigError("rotations.train.margin must be 0: the margin is measured from the train grid")
    if not isinstance(cfg.drop_duplicates, bool):
        raise ConfigError(f"duplicates.drop must be true or false, got {cfg.drop_duplicates!r}")
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


class _Table(BaseModel):
    """A TOML table, typed strictly: ``"1337"`` is not an integer, ``"no"`` is not a boolean,
    ``1337.5`` is not a seed, NaN and infinity are not numbers, and unknown keys are errors.

    Each section declares one field per TOML key: the field name is the
    :class:`BuildConfig` field it sets, the alias (when different) the TOML key. A key
    left out keeps the benchmark default (``None`` here means "not given").
    """

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class _Carve(_Table):
    radii: list[int] | None = None
    supercell: list[int] | None = Field(None, min_length=3, max_length=3)
    centre: list[float] | None = Field(None, min_length=3, max_length=3)
    buffer: float | None = None
    boundary_tolerance: float | None = None


class _Splits(_Table):
    id_radii: list[int] | None = Field(None, alias="id")
    ood_radii: list[int] | None = Field(None, alias="ood")
    split_scheme: str | None = Field(None, alias="scheme")
    material_folds: int | None = Field(None, alias="folds")
    material_fold: int | None = Field(None, alias="fold")
    material_seed: int | None = Field(None, alias="seed", ge=0, lt=2**63)


class _Grid(_Table):
    theta: float | None = None
    # numpy's default_rng takes seeds in [0, 2^63); seed_base + R + theta must stay there too.
    seed: int | None = Field(None, ge=0, lt=2**63)
    seed_base: int | None = Field(None, ge=0, lt=2**62)
    margin: float | None = None
    offset: list[float] | None = Field(None, min_length=3, max_length=3)


class _Rotations(_Table):
    train: _Grid | None = None
    id: _Grid | None = None
    ood: _Grid | None = None


class _Duplicates(_Table):
    dedup_tolerance: float | None = Field(None, alias="tolerance")
    drop_duplicates: bool | None = Field(None, alias="drop")


class _ConfigFile(_Table):
    carve: _Carve = _Carve()
    splits: _Splits = _Splits()
    rotations: _Rotations = _Rotations()
    duplicates: _Duplicates = _Duplicates()


_WHAT = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
         "list_type": "an array", "model_type": "a table", "dict_type": "a table",
         "finite_number": "a finite number"}


def _error_line(error: dict, where: str) -> str:
    """One validation error as ``where: key.path: what is wrong (got value)``."""
    loc = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in error["loc"]).lstrip(".")
    kind = error["type"]
    if kind == "extra_forbidden":
        section = _ConfigFile
        for part in error["loc"][:-1]:
            section = section.model_fields[part].annotation
            section = next((a for a in getattr(section, "__args__", (section,)) if a is not type(None)))
        allowed = sorted(f.alias or name for name, f in section.model_fields.items())
        return f"{where}: unknown key {loc!r}; allowed here: {', '.join(allowed)}"
    got = error.get("input")
    if kind in _WHAT:
        return f"{where}: {loc} must be {_WHAT[kind]}, got {got!r} ({type(got).__name__})"
    return f"{where}: {loc}: {error['msg']} (got {got!r})"


def _given(table: _Table) -> dict[str, Any]:
    return {name: tuple(v) if isinstance(v, list) else v for name, v in table if v is not None}


def config_from_dict(data: dict[str, Any], where: str = "config") -> BuildConfig:
    """Build a validated :class:`BuildConfig` from TOML-shaped data (missing keys: defaults)."""
    try:
        parsed = _ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(_error_line(e, where) for e in exc.errors()[:3])) from None
    base = BuildConfig()
    grids = dict(base.grids)
    for name, g in parsed.rotations:
        if g is None:
            continue
        merged = {**asdict(grids[name]), **_given(g)}
        # Giving one of seed / seed_base replaces the default's other one.
        if g.seed is not None and g.seed_base is None:
            merged["seed_base"] = None
        if g.seed_base is not None and g.seed is None:
            merged["seed"] = None
        grids[name] = GridSpec(**merged)
    fields = {**_given(parsed.carve), **_given(parsed.splits), **_given(parsed.duplicates)}
    try:
        return BuildConfig(**fields, grids=grids)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(path: Path | None) -> BuildConfig:
    """Read a TOML build configuration; ``None`` gives the benchmark defaults."""
    if path is None:
        return BuildConfig()
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a TOML config file")
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (TOML must be UTF-8)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    return config_from_dict(data, str(path))
