"""Task 2 metrics: predicted lattice parameters and space groups (docs/metrics.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Default joint-accuracy tolerances.
LENGTH_RTOL = 0.02
ANGLE_ATOL = 1.0


@dataclass(frozen=True)
class Tolerances:
    """Joint accuracy: every length within ``length_rtol`` (relative) and every angle
    within ``angle_atol`` degrees, and the space group right."""

    length_rtol: float = LENGTH_RTOL
    angle_atol: float = ANGLE_ATOL


def task2_metrics(pred: np.ndarray, ref: np.ndarray, sg_pred: np.ndarray, sg_ref: np.ndarray,
                  tol: Tolerances = Tolerances()) -> dict[str, float]:
    """Metrics over n predictions; ``pred``/``ref`` are (n, 6) arrays a, b, c, alpha, beta, gamma."""
    pred, ref = np.asarray(pred, float).reshape(-1, 6), np.asarray(ref, float).reshape(-1, 6)
    err = pred - ref
    sg_ok = np.asarray(sg_pred) == np.asarray(sg_ref)
    len_ok = np.all(np.abs(err[:, :3]) <= tol.length_rtol * np.abs(ref[:, :3]), axis=1)
    ang_ok = np.all(np.abs(err[:, 3:]) <= tol.angle_atol, axis=1)
    return {
        "lattice_rmse": float(np.sqrt(np.mean(err ** 2))),
        "length_rmse": float(np.sqrt(np.mean(err[:, :3] ** 2))),
        "angle_rmse": float(np.sqrt(np.mean(err[:, 3:] ** 2))),
        "length_mape": float(np.mean(np.abs(err[:, :3]) / np.abs(ref[:, :3]))),
        "spacegroup_accuracy": float(np.mean(sg_ok)),
        "lattice_accuracy": float(np.mean(len_ok & ang_ok)),
        "joint_accuracy": float(np.mean(sg_ok & len_ok & ang_ok)),
    }
