"""The store manifest: configuration, versions, counts and a SHA-256 for every file."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
from ase import Atoms

from c2np.config import BuildConfig
from c2np.errors import StoreError
from c2np.store import layout

FORMAT = "c2np-store"
FORMAT_VERSION = 1
_VERSIONED = ("c2np", "numpy", "scipy", "ase", "spglib", "pandas", "pyarrow")


def material_digest(cell: Atoms) -> str:
    """SHA-256 of a unit cell's lattice, species and positions (exact float repr)."""
    blob = json.dumps([np.asarray(cell.cell[:], float).tolist(), cell.numbers.tolist(),
                       np.asarray(cell.positions, float).tolist()])
    return hashlib.sha256(blob.encode()).hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in _VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_manifest(store: Path, cfg: BuildConfig, materials: list, fingerprint: str,
                   heldout: list[str] = ()) -> dict:
    """Hash every file of ``store`` and write ``manifest.json`` (no timestamps: reproducible).

    ``heldout`` names the materials the split scheme holds out (recorded with the scheme).
    """
    import pyarrow.parquet as pq

    index = pq.read_table(store / layout.INDEX, columns=["split", "n_atoms", "duplicate"]).to_pandas()
    files = {rel: {"sha256": layout.sha256_file(store / rel), "bytes": (store / rel).stat().st_size}
             for rel in layout.store_files(store)}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": fingerprint,
        "config": cfg.to_dict(),
        "materials": [{"name": m.name, "digest": material_digest(m.cell)} for m in materials],
        "split_scheme": {"name": cfg.scheme_name, "heldout": sorted(heldout)},
        "counts": {**{s: int((index["split"] == s).sum()) for s in cfg.splits},
                   "total": int(len(index)), "duplicates": int(index["duplicate"].sum())},
        "atoms": {"min": int(index["n_atoms"].min()), "max": int(index["n_atoms"].max())},
        "versions": _versions(),
        "files": files,
    }
    layout.atomic_write_text(store / layout.MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read_manifest(store: Path) -> dict:
    """Load and sanity-check ``manifest.json``; a missing one means an unfinished build."""
    path = Path(store) / layout.MANIFEST
    if not path.exists():
        hint = (" (a build was interrupted: run `c2np build` again to resume)"
                if (Path(store) / layout.IN_PROGRESS).exists() else "")
        raise StoreError(f"{store}: no {layout.MANIFEST}; not a finished c2np store{hint}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path}: corrupt manifest ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{path}: not a c2np store manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{path}: store format {manifest.get('format_version')} is not "
                         f"supported by this c2np (format {FORMAT_VERSION}); rebuild it")
    return manifest


def verify_store(store: Path) -> list[str]:
    """Re-hash every file; return a list of problems (empty when the store is intact)."""
    manifest = read_manifest(store)
    problems = []
    listed = manifest["files"]
    for rel, meta in sorted(listed.items()):
        f = Path(store) / rel
        if not f.exists():
            problems.append(f"missing: {rel}")
        elif layout.sha256_file(f) != meta["sha256"]:
            problems.append(f"altered: {rel} (SHA-256 differs from the manifest)")
    for rel in layout.store_files(Path(store)):
        if rel not in listed:
            problems.append(f"unexpected: {rel} (not in the manifest)")
    return problems
