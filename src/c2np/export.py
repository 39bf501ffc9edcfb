"""Writing configurations as XYZ files (the authors' reference layout) or extended XYZ.

The XYZ layout is byte-identical to the reference writer's (the authors' C2NP
``create_c2np/generate_quaternions.py``, run under a UTF-8 locale):

- line 1: the atom count;
- line 2: ``Original structure at R{r}`` for rotation 0, else
  ``Rotated structure: x={x:.1f}°, y={y:.1f}°, z={z:.1f}° at R{r}`` (extrinsic xyz Euler
  angles of the configuration's quaternion, in degrees);
- one line per atom, ``f"{symbol:2s} {x:15.8f} {y:15.8f} {z:15.8f}"``: 51 bytes with the
  newline;
- rotated coordinates computed as ``scipy``'s ``Rotation.apply`` computes them
  (``positions @ matrix.T``, bit for bit), rotation 0 written unrotated.

Speed comes from formatting a whole (material, R) at once: every coordinate of every
rotation goes through :func:`fixed_width`, which writes the digits with integer numpy
arithmetic into a preformatted byte buffer instead of calling Python's formatter per
number, then each file is one ``write``. Materials run in parallel processes (``jobs``).

Safety: the store's lock is held for the whole export (no build can change it meanwhile),
each material is written into a hidden temporary folder and renamed into place
when complete, an ``EXPORT_INCOMPLETE`` marker at the top of the output folder says that
an export is unfinished (a re-run with the same selection resumes: complete materials are
kept), and no output path may lie inside a store.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from c2np.errors import C2NPError
from c2np.progress import progress_bar
from c2np.rotations import euler_xyz_degrees, rotation_matrices
from c2np.store import layout
from c2np.store.dataset import Dataset, open_dataset
from c2np.store.layout import atomic_write
from c2np.store.lock import store_lock

#: Width and decimals of a coordinate in the reference XYZ layout (``%15.8f``).
WIDTH, DECIMALS = 15, 8
#: Bytes of one atom line: 2 (symbol) + 3 x (1 + 15) + 1 (newline).
XYZ_LINE_BYTES = 2 + 3 * (1 + WIDTH) + 1
#: Marker file at the top of an XYZ export folder while the export is unfinished.
INCOMPLETE = "EXPORT_INCOMPLETE"
#: Rotations formatted at once: bounds the buffer (164 x 18,251 atoms x 51 B = 153 MB).
CHUNK_ROTATIONS = 16

_SYMBOLS = np.array(chemical_symbols, dtype=object)
_SYMBOL2 = np.array([list(f"{s:2s}".encode()) if len(s) <= 2 else list(b"??")
                     for s in chemical_symbols], dtype=np.uint8)  # (Z, 2) "H ", "Li"
#: Values below this bound take the table path (rounding may reach it: the table holds it).
_MAX_INT = 10_000


@lru_cache(maxsize=1)
def _digit_tables() -> tuple[np.ndarray, np.ndarray]:
    """Byte tables of the 16-byte column ``" %15.8f"``: (sign, integer part) -> the first 8
    bytes (separator, right-aligned sign and digits, decimal point), and 0..9999 -> four
    zero-padded fraction digits."""
    head = np.array([[f" {'-' if neg else ''}{i}".rjust(WIDTH - DECIMALS) + "." for i in range(_MAX_INT + 1)]
                     for neg in (0, 1)], dtype="S8")
    four = np.array([f"{i:04d}" for i in range(10_000)], dtype="S4")
    return head, four


def coordinate_columns(values: np.ndarray) -> np.ndarray:
    """ASCII bytes (``values.shape + (16,)``, uint8) of ``f" {v:15.8f}"`` for every value.

    Byte-identical to Python's formatter, which rounds the exact binary value. A value is
    scaled by 10^8 and rounded in float64; the product differs from the exact one by at
    most half an ulp and ``frac`` is exact, so the rounding can only go the wrong way where
    ``frac`` lies within an ulp of one half. Those values (a few per million), and values
    of 10^4 A or more or not finite, are formatted by Python itself. The digits come from
    two byte tables, not from per-number string formatting.
    """
    v = np.asarray(values, dtype=np.float64)
    flat = v.ravel()
    scaled = np.abs(flat) * 1e8
    units = np.floor(scaled)
    frac = scaled - units
    slow = ~(np.abs(flat) < _MAX_INT) | (np.abs(frac - 0.5) <= np.spacing(scaled))
    fixed = np.where(slow, 0.0, units + (frac > 0.5)).astype(np.int64)
    ipart, fpart = np.divmod(fixed, 100_000_000)
    hi, lo = np.divmod(fpart, 10_000)
    head, four = _digit_tables()
    out = np.empty((flat.size, 1 + WIDTH), dtype=np.uint8)
    out[:, :8] = head[np.signbit(flat).astype(np.int64), ipart].view(np.uint8).reshape(-1, 8)
    out[:, 8:12] = four[hi].view(np.uint8).reshape(-1, 4)
    out[:, 12:] = four[lo].view(np.uint8).reshape(-1, 4)
    for i in np.flatnonzero(slow):
        text = f" {flat[i]:{WIDTH}.{DECIMALS}f}".encode()
        if len(text) != 1 + WIDTH:
            raise C2NPError(f"coordinate {flat[i]!r} does not fit the {WIDTH}-character XYZ field")
        out[i] = np.frombuffer(text, np.uint8)
    return out.reshape(*v.shape, 1 + WIDTH)


def xyz_atom_blocks(numbers: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Atom lines of the reference layout for ``coords`` (K, n, 3): (K, n * 51) bytes."""
    k, n = coords.shape[:2]
    buf = np.empty((k, n, XYZ_LINE_BYTES), dtype=np.uint8)
    buf[:, :, 0:2] = _SYMBOL2[np.asarray(numbers)]
    buf[:, :, 2:-1] = coordinate_columns(coords).reshape(k, n, 3 * (1 + WIDTH))
    buf[:, :, -1] = ord("\n")
    return buf.reshape(k, n * XYZ_LINE_BYTES)


def atom_lines(numbers: np.ndarray, positions: np.ndarray) -> str:
    """The reference layout's atom lines of one configuration, as text."""
    return xyz_atom_blocks(numbers, np.asarray(positions, float)[None]).tobytes().decode("ascii")


def reference_comment(radius: int, rotation_id: int, quat: np.ndarray) -> str:
    """The reference writer's XYZ comment line for one configuration."""
    if rotation_id == 0:
        return f"Original structure at R{radius}"
    x, y, z = euler_xyz_degrees(quat)[0]
    return f"Rotated structure: x={x:.1f}°, y={y:.1f}°, z={z:.1f}° at R{radius}"


def rotated(positions: np.ndarray, quats: np.ndarray, rotation_ids: np.ndarray) -> np.ndarray:
    """(K, n, 3) coordinates of every rotation, bit-identical to ``Rotation.apply``;
    rotation 0 is the stored particle itself."""
    out = positions[None] @ np.swapaxes(rotation_matrices(quats), -1, -2)
    out[np.asarray(rotation_ids) == 0] = positions
    return out


def check_output_path(out: Path, store: Path | None = None) -> None:
    """Refuse an output path inside a c2np store (it would overwrite or pollute it)."""
    target = Path(out).resolve()
    for folder in (target, *target.parents):
        if (folder / layout.MANIFEST).is_file() or (folder / layout.IN_PROGRESS).is_file() or (
                store is not None and folder == Path(store).resolve()):
            raise C2NPError(f"{out}: output path lies inside the store {folder}; "
                            "write exports outside the store")


def _selection_key(ds: Dataset) -> str:
    """Identifies what an export writes, so that a resumed export is the same export."""
    ids = ds.index["config_id"].to_numpy()
    return json.dumps({"store": ds.fingerprint,
                       "configurations": int(len(ids)), "first": int(ids.min()) if len(ids) else -1,
                       "last": int(ids.max()) if len(ids) else -1, "sum": int(ids.sum())},
                      sort_keys=True)


def _groups(ds: Dataset) -> Iterator[tuple[str, list[tuple[int, np.ndarray, np.ndarray]]]]:
    """Per material, its (R, rotation ids, quaternions) groups in index order."""
    idx = ds.index
    for material, by_m in idx.groupby("material", sort=True):
        yield material, [(int(r), g["rotation_id"].to_numpy(), g[["qx", "qy", "qz", "qw"]].to_numpy())
                         for r, g in by_m.groupby("radius", sort=True)]


def _write_material(store: str, material: str, groups: list, out: str) -> int:
    """Write one material's XYZ files into a hidden folder, then rename it into place.
    The parent verified the store and holds its lock, so workers skip the re-hash."""
    ds = open_dataset(store, verify=False)
    final = Path(out) / "quaternions" / material
    tmp = Path(out) / "quaternions" / f".{material}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    written = 0
    for radius, rotation_ids, quats in groups:
        atoms = ds.canonical(material, radius)
        folder = tmp / f"R{radius}" / "xyz"
        folder.mkdir(parents=True, exist_ok=True)
        header = f"{len(atoms)}\n".encode()
        for lo in range(0, len(rotation_ids), CHUNK_ROTATIONS):
            ids, qs = rotation_ids[lo:lo + CHUNK_ROTATIONS], quats[lo:lo + CHUNK_ROTATIONS]
            blocks = xyz_atom_blocks(atoms.numbers, rotated(atoms.positions, qs, ids))
            for k, (rid, q) in enumerate(zip(ids, qs)):
                comment = (reference_comment(radius, int(rid), q) + "\n").encode("utf-8")
                fd = os.open(folder / f"rot_{int(rid)}.xyz", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
                try:
                    os.write(fd, header + comment + blocks[k].tobytes())
                finally:
                    os.close(fd)
                written += 1
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return written


def export_xyz(ds: Dataset, out: Path, progress: bool = True, jobs: int = 1) -> int:
    """Write ``quaternions/{M}/R{r}/xyz/rot_{k}.xyz`` and ``cifs/{M}.cif`` for every
    configuration of ``ds``; return the number of files written (CIFs included).

    CIFs are the store's own files, copied byte for byte. An existing output folder is
    refused unless it holds an unfinished export of the same selection, which is resumed.
    """
    out = Path(out)
    check_output_path(out, ds.store)
    with store_lock(ds.store, "export xyz"):
        return _export_xyz(ds, out, progress, jobs)


def _export_xyz(ds: Dataset, out: Path, progress: bool, jobs: int) -> int:
    marker = out / INCOMPLETE
    key = _selection_key(ds)
    if marker.exists():
        if marker.read_text() != key:
            raise C2NPError(f"{out}: holds an unfinished export of another selection; "
                            "remove it or choose another folder")
    elif out.exists() and any(out.iterdir()):
        raise C2NPError(f"{out}: folder exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(key)
    groups = list(_groups(ds))
    written = 0
    for material, _ in groups:
        src = ds.store / layout.CIFS / f"{material}.cif"
        atomic_write(out / "cifs" / f"{material}.cif", lambda p, s=src: shutil.copyfile(s, p))
        written += 1
    todo = [(m, g) for m, g in groups if not (out / "quaternions" / m).is_dir()]
    done_files = sum(sum(len(ids) for _, ids, _ in g) for m, g in groups if (m, g) not in todo)
    written += done_files
    with progress_bar(len(ds), "writing xyz", enabled=progress) as advance:
        advance(done_files)
        if jobs <= 1 or len(todo) <= 1:
            for m, g in todo:
                written += _write_material(str(ds.store), m, g, str(out))
                advance(sum(len(ids) for _, ids, _ in g))
        else:
            with ProcessPoolExecutor(max_workers=min(jobs, len(todo))) as pool:
                futures = [pool.submit(_write_material, str(ds.store), m, g, str(out)) for m, g in todo]
                for f in futures:
                    n = f.result()
                    written += n
                    advance(n)
    marker.unlink()
    return written


def extxyz_comment(info: dict, cellpar: np.ndarray, lattice: np.ndarray, spacegroup: int) -> str:
    """Extended-XYZ comment line: provenance, rotation and the (rotated) unit cell."""
    q = " ".join(f"{v:.12f}" for v in info["quaternion_xyzw"])
    lat = " ".join(f"{v:.8f}" for v in np.asarray(lattice).ravel())
    par = " ".join(f"{v:.6f}" for v in cellpar)
    return (f'Properties=species:S:1:pos:R:3 config_id={info["config_id"]} '
            f'material={info["material"]} radius={info["radius"]} split={info["split"]} '
            f'rotation_id={info["rotation_id"]} quaternion_xyzw="{q}" '
            f'unit_cell_vectors="{lat}" unit_cell_parameters="{par}" '
            f'spacegroup={spacegroup} pbc="F F F"')


def export_extxyz(ds: Dataset, out: Path, progress: bool = True) -> int:
    """Write every configuration of ``ds`` into one extended-XYZ file; return frame count.

    Frames follow the index order. ``unit_cell_vectors`` are the unit cell's lattice
    vectors (rows) rotated into the configuration's frame, so they describe the particle
    as written. Atom lines use the XYZ layout's fixed-width columns, which every
    extended-XYZ reader (ase included) parses by whitespace.
    """
    out = Path(out)
    check_output_path(out, ds.store)
    table = ds.materials.set_index("name")
    idx = ds.index
    cells = {m: ds.unit_cell(m) for m in idx["material"].unique()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh, progress_bar(len(ds), "writing extxyz", enabled=progress) as advance:
            # consecutive rows of one (material, R) share a particle: format them together
            keys = idx["material"].astype(str) + "|" + idx["radius"].astype(str)
            starts = np.flatnonzero(np.r_[True, keys.to_numpy()[1:] != keys.to_numpy()[:-1]])
            for a, b in zip(starts, np.r_[starts[1:], len(idx)]):
                rows = idx.iloc[a:b]
                m, r = rows["material"].iloc[0], int(rows["radius"].iloc[0])
                atoms = ds.canonical(m, r)
                quats = rows[["qx", "qy", "qz", "qw"]].to_numpy()
                mats = rotation_matrices(quats)
                cell, sg = cells[m], int(table.loc[m, "spacegroup_number"])
                cellpar = cell.cell.cellpar()
                for lo in range(0, len(rows), CHUNK_ROTATIONS):
                    part = rows.iloc[lo:lo + CHUNK_ROTATIONS]
                    coords = atoms.positions[None] @ np.swapaxes(mats[lo:lo + CHUNK_ROTATIONS], -1, -2)
                    blocks = xyz_atom_blocks(atoms.numbers, coords)
                    for k, row in enumerate(part.itertuples(index=False)):
                        info = {"config_id": row.config_id, "material": m, "radius": r,
                                "split": row.split, "rotation_id": row.rotation_id,
                                "quaternion_xyzw": quats[lo + k]}
                        lattice = np.asarray(cell.cell[:]) @ mats[lo + k].T
                        fh.write(f"{len(atoms)}\n{extxyz_comment(info, cellpar, lattice, sg)}\n".encode())
                        fh.write(blocks[k].tobytes())
                    advance(len(part))

    with store_lock(ds.store, "export extxyz"):
        atomic_write(out, write)
    return len(ds)


def estimated_bytes(ds: Dataset, fmt: str = "xyz") -> int:
    """Size of an export of ``ds``: exact atom-line bytes plus the header lines
    (XYZ comment lines measured on the reference layout: at most 66 bytes; extended-XYZ
    comment lines about 420 bytes)."""
    n_atoms = int(ds.index["n_atoms"].sum())
    count_line = ds.index["n_atoms"].astype(str).str.len().sum() + len(ds)
    comment = 420 if fmt == "extxyz" else 60
    return n_atoms * XYZ_LINE_BYTES + int(count_line) + len(ds) * comment
