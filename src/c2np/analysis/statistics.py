"""Dataset statistics: the numbers behind the paper's Sections 3.4-3.11 and Figure 3.

Two levels, as in the paper:

- **lattice level** (one row per unit cell, :func:`lattice_table`): a, b, c, volume, the
  ratios b/a, b/c, c/a, space group, A and B sites. The cells are the conventional
  standard cells of spglib that the store holds (the Task 2 targets).
- **particle level** (one row per material and radius, :func:`particle_table`):
  computed on the canonical (unrotated) particles, because rotation does not change a
  hull, a distance or a radius of gyration. The one exception is the axis-aligned
  bounding box, which does depend on orientation: its density is computed over every
  rotated configuration of the store (:func:`configuration_table`), each in its own split.

Definitions (all positions in Angstrom, relative to the carving centre x0):

- hull volume: volume of the convex hull of all atoms; ``V^(1/3)`` its cube root;
  hull volume per atom ``V / N``; hull density ``N / V`` (atoms per A^3).
- bounding-box density: ``N / (dx dy dz)`` with the extents of the rotated configuration
  along the Cartesian axes.
- radius of gyration: ``sqrt(mean |x - mean(x)|^2)``, every atom weighted equally
  (geometry, not mass).
- shortest interatomic distance: the smallest pair distance in the particle.
- surface atom: an atom that has lost at least one neighbour within ``SURFACE_CUTOFF`` of
  the infinite crystal by carving, i.e. its coordination in the particle is below its
  coordination in the bulk. Computed exactly by carving the same crystal at ``R + cutoff``
  about the same centre: an atom is at the surface if any atom of that larger particle
  lying beyond ``R`` is within the cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import ConvexHull, QhullError, cKDTree

from c2np.carve import carve
from c2np.errors import StoreError
from c2np.metrics.structure import CN_CUTOFF, nearest_distances
from c2np.rotations import rotation_matrices

#: Neighbour cutoff (A) of the surface-atom definition; the same as the coordination
#: cutoff of the local-environment metric (docs/metrics.md), so the two agree.
SURFACE_CUTOFF = CN_CUTOFF

LATTICE_QUANTITIES = ("a", "b", "c", "volume", "b/a", "b/c", "c/a")
CORRELATION_PAIRS = (("a", "b"), ("a", "c"), ("b", "c"))
PARTICLE_QUANTITIES = ("n_atoms", "hull_volume", "hull_volume_cbrt", "hull_volume_per_atom",
                       "hull_density", "bbox_density", "radius_of_gyration",
                       "shortest_distance", "surface_fraction")
#: Units for tables and axis labels.
UNITS = {"a": "A", "b": "A", "c": "A", "volume": "A^3", "b/a": "", "b/c": "", "c/a": "",
         "n_atoms": "atoms", "hull_volume": "A^3", "hull_volume_cbrt": "A",
         "hull_volume_per_atom": "A^3/atom", "hull_density": "atoms/A^3",
         "bbox_density": "atoms/A^3", "radius_of_gyration": "A", "shortest_distance": "A",
         "surface_fraction": ""}


# ----------------------------------------------------------------------------- lattice


def lattice_table(materials: pd.DataFrame) -> pd.DataFrame:
    """One row per unit cell with lattice parameters, volume, ratios, space group, A, B."""
    need = {"name", "A", "B", "a", "b", "c", "alpha", "beta", "gamma", "volume",
            "spacegroup_number", "spacegroup_symbol"}
    missing = need - set(materials.columns)
    if missing:
        raise StoreError(f"materials table lacks column(s) {sorted(missing)}")
    out = materials[sorted(need, key=list(materials.columns).index)].copy()
    out["b/a"] = out["b"] / out["a"]
    out["b/c"] = out["b"] / out["c"]
    out["c/a"] = out["c"] / out["a"]
    return out.reset_index(drop=True)


def describe(values: pd.DataFrame, columns) -> pd.DataFrame:
    """mean, std (sample, ddof=1), min, max of each column; one row per column."""
    rows = []
    for col in columns:
        x = values[col].to_numpy(float)
        rows.append({"quantity": col, "unit": UNITS.get(col, ""), "mean": x.mean(),
                     "std": x.std(ddof=1) if len(x) > 1 else 0.0, "min": x.min(), "max": x.max()})
    return pd.DataFrame(rows)


def correlations(lat: pd.DataFrame) -> pd.DataFrame:
    """Pearson r of the lattice-parameter pairs a-b, a-c, b-c."""
    return pd.DataFrame([{"pair": f"{x}-{y}", "pearson_r": float(np.corrcoef(lat[x], lat[y])[0, 1])}
                         for x, y in CORRELATION_PAIRS])


def composition_counts(lat: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Space-group, A-site and B-site counts (most frequent first) and distinct A-B pairs."""
    def counts(frame: pd.DataFrame, col: str, label: str) -> pd.DataFrame:
        c = frame[col].replace("", "unknown").value_counts()
        # ties are ordered by name so that tables are stable from run to run
        df = pd.DataFrame({label: c.index, "count": c.to_numpy()})
        return df.sort_values(["count", label], ascending=[False, True]).reset_index(drop=True)

    sg = lat.assign(space_group=lat["spacegroup_symbol"] + " (" + lat["spacegroup_number"].astype(str) + ")")
    pairs = lat[["A", "B"]].drop_duplicates()
    return {"space_groups": counts(sg, "space_group", "space_group"),
            "a_site": counts(lat, "A", "element"), "b_site": counts(lat, "B", "element"),
            "ab_pairs": pd.DataFrame({"distinct_ab_pairs": [len(pairs)]})}


# ---------------------------------------------------------------------------- particles


@dataclass(frozen=True)
class ParticleGeometry:
    """Orientation-independent descriptors of one particle (definitions: module docstring)."""

    n_atoms: int
    hull_volume: float
    radius_of_gyration: float
    shortest_distance: float
    hull_vertices: np.ndarray  # (k, 3) positions of the hull's vertices

    @property
    def hull_density(self) -> float:
        return self.n_atoms / self.hull_volume if self.hull_volume > 0 else float("nan")


def particle_geometry(positions: np.ndarray) -> ParticleGeometry:
    """Hull volume, radius of gyration, shortest distance and hull vertices of a particle."""
    pos = np.asarray(positions, float)
    n = len(pos)
    try:
        hull = ConvexHull(pos) if n >= 4 else None
    except QhullError:  # coplanar or collinear: no volume
        hull = None
    volume = float(hull.volume) if hull is not None else 0.0
    vertices = pos[hull.vertices] if hull is not None else pos
    rg = float(np.sqrt(np.mean(np.sum((pos - pos.mean(axis=0)) ** 2, axis=1)))) if n else 0.0
    shortest = float(nearest_distances(pos).min()) if n >= 2 else float("nan")
    return ParticleGeometry(n, volume, rg, shortest, vertices)


def bbox_volumes(vertices: np.ndarray, quaternions_xyzw: np.ndarray) -> np.ndarray:
    """Axis-aligned bounding-box volume of the particle under each rotation.

    Only hull vertices are needed: a linear function's extremes over a point set are
    reached on its hull, so this costs O(rotations x vertices), not x atoms.
    """
    mats = rotation_matrices(np.atleast_2d(quaternions_xyzw))  # (k, 3, 3)
    rotated = np.einsum("kij,nj->kni", mats, vertices)
    extent = rotated.max(axis=1) - rotated.min(axis=1)
    return np.prod(extent, axis=1)


def surface_mask(cell, positions: np.ndarray, radius: float, supercell: tuple[int, int, int],
                 centre: tuple[float, float, float], tolerance: float,
                 cutoff: float = SURFACE_CUTOFF) -> np.ndarray:
    """Boolean mask of the surface atoms of a carved particle (see the module docstring).

    ``positions`` is the stored particle; the crystal is re-carved at ``radius + cutoff``
    in a 3x larger supercell whose centre is the same lattice position shifted by a whole
    supercell, so the relative geometry is identical and the sphere always fits. Raises
    :class:`StoreError` when the stored particle is not that crystal's carving.
    """
    sup = tuple(3 * int(s) for s in supercell)
    shifted = tuple((float(c) + 1.0) / 3.0 for c in centre)
    big = carve(cell, radius + cutoff, sup, shifted, buffer=0.0, tolerance=tolerance).positions
    r2 = np.einsum("ij,ij->i", big, big)
    outer = big[r2 > (radius + tolerance) ** 2]
    if int(np.sum(r2 <= (radius + tolerance) ** 2)) != len(positions):
        raise StoreError(f"R={radius}: the stored particle has {len(positions)} atoms but the "
                         "unit cell carves to a different count; the store does not match its CIF")
    pos = np.asarray(positions, float)
    if len(outer) == 0 or len(pos) == 0:
        return np.zeros(len(pos), bool)
    return cKDTree(outer).query(pos, k=1, distance_upper_bound=cutoff)[0] <= cutoff


def _material_rows(args: tuple) -> tuple[list[dict], list[pd.DataFrame]]:
    """Particle rows and per-configuration bounding-box densities of one material."""
    from c2np.store.dataset import open_dataset

    store, material, radii = args
    ds = open_dataset(store, verify=False)  # particle_table verified it once for all workers
    cfg = ds.config
    cell = ds.unit_cell(material)
    index = ds.index[ds.index["material"] == material]
    rows, boxes = [], []
    for r in radii:
        atoms = ds.canonical(material, r)
        geo = particle_geometry(atoms.positions)
        surf = surface_mask(cell, atoms.positions, r, cfg.supercell, cfg.centre,
                            cfg.boundary_tolerance)
        sel = index[index["radius"] == r]
        q = sel[["qx", "qy", "qz", "qw"]].to_numpy()
        dens = geo.n_atoms / bbox_volumes(geo.hull_vertices, q)
        boxes.append(pd.DataFrame({"config_id": sel["config_id"].to_numpy(), "material": material,
                                   "radius": r, "split": sel["split"].to_numpy(),
                                   "bbox_density": dens}))
        rows.append({"material": material, "radius": r, "split": sel["split"].iloc[0],
                     "n_atoms": geo.n_atoms, "hull_volume": geo.hull_volume,
                     "hull_volume_cbrt": geo.hull_volume ** (1 / 3),
                     "hull_volume_per_atom": geo.hull_volume / geo.n_atoms,
                     "hull_density": geo.hull_density,
                     "bbox_density": float(dens.mean()),
                     "radius_of_gyration": geo.radius_of_gyration,
                     "shortest_distance": geo.shortest_distance,
                     "surface_fraction": float(surf.mean())})
    return rows, boxes


@dataclass
class ParticleStatistics:
    """Per-(material, R) descriptors and per-configuration bounding-box densities."""

    particles: pd.DataFrame  # one row per (material, radius); bbox_density = mean over rotations
    configurations: pd.DataFrame  # config_id, material, radius, split, bbox_density

    def by_radius(self) -> pd.DataFrame:
        """mean, std, min, max of every quantity per radius (wide: quantity_stat columns).

        The bounding-box density is summarised over configurations (all rotations of the
        radius's split); every other quantity over the canonical particles.
        """
        stats = ["mean", "std", "min", "max"]
        cols = [q for q in PARTICLE_QUANTITIES if q != "bbox_density"]
        g = self.particles.groupby("radius")
        wide = g[cols].agg(stats)
        box = self.configurations.groupby("radius")["bbox_density"].agg(stats)
        box.columns = pd.MultiIndex.from_product([["bbox_density"], stats])
        wide = wide.join(box)
        wide.columns = [f"{q}_{s}" for q, s in wide.columns]
        split = g["split"].first()
        ordered = [f"{q}_{s}" for q in PARTICLE_QUANTITIES for s in stats]
        return wide[ordered].assign(split=split).reset_index()[["radius", "split", *ordered]]


def particle_table(store, materials: list[str] | None = None, radii: list[int] | None = None,
                   jobs: int = 1, progress: bool = True) -> ParticleStatistics:
    """Compute the particle-level statistics of a store (one material per task)."""
    from c2np.progress import map_with_progress
    from c2np.store.dataset import open_dataset

    ds = open_dataset(store)
    names = materials or ds.material_names()
    for m in names:
        ds.check_material(m)
    rs = sorted(radii or ds.config.radii)
    bad = sorted(set(rs) - set(ds.config.radii))
    if bad:
        raise StoreError(f"radii {bad} are not in the store (it holds {list(ds.config.radii)})")
    results = map_with_progress(_material_rows, [(str(store), m, rs) for m in names], len(names),
                                "particle statistics", jobs=jobs, enabled=progress, chunksize=1)
    rows = [r for res in results for r in res[0]]
    boxes = [b for res in results for b in res[1]]
    return ParticleStatistics(pd.DataFrame(rows), pd.concat(boxes, ignore_index=True))
