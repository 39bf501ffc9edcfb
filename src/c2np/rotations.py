"""Orientation grids on SO(3): greedy geodesic quaternion sampling.

Quaternions are scalar-last ``(x, y, z, w)`` as in scipy, sign-normalised to ``w >= 0``.
The sampler follows SPEC.md number for number: draw uniform random rotations with
``scipy.spatial.transform.Rotation.random`` from ``numpy.random.default_rng(seed)``,
left-multiply by the grid's offset rotation, flip the sign so ``w >= 0``, and accept a
candidate when it is at least ``theta`` from every accepted rotation and at least
``margin`` from every rotation of the reference (train) grid. Drawing in batches gives
the same stream as drawing one at a time (each rotation consumes four normals).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from c2np.config import BuildConfig, GridSpec
from c2np.errors import ConfigError

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])
#: Candidates drawn per batch; any value gives the same grid.
_BATCH = 512


def grid_size(theta_deg: float) -> int:
    """N(theta) = ceil(2 / (1 - cos theta)): 59, 92 and 163 for 15, 12 and 9 degrees."""
    return math.ceil(2.0 / (1.0 - math.cos(math.radians(theta_deg))))


def geodesic_distance(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """d(q1, q2) = 2 arccos |<q1, q2>| in degrees, broadcasting over leading axes."""
    dot = np.abs(np.sum(np.asarray(q1) * np.asarray(q2), axis=-1))
    return np.degrees(2.0 * np.arccos(np.clip(dot, 0.0, 1.0)))


def sign_normalise(q: np.ndarray) -> np.ndarray:
    """Flip quaternions (rows) with negative scalar part so that ``w >= 0``."""
    q = np.array(q, dtype=float, copy=True)
    q[q[..., 3] < 0] *= -1.0
    return q


def greedy_grid(theta_deg: float, seed: int, *, n: int | None = None, margin_deg: float = 0.0,
                reference: np.ndarray | None = None,
                offset_euler_xyz_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
                max_draws: int = 10_000_000) -> np.ndarray:
    """Greedy geodesic grid of ``n`` (default N(theta)) unit quaternions, shape (n, 4).

    Raises ``RuntimeError`` if ``max_draws`` candidates do not complete the grid (the
    separation and margin asked for leave too little room on SO(3)).
    """
    n = grid_size(theta_deg) if n is None else n
    rng = np.random.default_rng(seed)
    offset = Rotation.from_euler("xyz", offset_euler_xyz_deg, degrees=True)
    sep = math.cos(math.radians(theta_deg) / 2.0)
    ref = np.empty((0, 4)) if reference is None or margin_deg <= 0 else np.asarray(reference)
    ref_cos = math.cos(math.radians(margin_deg) / 2.0)
    accepted = np.empty((n, 4))
    count = drawn = 0
    while count < n:
        if drawn >= max_draws:
            raise RuntimeError(f"greedy grid theta={theta_deg} margin={margin_deg} seed={seed}: "
                               f"only {count}/{n} rotations after {drawn} draws")
        raw = sign_normalise(Rotation.random(_BATCH, rng=rng).as_quat())
        cand = sign_normalise((offset * Rotation.from_quat(raw)).as_quat())
        drawn += _BATCH
        # The margin test does not depend on earlier acceptances: do it for the batch.
        ok_ref = np.all(np.abs(cand @ ref.T) <= ref_cos, axis=1) if len(ref) else np.ones(len(cand), bool)
        for q in cand[ok_ref]:
            if count and np.any(np.abs(accepted[:count] @ q) > sep):
                continue
            accepted[count] = q
            count += 1
            if count == n:
                break
    return accepted


def train_grid(cfg: BuildConfig) -> np.ndarray:
    """The train grid (the same rotations for every train radius)."""
    g = cfg.grids["train"]
    return greedy_grid(g.theta, g.seed_for(0), offset_euler_xyz_deg=g.offset)


def split_grid(cfg: BuildConfig, split: str, radius: int, train: np.ndarray | None = None) -> np.ndarray:
    """The sampled grid for one split and radius (identity not included)."""
    spec: GridSpec = cfg.grids[split]
    if split == "train":
        return train_grid(cfg) if train is None else train
    train = train_grid(cfg) if train is None else train
    try:
        return greedy_grid(spec.theta, spec.seed_for(radius), margin_deg=spec.margin,
                           reference=train, offset_euler_xyz_deg=spec.offset)
    except RuntimeError as exc:
        raise ConfigError(f"rotations.{split}: theta and margin leave too little room on SO(3) "
                          f"({exc}); lower theta or margin") from None


def configuration_quaternions(cfg: BuildConfig, radius: int, train: np.ndarray | None = None
                              ) -> np.ndarray:
    """Rotations of every configuration at ``radius``: identity first, then the grid."""
    grid = split_grid(cfg, cfg.split_of(radius), radius, train)
    return np.vstack([IDENTITY, grid])


def euler_xyz_degrees(quats: np.ndarray) -> np.ndarray:
    """Extrinsic xyz Euler angles (degrees) of quaternions, as in the reference XYZ comments."""
    return Rotation.from_quat(np.asarray(quats).reshape(-1, 4)).as_euler("xyz", degrees=True)


def rotation_matrices(quats: np.ndarray) -> np.ndarray:
    """3x3 rotation matrices of quaternions, shape (..., 3, 3)."""
    q = np.asarray(quats)
    return Rotation.from_quat(q.reshape(-1, 4)).as_matrix().reshape(*q.shape[:-1], 3, 3)
