"""Prediction files: formats, reading, writing and validation.

Task 1 (one predicted particle per sample):
  * Parquet, long format, one row per atom: ``config_id`` (int), ``Z`` (int) or
    ``symbol`` (str), ``x``, ``y``, ``z`` (float, Angstrom);
  * extended XYZ, one frame per sample, with ``config_id=<int>`` in the comment line.
Task 2 (one row per configuration): CSV or Parquet with ``config_id, a, b, c, alpha,
beta, gamma, spacegroup`` (Angstrom, degrees, ITA number 1-230).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from ase import Atoms
from ase.data import atomic_numbers

from c2np.errors import C2NPError
from c2np.store.layout import atomic_write
from c2np.tasks.targets import LATTICE_COLUMNS


class PredictionError(C2NPError):
    """A prediction file is unreadable or does not fit the task's targets."""


def _first(items, n: int = 10) -> str:
    items = list(items)
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return ", ".join(str(x) for x in items[:n]) + more


def check_ids(got: np.ndarray, expected: np.ndarray, where: str) -> None:
    """Every expected id exactly once, nothing else."""
    got = np.asarray(got)
    uniq, counts = np.unique(got, return_counts=True)
    problems = []
    dup = uniq[counts > 1]
    if len(dup):
        problems.append(f"duplicate config_id: {_first(dup)}")
    missing = np.setdiff1d(expected, uniq)
    if len(missing):
        problems.append(f"{len(missing)} missing config_id: {_first(missing)}")
    unknown = np.setdiff1d(uniq, expected)
    if len(unknown):
        problems.append(f"{len(unknown)} config_id not in this split: {_first(unknown)}")
    if problems:
        raise PredictionError(f"{where}: " + "; ".join(problems))


#: Largest accepted |coordinate| (Angstrom) and lattice length: far beyond any particle
#: or cell, and small enough that squared distances cannot overflow to infinity.
MAX_COORDINATE = 1e4


def _existing_file(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise PredictionError(f"{path}: is a directory, not a prediction file")
    if not path.is_file():
        raise PredictionError(f"{path}: no such prediction file")
    return path


def _integer_ids(values: pd.Series, where: str) -> np.ndarray:
    """config_id as int64; strings, booleans, NaN and fractions are errors, not truncated."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        raise PredictionError(f"{where}: column config_id must hold integers, got {values.dtype} "
                              f"values such as {values.iloc[0]!r}")
    v = values.to_numpy(float)
    bad = ~np.isfinite(v) | (v != np.round(v))
    if bad.any():
        raise PredictionError(f"{where}: config_id must be integers, got {_first(values[bad].unique())}")
    return v.astype(np.int64)


def _numeric(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    for c in columns:
        if pd.api.types.is_bool_dtype(frame[c]) or not pd.api.types.is_numeric_dtype(frame[c]):
            raise PredictionError(f"{where}: column {c} must be numeric, got {frame[c].dtype} values "
                                  f"such as {frame[c].iloc[0]!r}")


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    frame = None
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            frame = pd.read_csv(path)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise PredictionError(f"{path}: cannot read {suffix[1:]} ({reason})") from None
    if frame is not None:
        if len(frame) == 0:
            raise PredictionError(f"{path}: no rows (only a header)")
        return frame
    raise PredictionError(f"{path}: unsupported file type {suffix or '(none)'}; "
                          "use .parquet or .csv (Task 2) or .parquet or .extxyz (Task 1)")


def read_task2(path: Path | pd.DataFrame, expected_ids: np.ndarray) -> pd.DataFrame:
    """Read and validate Task 2 predictions; returns a frame sorted like ``expected_ids``."""
    where = "predictions" if isinstance(path, pd.DataFrame) else str(path)
    if isinstance(path, pd.DataFrame):
        frame = path.copy()
    else:
        frame = _read_table(_existing_file(path))
    need = ["config_id", *LATTICE_COLUMNS, "spacegroup"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise PredictionError(f"{where}: missing column(s) {', '.join(missing)}; need {', '.join(need)}")
    if len(frame) == 0:
        raise PredictionError(f"{where}: no rows")
    frame = frame.assign(config_id=_integer_ids(frame["config_id"], where))
    _numeric(frame, need[1:], where)
    check_ids(frame["config_id"].to_numpy(), expected_ids, where)
    values = frame[LATTICE_COLUMNS].to_numpy(float)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise PredictionError(f"{where}: NaN or infinite lattice values for config_id "
                              f"{_first(frame['config_id'][bad])}")
    bad = ((values[:, :3] <= 0) | (values[:, :3] > MAX_COORDINATE)).any(axis=1)
    if bad.any():
        raise PredictionError(f"{where}: zero, negative or absurd lengths (outside (0, {MAX_COORDINATE:g}] A) for config_id "
                              f"{_first(frame['config_id'][bad])}")
    bad = ((values[:, 3:] <= 0) | (values[:, 3:] >= 180)).any(axis=1)
    if bad.any():
        raise PredictionError(f"{where}: angles outside (0, 180) degrees for config_id "
                              f"{_first(frame['config_id'][bad])}")
    sg = frame["spacegroup"].to_numpy(float)
    bad = ~np.isfinite(sg) | (sg != np.round(sg)) | (sg < 1) | (sg > 230)
    if bad.any():
        raise PredictionError(f"{where}: space group must be an integer 1-230 for config_id "
                              f"{_first(frame['config_id'][bad])}")
    frame = frame.set_index("config_id").loc[expected_ids].reset_index()
    frame["spacegroup"] = frame["spacegroup"].astype(np.int64)
    return frame


def _species(values: pd.Series, where: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values):
        raise PredictionError(f"{where}: atomic numbers must be integers, not booleans")
    if pd.api.types.is_numeric_dtype(values):
        z = values.to_numpy()
        bad = ~np.isfinite(z.astype(float)) | (z < 1) | (z > 118) | (z != np.round(z))
        if bad.any():
            raise PredictionError(f"{where}: unknown atomic numbers {_first(np.unique(z[bad]))}")
        return z.astype(np.int64)
    if values.isna().any() or not all(isinstance(v, str) for v in values):
        raise PredictionError(f"{where}: column symbol has empty or non-text values")
    unknown = sorted(s for s in set(values) if atomic_numbers.get(s, 0) == 0)
    if unknown:
        raise PredictionError(f"{where}: unknown element symbols {_first(unknown)}")
    return values.map(atomic_numbers).to_numpy(np.int64)


def read_task1(path: Path | dict, expected_ids: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Read and validate Task 1 predictions: ``{config_id: (numbers, positions)}``."""
    if isinstance(path, dict):
        where = "predictions"
        out = {}
        for k, v in path.items():
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise PredictionError(f"{where}: config_id keys must be integers, got {k!r}")
            out[int(k)] = (np.asarray(v.numbers), np.asarray(v.positions, float))
    else:
        path = _existing_file(path)
        where = str(path)
        if path.suffix.lower() in (".extxyz", ".xyz"):
            out = _read_extxyz(path)
        elif path.suffix.lower() != ".parquet":
            raise PredictionError(f"{path}: unsupported Task 1 file type {path.suffix or '(none)'}; "
                                  "use .parquet (config_id, Z or symbol, x, y, z) or .extxyz")
        else:
            frame = _read_table(path)
            species = "Z" if "Z" in frame.columns else "symbol"
            need = ["config_id", species, "x", "y", "z"]
            missing = [c for c in need if c not in frame.columns]
            if missing:
                raise PredictionError(f"{path}: missing column(s) {missing}; need config_id, Z or "
                                      "symbol, x, y, z")
            _numeric(frame, ["x", "y", "z"], where)
            ids = _integer_ids(frame["config_id"], where)
            z = _species(frame[species], where)
            pos = frame[["x", "y", "z"]].to_numpy(float)
            order = np.argsort(ids, kind="stable")
            bounds = np.flatnonzero(np.diff(ids[order])) + 1
            out = {int(ids[g[0]]): (z[g], pos[g]) for g in np.split(order, bounds) if len(g)}
    check_ids(np.array(list(out), dtype=np.int64), expected_ids, where)
    # Two atoms at one position are not refused: a generative model can put them there (a
    # flow contracting onto a site makes them bit-identical), the metrics stay finite and
    # penalise the pair, and the result's `validity` counts such particles.
    for cid, (z, pos) in out.items():
        if len(z) == 0:
            raise PredictionError(f"{where}: config_id {cid} has no atoms")
        if not np.all(np.isfinite(pos)):
            raise PredictionError(f"{where}: NaN or infinite positions for config_id {cid}")
        if np.abs(pos).max() > MAX_COORDINATE:
            raise PredictionError(f"{where}: positions beyond {MAX_COORDINATE:g} A for config_id {cid}")
        if np.any((z < 1) | (z > 118)):
            raise PredictionError(f"{where}: unknown atomic numbers for config_id {cid}")
    return out


def _read_extxyz(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    from ase.io import read

    try:
        frames = read(path, index=":", format="extxyz")
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or ["malformed frame"])[0][:200]
        raise PredictionError(f"{path}: cannot read extended XYZ ({reason})") from None
    out = {}
    for k, atoms in enumerate(frames):
        if "config_id" not in atoms.info:
            raise PredictionError(f"{path}: frame {k} has no config_id=<int> in its comment line")
        cid = atoms.info["config_id"]
        if isinstance(cid, bool) or not isinstance(cid, (int, np.integer)):
            value = cid.item() if isinstance(cid, np.generic) else cid
            raise PredictionError(f"{path}: frame {k} has config_id={value!r}; it must be an integer")
        cid = int(cid)
        if cid in out:
            raise PredictionError(f"{path}: duplicate config_id: {cid}")
        out[cid] = (atoms.numbers.copy(), atoms.positions.copy())
    return out


def task1_frame(particles: dict[int, Atoms]) -> pd.DataFrame:
    """Task 1 predictions as the long-format table of the Parquet file (one row per atom,
    particles in the dict's order)."""
    ids = np.concatenate([np.full(len(a), cid, np.int64) for cid, a in particles.items()])
    z = np.concatenate([a.numbers for a in particles.values()])
    pos = np.concatenate([a.positions for a in particles.values()])
    return pd.DataFrame({"config_id": ids, "Z": z.astype(np.int16), "x": pos[:, 0], "y": pos[:, 1],
                         "z": pos[:, 2]})


def write_task1(path: Path, particles: dict[int, Atoms] | pd.DataFrame) -> None:
    """Write Task 1 predictions (particles, or their :func:`task1_frame`) as long-format Parquet."""
    frame = particles if isinstance(particles, pd.DataFrame) else task1_frame(particles)
    # atomic: a run killed mid-write (a GPU session's time limit) leaves no half file that
    # a resuming script would take for a finished one
    atomic_write(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def write_table(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` atomically as CSV (a ``.csv`` suffix) or else Parquet."""
    if Path(path).suffix.lower() == ".csv":
        atomic_write(Path(path), lambda tmp: frame.to_csv(tmp, index=False))
    else:
        atomic_write(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def write_task2(path: Path, frame: pd.DataFrame) -> None:
    """Write Task 2 predictions (CSV or Parquet by suffix)."""
    write_table(path, frame[["config_id", *LATTICE_COLUMNS, "spacegroup"]])
