"""Building a dataset store: carve, rotate, split, detect duplicates, write, hash.

The build is deterministic (same config and materials give byte-identical files),
parallel over materials, resumable (finished particle files are kept after a kill; the
progress journal records each one's SHA-256, and a rerun of the same build reuses only
files whose hash still matches), and atomic per file. The manifest is written last, so
a store without a manifest is known to be unfinished. A build holds the store's lock
(:mod:`c2np.store.lock`): a second writer into the same directory is refused.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from c2np.carve import carve, check_fits
from c2np.config import SPLITS, BuildConfig
from c2np.errors import CarveError, StoreError
from c2np.materials.catalogue import Material, describe
from c2np.particle_symmetry import duplicate_of, particle_symmetry_group
from c2np.progress import progress_bar
from c2np.rotations import configuration_quaternions, euler_xyz_degrees, rotation_matrices, train_grid
from c2np.store import layout
from c2np.store.lock import store_lock
from c2np.store.manifest import material_digest, write_manifest
from c2np.store.particles import ParticleFile, write_particles
from c2np.symmetry import proper_rotations_cartesian


@dataclass(frozen=True)
class BuildSummary:
    """What a build produced (``seconds`` and ``reused`` describe this run only)."""

    store: Path
    counts: dict[str, int]
    atoms_min: int
    atoms_max: int
    duplicates: int
    size_bytes: int
    seconds: float
    reused: int
    up_to_date: bool = False


#: Fewest atoms a particle may have: a convex hull, an RDF and the statistics all need
#: at least four points not in one plane, so a cell too large for the smallest radius
#: (or so long along one axis that the particle is a flat slab) is refused.
MIN_PARTICLE_ATOMS = 4
#: Thinnest accepted particle (Angstrom, RMS extent along its flattest direction).
MIN_PARTICLE_THICKNESS = 0.01


def _check_particle(particle, name: str, radius: int) -> None:
    n = len(particle)
    hint = "the unit cell is too large for this radius; use larger radii or a smaller cell"
    if n < MIN_PARTICLE_ATOMS:
        raise CarveError(f"{name}: the R={radius} A particle has {n} atom(s) "
                         f"(fewer than {MIN_PARTICLE_ATOMS}): {hint}")
    centred = particle.positions - particle.positions.mean(axis=0)
    if np.linalg.svd(centred, compute_uv=False)[-1] / np.sqrt(n) < MIN_PARTICLE_THICKNESS:
        raise CarveError(f"{name}: the R={radius} A particle is flat (its {n} atoms lie in one "
                         f"plane or line): {hint}")


def _material_rows(material: Material, cfg: BuildConfig, quats: dict[int, np.ndarray],
                   store: Path, recorded: str | None) -> tuple[list[dict], str, bool]:
    """Carve (or reuse) one material's particles and describe its configurations.

    A leftover particle file is reused only if its SHA-256 equals ``recorded``, the hash
    the progress journal took when this build wrote it. Returns the rows, the file's
    SHA-256 and whether it was reused.
    """
    path = layout.particle_file(store, material.name)
    particles = None
    if recorded is not None and path.is_file() and layout.sha256_file(path) == recorded:
        try:
            pf = ParticleFile(path)
            if pf.radii == list(cfg.radii):
                particles = {r: pf.particle(r) for r in cfg.radii}
        except StoreError:
            particles = None  # unreadable leftover: carve again
    reused = particles is not None
    if particles is None:
        particles = {}
        for r in cfg.radii:
            particles[r] = carve(material.cell, r, cfg.supercell, cfg.centre, cfg.buffer,
                                 cfg.boundary_tolerance, material.name)
            _check_particle(particles[r], material.name, r)
        write_particles(path, material.name, particles)
    candidates = proper_rotations_cartesian(material.cell)
    rows = []
    for r in cfg.radii:
        p = particles[r]
        group = particle_symmetry_group(p, candidates, cfg.dedup_tolerance)
        rmax = float(np.sqrt((p.positions ** 2).sum(axis=1).max())) if len(p) else 0.0
        dup = duplicate_of(rotation_matrices(quats[r]), group, rmax, cfg.dedup_tolerance)
        rows.append({"material": material.name, "radius": r, "n_atoms": len(p),
                     "symmetry_order": len(group), "duplicate_of": dup})
    return rows, layout.sha256_file(path), reused


def _rotations_table(cfg: BuildConfig) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    train = train_grid(cfg)
    quats = {r: configuration_quaternions(cfg, r, train) for r in cfg.radii}
    frames = []
    for r, q in quats.items():
        e = euler_xyz_degrees(q)
        frames.append(pd.DataFrame({
            "split": cfg.split_of(r), "radius": np.int16(r), "rotation_id": np.arange(len(q), dtype=np.int16),
            "qx": q[:, 0], "qy": q[:, 1], "qz": q[:, 2], "qw": q[:, 3],
            "euler_x": e[:, 0], "euler_y": e[:, 1], "euler_z": e[:, 2]}))
    return pd.concat(frames, ignore_index=True), quats


def _index_table(rows: list[dict], rotations: pd.DataFrame, drop: bool) -> pd.DataFrame:
    groups = pd.DataFrame([{k: v for k, v in r.items() if k != "duplicate_of"} for r in rows])
    groups["duplicate_of"] = [r["duplicate_of"] for r in rows]
    groups["group_duplicates"] = [int((r["duplicate_of"] >= 0).sum()) for r in rows]
    merged = groups.merge(rotations, on="radius", how="left", sort=False)
    merged["duplicate_of"] = [int(d[i]) for d, i in zip(merged["duplicate_of"], merged["rotation_id"])]
    merged["duplicate"] = merged["duplicate_of"] >= 0
    merged.insert(0, "config_id", np.arange(len(merged), dtype=np.int64))
    if drop:
        merged = merged[~merged["duplicate"]].reset_index(drop=True)
    cols = ["config_id", "material", "radius", "split", "rotation_id", "qx", "qy", "qz", "qw",
            "euler_x", "euler_y", "euler_z", "n_atoms", "duplicate", "duplicate_of",
            "group_duplicates", "symmetry_order"]
    out = merged[cols].copy()
    for c, t in (("radius", "int16"), ("rotation_id", "int16"), ("n_atoms", "int32"),
                 ("duplicate_of", "int16"), ("group_duplicates", "int16"), ("symmetry_order", "int16")):
        out[c] = out[c].astype(t)
    return out


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    layout.atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd", version="2.6",
                                                          write_page_checksum=True))


def _refuse_foreign(store: Path) -> None:
    foreign = sorted(p.name for p in store.iterdir()
                     if p.name not in layout.OWNED and not layout.is_temporary(p.name))
    if foreign:
        raise StoreError(f"{store}: not a c2np store (contains {', '.join(foreign[:5])}); "
                         "refusing to write into it")


def _prepare(store: Path, fingerprint: str, force: bool) -> bool | dict[str, str]:
    """Check what is at ``store`` (holding its lock).

    Returns True if it already holds this exact build, else the particle-file hashes
    the progress journal of an interrupted run of this same build recorded (maybe empty).
    """
    _refuse_foreign(store)
    layout.remove_temporaries(store)
    found = None
    for name in (layout.MANIFEST, layout.IN_PROGRESS):
        f = store / name
        if f.exists():
            try:
                found = (name, json.loads(f.read_text()))
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                found = (name, {})
            if not isinstance(found[1], dict):
                found = (name, {})
            break
    if found and found[1].get("fingerprint") == fingerprint and not force:
        if found[0] == layout.MANIFEST:
            return True
        files = found[1].get("files", {})
        return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)}
    if found and not force:
        raise StoreError(f"{store}: holds a store built with another configuration or other "
                         "materials; pass --force to replace it, or choose another directory")
    if force:
        for name in layout.OWNED:
            target = store / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists() and name != layout.LOCK:
                target.unlink()
    return {}


def build_fingerprint(cfg: BuildConfig, materials: list[Material]) -> str:
    """Identity of a build: the config and the exact unit cells."""
    import hashlib

    blob = json.dumps({"config": cfg.fingerprint(),
                       "materials": [[m.name, material_digest(m.cell)] for m in materials]})
    return hashlib.sha256(blob.encode()).hexdigest()


def build_store(store: Path, cfg: BuildConfig, materials: list[Material], jobs: int = 1,
                force: bool = False, progress: bool = True) -> BuildSummary:
    """Build (or resume, or confirm) the store at ``store``; see the module docstring."""
    start = time.perf_counter()
    store = Path(store)
    if not materials:
        raise StoreError("no materials to build")
    for m in materials:  # fail before writing anything
        check_fits(m.cell, max(cfg.radii), cfg.supercell, cfg.centre, cfg.buffer, m.name)
        smallest = min(cfg.radii)
        _check_particle(carve(m.cell, smallest, cfg.supercell, cfg.centre, cfg.buffer,
                              cfg.boundary_tolerance, m.name), m.name, smallest)
    fingerprint = build_fingerprint(cfg, materials)
    if store.exists() and not store.is_dir():
        raise StoreError(f"{store}: exists and is not a directory")
    if store.is_dir():
        _refuse_foreign(store)  # before the lock, which would add a file to it
    with store_lock(store, "c2np build"):
        journal = _prepare(store, fingerprint, force)
        if journal is True:
            return summarise(store, time.perf_counter() - start, reused=len(materials), up_to_date=True)
        _build(store, cfg, materials, fingerprint, journal, jobs, progress)
    reused = sum(journal.get(m.name) is not None for m in materials)
    return summarise(store, time.perf_counter() - start, reused=reused)


def _build(store: Path, cfg: BuildConfig, materials: list[Material], fingerprint: str,
           recorded: dict[str, str], jobs: int, progress: bool) -> None:
    def save_journal() -> None:
        layout.atomic_write_text(store / layout.IN_PROGRESS,
                                 json.dumps({"fingerprint": fingerprint, "files": done}, sort_keys=True))

    done = dict(recorded)  # survives a second kill: verified again on the next resume
    save_journal()
    rotations, quats = _rotations_table(cfg)
    results: dict[str, list[dict]] = {}

    def finish(name: str, outcome: tuple[list[dict], str, bool]) -> None:
        results[name], done[name], was_reused = outcome
        if not was_reused:
            recorded.pop(name, None)  # so the summary counts only verified reuse
        save_journal()

    with progress_bar(len(materials), "carving", enabled=progress) as advance:
        if jobs <= 1:
            for m in materials:
                finish(m.name, _material_rows(m, cfg, quats, store, recorded.get(m.name)))
                advance()
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = {pool.submit(_material_rows, m, cfg, quats, store, recorded.get(m.name)): m.name
                           for m in materials}
                for fut in as_completed(futures):
                    finish(futures[fut], fut.result())
                    advance()
    rows = [row for m in materials for row in results[m.name]]
    _write_parquet(store / layout.INDEX, _index_table(rows, rotations, cfg.drop_duplicates))
    _write_parquet(store / layout.ROTATIONS, rotations)
    _write_materials(store, materials)
    layout.atomic_write_text(store / layout.CONFIG, config_toml(cfg))
    write_manifest(store, cfg, materials, fingerprint)
    (store / layout.IN_PROGRESS).unlink(missing_ok=True)


def _write_materials(store: Path, materials: list[Material]) -> None:
    from ase.io import write

    rows = []
    for m in materials:
        layout.atomic_write(store / layout.CIFS / f"{m.name}.cif",
                            lambda tmp, cell=m.cell: write(tmp, cell, format="cif"))
        rows.append(describe(m.name, m.cell, source=m.source, method=m.method, **dict(m.extra)))
    frame = pd.DataFrame(rows)
    layout.atomic_write(store / layout.MATERIALS,
                        lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6f"))


def config_toml(cfg: BuildConfig) -> str:
    """The configuration as TOML that ``load_config`` reads back to an equal config."""
    def arr(xs) -> str:
        return "[" + ", ".join(repr(x) for x in xs) + "]"

    lines = ["[carve]", f"radii = {arr(cfg.radii)}", f"supercell = {arr(cfg.supercell)}",
             f"centre = {arr(cfg.centre)}", f"buffer = {cfg.buffer!r}",
             f"boundary_tolerance = {cfg.boundary_tolerance!r}", "", "[splits]",
             f"id = {arr(cfg.id_radii)}", f"ood = {arr(cfg.ood_radii)}", ""]
    for name in SPLITS:
        g = cfg.grids[name]
        lines += [f"[rotations.{name}]", f"theta = {g.theta!r}"]
        lines += [f"seed = {g.seed}"] if g.seed is not None else [f"seed_base = {g.seed_base}"]
        lines += [f"margin = {g.margin!r}", f"offset = {arr(g.offset)}", ""]
    lines += ["[duplicates]", f"tolerance = {cfg.dedup_tolerance!r}",
              f"drop = {'true' if cfg.drop_duplicates else 'false'}", ""]
    return "\n".join(lines)


def summarise(store: Path, seconds: float = 0.0, reused: int = 0, up_to_date: bool = False
              ) -> BuildSummary:
    """Counts, atom range and size of a finished store."""
    index = pq.read_table(store / layout.INDEX,
                          columns=["split", "n_atoms", "duplicate"]).to_pandas()
    counts = {s: int((index["split"] == s).sum()) for s in SPLITS}
    counts["total"] = int(len(index))
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    return BuildSummary(store, counts, int(index["n_atoms"].min()), int(index["n_atoms"].max()),
                        int(index["duplicate"].sum()), size, seconds, reused, up_to_date)
