"""Relax candidate perovskite structures with CHGNet and choose one by the label policy.

This is how the bundled unit cells were made (``c2np materials relax``). CHGNet's
pretrained weights ship inside its PyPI wheel, so the run needs no network. Each
candidate is relaxed (cell and positions) under its own space-group symmetry with ASE's
``FixSymmetry``. Then the label policy (``docs/materials.md``) applies: each relaxed
candidate is symmetrised at ``LABEL_SYMPREC`` (0.1 A), so a distortion CHGNet cannot
resolve is removed, and relaxed again under the symmetry it then has, until its space
group is the same over the whole ``LABEL_SYMPREC_RANGE``. Among the candidates, a
corner-sharing octahedral perovskite within ``PEROVSKITE_WINDOW`` of the lowest energy is
preferred, and within ``SYMMETRY_WINDOW`` of that the highest symmetry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from ase import Atoms

from c2np.materials.prototypes import candidates
from c2np.materials.validity import check_cell
from c2np.symmetry import LABEL_SYMPREC, LABEL_SYMPREC_RANGE, standardize

#: Force convergence criterion (eV/Angstrom) of the relaxation.
FMAX = 0.01
#: Maximum optimiser steps per candidate.
MAX_STEPS = 800
#: Energy window (eV/atom) within which the higher-symmetry candidate wins: CHGNet does
#: not resolve relative energies this small (docs/materials.md, label policy).
SYMMETRY_WINDOW = 0.005
#: Energy window (eV/atom) within which a corner-sharing octahedral candidate replaces a
#: lower-energy non-perovskite one: about kT at room temperature and below CHGNet's
#: 30 meV/atom energy error.
PEROVSKITE_WINDOW = 0.025
#: Symmetrise-and-relax rounds before a candidate's label must be stable.
POLICY_ROUNDS = 4
#: Random displacement (Angstrom, seeded) before the unconstrained re-relaxation that
#: tests whether a non-perovskite winner is an artefact of its symmetry constraint.
RATTLE = 0.03


@dataclass
class RelaxResult:
    """The chosen structure of one composition and what was learnt about every candidate."""

    name: str
    atoms: Atoms
    energy_per_atom: float
    prototype: str
    candidates: dict[str, dict] = field(default_factory=dict)
    method: str = ""
    selection: str = ""
    #: Every candidate's policy cell, by prototype name.
    cells: dict[str, Atoms] = field(default_factory=dict)


def _load_calculator():
    import torch
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    torch.set_num_threads(1)  # one process per composition; threads would oversubscribe
    model = CHGNet.load(verbose=False)
    return CHGNetCalculator(model=model, use_device="cpu", check_cuda_mem=False), model.version


def _relax_one(atoms: Atoms, calc, symmetric: bool = True) -> tuple[Atoms, float, int, bool]:
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms = atoms.copy()
    atoms.calc = calc
    if symmetric:
        atoms.set_constraint(FixSymmetry(atoms, symprec=1e-3))
    opt = BFGS(FrechetCellFilter(atoms), logfile=None, maxstep=0.1)
    converged = bool(opt.run(fmax=FMAX, steps=MAX_STEPS))
    steps = opt.get_number_of_steps()
    atoms.set_constraint()
    energy = float(atoms.get_potential_energy()) / len(atoms)
    return atoms, energy, steps, converged


def _apply_policy(relaxed: Atoms, calc, a_site: str, b_site: str):
    """Symmetrise at the label tolerance and re-relax until the label is stable."""
    cell = relaxed
    for _ in range(POLICY_ROUNDS):
        cell, energy, steps, converged = _relax_one(standardize(cell, LABEL_SYMPREC), calc)
        check = check_cell(cell, a_site, b_site)
        if check.label_stable:
            break
    return standardize(cell, LABEL_SYMPREC), energy, steps, converged, check


def _symmetry_per_atom(cell: Atoms) -> tuple[int, int]:
    """Point-group order and atoms per primitive cell (their ratio ranks symmetry)."""
    import spglib

    ds = spglib.get_symmetry_dataset((cell.cell[:], cell.get_scaled_positions(), cell.numbers),
                                     symprec=LABEL_SYMPREC)
    rot = np.asarray(ds.rotations)
    pure = int(np.all(rot == np.eye(3, dtype=int), axis=(1, 2)).sum())
    return len(rot) // pure, len(cell) // pure


def fits_benchmark(cell: Atoms) -> bool:
    """Whether the default build (20x20x20 tiling, R up to 30 A, 5 A buffer) can carve it."""
    from c2np.carve import supercell_clearance
    from c2np.config import BuildConfig

    cfg = BuildConfig()
    return bool(supercell_clearance(cell, cfg.supercell, cfg.centre)
                >= max(cfg.radii) + cfg.buffer / 2.0)


def choose(report: dict[str, dict]) -> tuple[str, str]:
    """Apply the selection rule to candidate summaries; return (winner, reason).

    Only candidates the benchmark can carve (``fits``) compete: a cubic cell under
    3.25 A cannot host R = 30 A in a 20x20x20 tiling.

    ``report[name]`` needs ``energy_per_atom_eV``, ``octahedral``, ``rotations`` (point-group
    order) and ``atoms_per_cell`` (primitive); symmetry ranks as their ratio.
    """
    too_small = sorted(k for k, r in report.items() if not r.get("fits", True))
    report = {k: r for k, r in report.items() if r.get("fits", True)}
    e_min = min(r["energy_per_atom_eV"] for r in report.values())
    lowest = min(report, key=lambda k: report[k]["energy_per_atom_eV"])
    octa = {k: r for k, r in report.items()
            if r["octahedral"] and r["energy_per_atom_eV"] <= e_min + PEROVSKITE_WINDOW}
    pool = octa or report
    e_pool = min(r["energy_per_atom_eV"] for r in pool.values())
    near = [k for k, r in pool.items() if r["energy_per_atom_eV"] <= e_pool + SYMMETRY_WINDOW]
    # Ties (the same structure reached from several prototypes) go to the lowest energy
    # at 1 meV/atom resolution, then to the first prototype, so cubic beats "Pnma -> cubic".
    win = min(near, key=lambda k: (-pool[k]["rotations"] / pool[k]["atoms_per_cell"],
                                   round(pool[k]["energy_per_atom_eV"] / 1e-3)))
    best = min(pool, key=lambda k: pool[k]["energy_per_atom_eV"])
    reasons = []
    if octa and not report[lowest]["octahedral"]:
        reasons.append(f"corner-sharing octahedral perovskite preferred: the non-perovskite "
                       f"{lowest} is {1000 * (e_pool - e_min):.1f} meV/atom lower "
                       f"(window {1000 * PEROVSKITE_WINDOW:.0f})")
    if report[win]["spacegroup"] != report[best]["spacegroup"]:
        reasons.append(f"higher symmetry preferred: {best} "
                       f"(space group {report[best]['spacegroup']}) is "
                       f"{1000 * (report[win]['energy_per_atom_eV'] - e_pool):.1f} meV/atom "
                       f"lower (window {1000 * SYMMETRY_WINDOW:.0f})")
    if too_small:
        reasons.append(f"excluded, too small for the 20x20x20 tiling at R = 30 A: "
                       f"{', '.join(too_small)}")
    reason = "; ".join(reasons) or "lowest energy"
    if not report[win]["octahedral"]:
        octa_all = [r["energy_per_atom_eV"] for r in report.values() if r["octahedral"]]
        gap = (f"the lowest octahedral candidate is {1000 * (min(octa_all) - e_min):.0f} meV/atom "
               "higher" if octa_all else "no candidate kept BH6 octahedra")
        reason += f"; not a perovskite: {gap}"
    return win, reason


def _unconstrained_check(cell: Atoms, calc, a_site: str, b_site: str, energy: float) -> str:
    """Rattle and relax without symmetry: is a non-perovskite winner a constraint artefact?"""
    rattled = cell.copy()
    rattled.rattle(RATTLE, seed=0)
    free, e_free, _, _ = _relax_one(rattled, calc, symmetric=False)
    cn = check_cell(free, a_site, b_site).b_coordination
    return (f"unconstrained re-relaxation (rattle {RATTLE} A, no symmetry): "
            f"{1000 * (e_free - energy):+.1f} meV/atom, B coordination {cn}")


def relax_composition(name: str, a_site: str, b_site: str) -> RelaxResult:
    """Relax every prototype of ``A B H3`` and return the cell chosen by the label policy."""
    import ase
    import chgnet
    import spglib

    calc, weights = _load_calculator()
    report: dict[str, dict] = {}
    cells: dict[str, Atoms] = {}
    for proto, start in candidates(a_site, b_site):
        relaxed, energy, steps, converged = _relax_one(start, calc)
        cell, energy, psteps, pconv, check = _apply_policy(relaxed, calc, a_site, b_site)
        if not np.isfinite(energy):
            continue
        cells[proto.name] = cell
        report[proto.name] = {
            "energy_per_atom_eV": round(energy, 6), "steps": steps + psteps,
            "converged": converged and pconv, "spacegroup": check.spacegroup_number,
            "label_stable": check.label_stable, "octahedral": check.octahedral,
            "b_coordination": check.b_coordination, "fits": fits_benchmark(cell),
            **dict(zip(("rotations", "atoms_per_cell"), _symmetry_per_atom(cell)))}
    proto_name, selection = choose(report)
    cell = cells[proto_name]
    energy = report[proto_name]["energy_per_atom_eV"]
    if not report[proto_name]["octahedral"]:
        selection += "; " + _unconstrained_check(cell, calc, a_site, b_site, energy)
    method = (f"CHGNet {weights} pretrained weights (chgnet {chgnet.__version__}), ase "
              f"{ase.__version__} FrechetCellFilter+BFGS under FixSymmetry, fmax={FMAX} eV/A, "
              f"{len(report)} candidates; label policy: spglib {spglib.__version__} "
              f"symmetrised at symprec={LABEL_SYMPREC} A and re-relaxed, label stable over "
              f"symprec {LABEL_SYMPREC_RANGE[0]}-{LABEL_SYMPREC_RANGE[1]} A")
    return RelaxResult(name, cell, energy, proto_name, report, method, selection, cells)


def write_result(result: RelaxResult, out_dir: Path, all_candidates: bool = False) -> None:
    """Write ``{name}.cif`` and ``{name}.json`` (energies of every candidate), and with
    ``all_candidates`` every candidate's cell as ``candidates/{name}/{prototype}.cif``."""
    from ase.io import write

    out_dir.mkdir(parents=True, exist_ok=True)
    write(out_dir / f"{result.name}.cif", result.atoms, format="cif")
    if all_candidates:
        (out_dir / "candidates" / result.name).mkdir(parents=True, exist_ok=True)
        for proto, cell in result.cells.items():
            write(out_dir / "candidates" / result.name / f"{proto.replace('/', '_')}.cif", cell,
                  format="cif")
    meta = {"name": result.name, "energy_per_atom_eV": round(result.energy_per_atom, 6),
            "prototype": result.prototype, "method": result.method,
            "selection": result.selection, "candidates": result.candidates}
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
        cell = read_cif(src)
        check = check_cell(cell, a_site, b_site).row()
        check.pop("spacegroup_number")
        rows.append(describe(name, cell, A=a_site, B=b_site, prototype=meta["prototype"],
                             energy_per_atom_eV=meta["energy_per_atom_eV"], **check,
                             selection=meta["selection"], source=SOURCE, method=meta["method"]))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.to_csv(out_dir / "materials.csv", index=False, float_format="%.6f")
    return table
