"""How far geometry goes: the analytic Task 2 solver under noise and vacancies.

Each test particle gets Gaussian position noise (sigma per Cartesian coordinate) or
random vacancies (a fraction of atoms removed), seeded per configuration, and the
geometric solver's joint accuracy is measured per radius. Where it falls, recovering
the lattice needs more than geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from ase import Atoms

from c2np.metrics.lattice import Tolerances
from c2np.progress import map_with_progress
from c2np.solvers.lattice_recovery import RecoveryError, recover_lattice
from c2np.store.dataset import Dataset
from c2np.tasks.targets import LATTICE_COLUMNS, lattice_targets

NOISE = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
VACANCIES = (0.0, 0.01, 0.05, 0.1)


def perturb(atoms: Atoms, sigma: float, vacancy: float, seed: int) -> Atoms:
    """A copy with ``vacancy`` of the atoms removed and N(0, sigma^2) added to positions."""
    rng = np.random.default_rng(seed)
    keep = rng.random(len(atoms)) >= vacancy
    out = Atoms(numbers=atoms.numbers[keep], positions=atoms.positions[keep], pbc=False)
    out.positions += rng.normal(0.0, sigma, out.positions.shape)
    return out


def _solve(args):
    atoms, sigma, vacancy, seed = args
    try:
        r = recover_lattice(perturb(atoms, sigma, vacancy, seed))
        return r.cellpar, r.spacegroup
    except RecoveryError:
        return np.full(6, np.nan), 0


def sweep(ds: Dataset, splits: tuple[str, ...] = ("id", "ood"), per_group: int = 2,
          jobs: int = 1, progress: bool = True, tol: Tolerances = Tolerances()) -> pd.DataFrame:
    """Joint accuracy per (condition, radius): noise levels at no vacancy, vacancies at no noise."""
    targets = lattice_targets(ds).set_index("material")
    rows = ds.index[ds.index["split"].isin(splits)]
    picked = rows.groupby(["material", "radius"], sort=True).sample(n=per_group, random_state=0)
    conditions = [(s, 0.0) for s in NOISE] + [(0.0, v) for v in VACANCIES if v > 0]
    by_pos = ds.index.set_index("config_id").index
    work, meta = [], []
    for sigma, vacancy in conditions:
        for row in picked.itertuples():
            atoms = ds[int(by_pos.get_loc(row.config_id))]
            work.append((atoms, sigma, vacancy, int(row.config_id)))
            meta.append((sigma, vacancy, row.material, int(row.radius)))
    results = map_with_progress(_solve, work, len(work), "noise sweep", jobs, progress, 8)
    frame = pd.DataFrame(meta, columns=["sigma", "vacancy", "material", "radius"])
    pred = np.array([r[0] for r in results])
    ref = targets.loc[frame["material"], LATTICE_COLUMNS].to_numpy(float)
    ok_len = np.all(np.abs(pred[:, :3] - ref[:, :3]) <= tol.length_rtol * ref[:, :3], axis=1)
    ok_ang = np.all(np.abs(pred[:, 3:] - ref[:, 3:]) <= tol.angle_atol, axis=1)
    frame["joint"] = ok_len & ok_ang & (np.array([r[1] for r in results]) == targets.loc[frame["material"], "spacegroup"].to_numpy())
    return frame.groupby(["sigma", "vacancy", "radius"], as_index=False)["joint"].mean()


def plot_sweep(table: pd.DataFrame, out: Path) -> None:
    """Two panels: joint accuracy vs noise and vs vacancies, one line per radius."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    radii = sorted(table["radius"].unique())
    colours = plt.cm.viridis(np.linspace(0, 0.95, len(radii)))
    noise = table[table["vacancy"] == 0]
    vac = table[table["sigma"] == 0]
    for r, c in zip(radii, colours):
        n = noise[noise["radius"] == r].sort_values("sigma")
        v = vac[vac["radius"] == r].sort_values("vacancy")
        axes[0].plot(n["sigma"], n["joint"], "o-", color=c, label=f"R = {r} A")
        axes[1].plot(100 * v["vacancy"], v["joint"], "o-", color=c)
    axes[0].set_xscale("symlog", linthresh=0.01)
    axes[0].set_xlabel("position noise sigma (A, per coordinate)")
    axes[1].set_xlabel("vacancies (% of atoms removed)")
    axes[0].set_ylabel("joint accuracy (analytic solver)")
    axes[0].legend(fontsize=8, ncol=2)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(-0.02, 1.02)
    fig.suptitle("Geometric lattice recovery under perturbation (ID and OOD radii)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
