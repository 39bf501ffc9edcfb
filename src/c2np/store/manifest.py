"""The store manifest: configuration, versions, counts and a SHA-256 for every file."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from ase import Atoms

from c2np.config import BuildConfig
from c2np.errors import StoreError
from c2np.store import layout

FORMAT = "c2np-store"
#: 2: Parquet page checksums and the manifest's own SHA-256 (format 1 stores must be rebuilt).
FORMAT_VERSION = 2
#: Top-level manifest keys and their JSON types; a manifest without them is corrupt.
_REQUIRED = {"fingerprint": str, "config": dict, "materials": list, "counts": dict,
             "atoms": dict, "versions": dict, "files": dict}
_SELF = "manifest_sha256"
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
        "content_fingerprint": listed_fingerprint(files),
    }
    manifest[_SELF] = _self_digest(manifest)
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
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: corrupt manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"{path}: not a c2np store manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{path}: store format {manifest.get('format_version')} is not "
                         f"supported by this c2np (format {FORMAT_VERSION}); rebuild it")
    if manifest.get(_SELF) != _self_digest(manifest):
        raise StoreError(f"{path}: manifest altered (its {_SELF} does not match its content); "
                         "rebuild the store")
    missing = [k for k, t in _REQUIRED.items() if not isinstance(manifest.get(k), t)]
    if missing:
        raise StoreError(f"{path}: corrupt manifest (missing or malformed: {', '.join(missing)}); "
                         "rebuild the store")
    files = manifest["files"]
    if not all(isinstance(m, dict) and isinstance(m.get("sha256"), str) for m in files.values()):
        raise StoreError(f"{path}: corrupt manifest (a files entry has no sha256); rebuild the store")
    return manifest


def _self_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's own content (every key but this digest), canonical JSON.

    The manifest hashes every other file; this covers the manifest itself, so a flipped
    count, version or config value is caught too.
    """
    body = {k: v for k, v in manifest.items() if k != _SELF}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class StoreCheck:
    """The outcome of hashing a store: problems (empty when intact) and what was hashed."""

    manifest: dict
    problems: list[str]
    #: SHA-256 of every file as read now, by relative path.
    digests: dict[str, str]

    @property
    def fingerprint(self) -> str:
        """Content fingerprint of the bytes actually read (equals the manifest's when intact)."""
        return content_fingerprint(self.digests)


def content_fingerprint(digests: dict[str, str]) -> str:
    """SHA-256 over the sorted ``path: sha256`` list of a store's files."""
    blob = "".join(f"{rel}\t{sha}\n" for rel, sha in sorted(digests.items()))
    return hashlib.sha256(blob.encode()).hexdigest()


def listed_fingerprint(files: dict[str, dict]) -> str:
    """:func:`content_fingerprint` of the files as a manifest lists them (``path: {"sha256":
    ...}``), without reading them: what results scored on the store record."""
    return content_fingerprint({rel: m["sha256"] for rel, m in files.items()})


def check_store(store: Path) -> StoreCheck:
    """Re-hash every file of ``store`` against its manifest (the one check ``c2np verify``
    and ``open_dataset`` share)."""
    store = Path(store)
    manifest = read_manifest(store)
    listed = manifest["files"]
    problems, digests = [], {}
    for rel, meta in sorted(listed.items()):
        f = store / rel
        if not f.is_file():
            problems.append(f"missing: {rel}")
            continue
        digests[rel] = layout.sha256_file(f)
        if digests[rel] != meta["sha256"]:
            problems.append(f"altered: {rel} (SHA-256 differs from the manifest)")
    for rel in layout.store_files(store):
        if rel not in listed:
            kind = "leftover temporary" if layout.is_temporary(Path(rel).name) else "unexpected"
            problems.append(f"{kind}: {rel} (not in the manifest)")
    return StoreCheck(manifest, problems, digests)


def verify_store(store: Path) -> list[str]:
    """Re-hash every file; return a list of problems (empty when the store is intact)."""
    return check_store(store).problems
