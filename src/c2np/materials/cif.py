"""Reading and validating unit-cell CIF files.

Every check names the file and what is wrong with it, so a user bringing their own
CIFs (``c2np build --cifs DIR``) sees at once which file to fix.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from ase import Atoms

from c2np.errors import InvalidStructureError

#: Largest unit cell accepted; a bigger "unit cell" is almost surely a supercell or an
#: error, and a 20x20x20 tiling of it would not fit in memory.
MAX_CELL_ATOMS = 1000
#: Largest CIF file read (bytes): a 1,000-atom cell takes about 100 KB.
MAX_CIF_BYTES = 1_000_000
#: Two atoms closer than this (Angstrom) are taken as a duplicated site.
MIN_DISTANCE = 0.5
#: Smallest accepted cell volume (Angstrom^3).
MIN_VOLUME = 1.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def check_material_name(name: str) -> str:
    """Return ``name`` if it is a safe material name (it becomes a file name), else raise."""
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith(".."):
        raise InvalidStructureError(
            f"invalid material name {name!r}: use letters, digits and _ . + - only "
            "(no path separators, no leading dot)")
    return name


def validate_cell(atoms: Atoms, where: str, max_atoms: int = MAX_CELL_ATOMS) -> Atoms:
    """Raise :class:`InvalidStructureError` naming ``where`` if ``atoms`` is unusable."""
    n = len(atoms)
    if n == 0:
        raise InvalidStructureError(f"{where}: the cell has no atoms")
    if n > max_atoms:
        raise InvalidStructureError(
            f"{where}: {n} atoms in the unit cell exceeds the limit of {max_atoms}; "
            "carving tiles the cell 20x20x20, so supply a primitive or conventional cell")
    cell = np.asarray(atoms.cell[:], float)
    if not np.all(np.isfinite(cell)):
        raise InvalidStructureError(f"{where}: the cell contains NaN or infinite numbers")
    if not np.all(np.isfinite(atoms.positions)):
        raise InvalidStructureError(f"{where}: atomic positions contain NaN or infinite numbers")
    volume = float(np.linalg.det(cell))
    if volume < MIN_VOLUME:
        raise InvalidStructureError(
            f"{where}: cell volume {volume:.4g} A^3 is zero, negative (left-handed or "
            f"degenerate lattice vectors) or below {MIN_VOLUME} A^3")
    if np.any(atoms.numbers <= 0):
        raise InvalidStructureError(f"{where}: the cell contains an unknown element")
    if n > 1:
        from ase.geometry import get_distances

        _, d = get_distances(atoms.positions, cell=cell, pbc=True)
        d[np.diag_indices(n)] = np.inf
        if d.min() < MIN_DISTANCE:
            i, j = np.unravel_index(np.argmin(d), d.shape)
            raise InvalidStructureError(
                f"{where}: atoms {i} and {j} are {d.min():.3f} A apart (< {MIN_DISTANCE} A): "
                "duplicated or overlapping sites")
    return atoms


def _site_checks(block, where: str, max_atoms: int) -> None:
    """Checks on the raw atom-site loop, before ase expands and merges it.

    ase silently merges sites at the same position and ignores occupancies; c2np
    carves fully ordered crystals only, so both are errors here.
    """
    xs = block.get("_atom_site_fract_x")
    if xs is None:
        xs = block.get("_atom_site_cartn_x")
    if xs is None:
        raise InvalidStructureError(f"{where}: no atom sites (_atom_site_fract_x/y/z loop)")
    n = len(xs)
    if n > max_atoms:
        raise InvalidStructureError(
            f"{where}: {n} atom sites exceed the limit of {max_atoms}; "
            "carving tiles the cell 20x20x20, so supply a primitive or conventional cell")
    occupancy = block.get("_atom_site_occupancy")
    if occupancy is not None:
        occ = np.array([o if isinstance(o, (int, float)) else np.nan for o in occupancy], float)
        bad = np.flatnonzero(~(np.abs(occ - 1.0) <= 1e-6))
        if len(bad):
            labels = block.get("_atom_site_label") or list(range(n))
            raise InvalidStructureError(
                f"{where}: site {labels[bad[0]]} has occupancy {occupancy[bad[0]]}; c2np carves "
                "ordered crystals only (every occupancy 1), so resolve partial occupancy first")
    frac = [block.get(f"_atom_site_fract_{c}") for c in "xyz"]
    if all(f is not None for f in frac):
        try:
            f = np.array(frac, float).T % 1.0
        except (TypeError, ValueError):
            raise InvalidStructureError(f"{where}: atom-site coordinates are not numbers") from None
        d = np.abs(f[:, None, :] - f[None, :, :])
        d = np.minimum(d, 1.0 - d).max(axis=2)
        d[np.diag_indices(n)] = np.inf
        if n > 1 and d.min() < 1e-4:
            i, j = np.unravel_index(np.argmin(d), d.shape)
            labels = block.get("_atom_site_label") or list(range(n))
            raise InvalidStructureError(
                f"{where}: sites {labels[i]} and {labels[j]} are at the same position "
                "(a duplicated site); remove one")


def read_cif(path: Path, max_atoms: int = MAX_CELL_ATOMS) -> Atoms:
    """Read and validate the first structure of a CIF file as a periodic ``Atoms``.

    The file's size and its number of atom sites are checked before ase builds the
    structure, whose cost grows quadratically with the sites (minutes for a few thousand).
    """
    from ase.io.cif import parse_cif

    path = Path(path)
    if not path.is_file():
        raise InvalidStructureError(f"{path}: no such CIF file")
    size = path.stat().st_size
    if size > MAX_CIF_BYTES:
        raise InvalidStructureError(
            f"{path}: {size:,} bytes is far larger than a unit cell of at most {max_atoms} atoms "
            f"needs (limit {MAX_CIF_BYTES:,} bytes)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidStructureError(f"{path}: not a text file (CIF must be UTF-8 or ASCII)") from None
    try:
        blocks = [b for b in parse_cif(io.StringIO(text)) if b.has_structure()]
    except Exception:  # ase's tokenizer raises assorted types on malformed text
        raise InvalidStructureError(f"{path}: not a valid CIF (malformed data block or loop)") from None
    if not blocks:
        raise InvalidStructureError(f"{path}: no crystal structure in the file (needs a data_ "
                                    "block with _cell_length_a/b/c and an _atom_site loop)")
    _site_checks(blocks[0], str(path), max_atoms)
    try:
        atoms = blocks[0].get_atoms()
    except KeyError as exc:
        raise InvalidStructureError(f"{path}: unknown element symbol {exc.args[0]!r}") from None
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else "incomplete cell or sites"
        raise InvalidStructureError(f"{path}: cannot build the structure ({reason})") from None
    atoms.pbc = True
    return validate_cell(atoms, str(path), max_atoms)
