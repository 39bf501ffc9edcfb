"""Writing configurations as XYZ files (reference layout) or extended XYZ.

Atom lines are formatted in one C-level string operation per configuration, not a
Python loop over atoms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from c2np.progress import progress_bar
from c2np.rotations import euler_xyz_degrees
from c2np.store.dataset import Dataset
from c2np.store.layout import atomic_write

_SYMBOLS = np.array(chemical_symbols, dtype=object)


def atom_lines(numbers: np.ndarray, positions: np.ndarray) -> str:
    """``"Sym x y z\\n"`` for every atom, 8 decimals, formatted in one operation."""
    n = len(numbers)
    table = np.empty((n, 4), dtype=object)
    table[:, 0] = _SYMBOLS[numbers]
    table[:, 1:] = positions
    return ("%s %.8f %.8f %.8f\n" * n) % tuple(table.ravel().tolist())


def reference_comment(radius: int, rotation_id: int, quat: np.ndarray) -> str:
    """The reference implementation's XYZ comment line for one configuration."""
    if rotation_id == 0:
        return f"Original structure at R{radius}"
    x, y, z = euler_xyz_degrees(quat)[0]
    return f"Rotated structure: x={x:.1f}, y={y:.1f}, z={z:.1f} at R{radius}"


def export_xyz(ds: Dataset, out: Path, progress: bool = True) -> int:
    """Write ``quaternions/{M}/R{r}/xyz/rot_{k}.xyz`` and ``cifs/{M}.cif``; return file count."""
    from ase.io import write

    out = Path(out)
    written = 0
    for material in sorted(ds.index["material"].unique()):
        cell = ds.unit_cell(material)
        atomic_write(out / "cifs" / f"{material}.cif", lambda p, c=cell: write(p, c, format="cif"))
        written += 1
    with progress_bar(len(ds), "writing xyz", enabled=progress) as advance:
        for i in range(len(ds)):
            atoms = ds[i]
            info = atoms.info
            text = (f"{len(atoms)}\n"
                    f"{reference_comment(info['radius'], info['rotation_id'], np.array(info['quaternion_xyzw']))}\n"
                    + atom_lines(atoms.numbers, atoms.positions))
            path = (out / "quaternions" / info["material"] / f"R{info['radius']}" / "xyz"
                    / f"rot_{info['rotation_id']}.xyz")
            atomic_write(path, lambda p, t=text: p.write_text(t))
            written += 1
            advance()
    return written


def extxyz_comment(atoms, cellpar: np.ndarray, lattice: np.ndarray, spacegroup: int) -> str:
    """Extended-XYZ comment line: provenance, rotation and the (rotated) unit cell."""
    info = atoms.info
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

    ``unit_cell_vectors`` are the unit cell's lattice vectors (rows) rotated into the
    configuration's frame, so they describe the particle as written.
    """
    from c2np.rotations import rotation_matrices

    table = ds.materials.set_index("name")
    cells = {m: ds.unit_cell(m) for m in ds.index["material"].unique()}
    out = Path(out)

    def write(tmp: Path) -> None:
        with open(tmp, "w") as fh, progress_bar(len(ds), "writing extxyz", enabled=progress) as advance:
            for i in range(len(ds)):
                atoms = ds[i]
                m = atoms.info["material"]
                rot = rotation_matrices(np.array(atoms.info["quaternion_xyzw"]))
                lattice = np.asarray(cells[m].cell[:]) @ rot.T
                comment = extxyz_comment(atoms, cells[m].cell.cellpar(), lattice,
                                         int(table.loc[m, "spacegroup_number"]))
                fh.write(f"{len(atoms)}\n{comment}\n")
                fh.write(atom_lines(atoms.numbers, atoms.positions))
                advance()

    atomic_write(out, write)
    return len(ds)


def estimated_bytes(ds: Dataset) -> int:
    """Rough size of an XYZ export of ``ds`` (about 45 bytes per atom line)."""
    return int(ds.index["n_atoms"].sum()) * 45 + len(ds) * 80
