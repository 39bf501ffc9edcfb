"""Relax candidate perovskite structures with CHGNet and keep the lowest in energy.

This is how the bundled unit cells were made (``c2np materials relax``). CHGNet's
pretrained weights ship inside its PyPI wheel, so the run needs no network. Each
candidate is relaxed (cell and positions) under its own space-group symmetry with ASE's
``FixSymmetry``; a tilt that wants to vanish relaxes towards the higher-symmetry
structure, which the final spglib analysis then reports. The lowest energy per atom wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from ase import Atoms

from c2np.materials.prototypes import candidates
from c2np.symmetry import space_group, standardize

#: Force convergence criterion (eV/Angstrom) of the relaxation.
FMAX = 0.01
#: Maximum optimiser steps per candidate.
MAX_STEPS = 800
#: Distance tolerance (Angstrom) for the final symmetry analysis and symmetrisation.
FINAL_SYMPREC = 0.01


@dataclass
class RelaxResult:
    """The winning structure of one composition and the energies of all candidates."""

    name: str
    atoms: Atoms
    energy_per_atom: float
    prototype: str
    candidates: dict[str, dict] = field(default_factory=dict)
    method: str = ""


def _load_calculator():
    import torch
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    torch.set_num_threads(1)  # one process per composition; threads would oversubscribe
    model = CHGNet.load(verbose=False)
    return CHGNetCalculator(model=model, use_device="cpu", check_cuda_mem=False), model.version


def _relax_one(atoms: Atoms, calc) -> tuple[Atoms, float, int, bool]:
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms = atoms.copy()
    atoms.calc = calc
    atoms.set_constraint(FixSymmetry(atoms, symprec=1e-3))
    opt = BFGS(FrechetCellFilter(atoms), logfile=None, maxstep=0.1)
    converged = bool(opt.run(fmax=FMAX, steps=MAX_STEPS))
    steps = opt.get_number_of_steps()
    atoms.set_constraint()
    energy = float(atoms.get_potential_energy()) / len(atoms)
    return atoms, energy, steps, converged


def relax_composition(name: str, a_site: str, b_site: str) -> RelaxResult:
    """Relax every prototype of ``A B H3`` and return the lowest-energy, symmetrised cell."""
    import ase
    import chgnet
    import spglib

    calc, weights = _load_calculator()
    best: tuple[float, str, Atoms] | None = None
    report: dict[str, dict] = {}
    for proto, start in candidates(a_site, b_site):
        relaxed, energy, steps, converged = _relax_one(start, calc)
        sg = space_group(relaxed, FINAL_SYMPREC)
        report[proto.name] = {"energy_per_atom_eV": round(energy, 6), "steps": steps,
                              "converged": converged, "spacegroup": sg.number}
        if np.isfinite(energy) and (best is None or energy < best[0] - 1e-6):
            best = (energy, proto.name, relaxed)
    assert best is not None
    energy, proto_name, relaxed = best
    cell = standardize(relaxed, FINAL_SYMPREC)
    cell.calc = calc
    final_energy = float(cell.get_potential_energy()) / len(cell)
    cell.calc = None
    method = (f"CHGNet {weights} pretrained weights (chgnet {chgnet.__version__}), ase "
              f"{ase.__version__} FrechetCellFilter+BFGS under FixSymmetry, fmax={FMAX} eV/A, "
              f"lowest of {len(report)} prototypes; spglib {spglib.__version__} "
              f"symmetrised at symprec={FINAL_SYMPREC} A")
    return RelaxResult(name, cell, final_energy, proto_name, report, method)


def write_result(result: RelaxResult, out_dir: Path) -> None:
    """Write ``{name}.cif`` and ``{name}.json`` (energies of every candidate)."""
    from ase.io import write

    out_dir.mkdir(parents=True, exist_ok=True)
    write(out_dir / f"{result.name}.cif", result.atoms, format="cif")
    meta = {"name": result.name, "energy_per_atom_eV": round(result.energy_per_atom, 6),
            "prototype": result.prototype, "method": result.method,
            "candidates": result.candidates}
    (out_dir / f"{result.name}.json").write_text(json.dumps(meta, indent=1) + "\n")


def _relax_and_write(args: tuple[str, str, str, str]) -> str:
    name, a_site, b_site, out = args
    write_result(relax_composition(name, a_site, b_site), Path(out))
    return name


def relax_all(out_dir: Path, names: list[str] | None = None, jobs: int = 1,
              progress: bool = True) -> list[str]:
    """Relax the bundled compositions (or ``names``) in ``jobs`` processes.

    Compositions whose CIF already exists in ``out_dir`` are skipped, so an interrupted
    run resumes where it stopped. Returns the names relaxed by this call.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from c2np.materials.selection import compositions
    from c2np.progress import progress_bar

    todo = [(n, a, b, str(out_dir)) for n, a, b in compositions()
            if (names is None or n in names) and not (out_dir / f"{n}.cif").exists()]
    done: list[str] = []
    with progress_bar(len(todo), "relaxing", enabled=progress) as advance:
        if jobs <= 1:
            for item in todo:
                done.append(_relax_and_write(item))
                advance()
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for fut in as_completed([pool.submit(_relax_and_write, t) for t in todo]):
                    done.append(fut.result())
                    advance()
    return sorted(done)


#: Provenance written into ``materials.csv`` for cells made by this module.
SOURCE = "computed by this package: `c2np materials relax` (no published value used)"


def write_catalogue(relaxed_dir: Path, out_dir: Path) -> pd.DataFrame:
    """Turn a relaxation output directory into a catalogue: ``cifs/`` + ``materials.csv``.

    Lattice parameters and space groups are read back from the written CIFs, so the
    table can never disagree with the files.
    """
    import shutil

    from c2np.materials.catalogue import COLUMNS, describe
    from c2np.materials.cif import read_cif
    from c2np.materials.selection import compositions

    (out_dir / "cifs").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, a_site, b_site in compositions():
        src = relaxed_dir / f"{name}.cif"
        if not src.exists():
            continue
        meta = json.loads((relaxed_dir / f"{name}.json").read_text())
        shutil.copyfile(src, out_dir / "cifs" / f"{name}.cif")
        rows.append(describe(name, read_cif(src), A=a_site, B=b_site,
                             prototype=meta["prototype"],
                             energy_per_atom_eV=meta["energy_per_atom_eV"],
                             source=SOURCE, method=meta["method"]))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.to_csv(out_dir / "materials.csv", index=False, float_format="%.6f")
    return table
