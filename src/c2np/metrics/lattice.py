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


def _checks(pred: np.ndarray, ref: np.ndarray, sg_pred: np.ndarray, sg_ref: np.ndarray,
            tol: Tolerances) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pred, ref, err) as (n, 6) arrays and the per-sample space-group, length and angle checks."""
    pred, ref = np.asarray(pred, float).reshape(-1, 6), np.asarray(ref, float).reshape(-1, 6)
    err = pred - ref
    sg_ok = np.asarray(sg_pred) == np.asarray(sg_ref)
    len_ok = np.all(np.abs(err[:, :3]) <= tol.length_rtol * np.abs(ref[:, :3]), axis=1)
    ang_ok = np.all(np.abs(err[:, 3:]) <= tol.angle_atol, axis=1)
    return err, ref, sg_ok, len_ok, ang_ok


def task2_sample_scores(pred: np.ndarray, ref: np.ndarray, sg_pred: np.ndarray, sg_ref: np.ndarray,
                        tol: Tolerances = Tolerances()) -> dict[str, np.ndarray]:
    """Per-sample scores behind :func:`task2_metrics`, one entry per prediction: the RMSE of
    the six parameters, of the lengths and of the angles, the mean relative length error,
    and the space-group, lattice and joint checks. The split's lattice RMSE pools the squared
    errors of every sample, so it is not the mean of the per-sample RMSEs."""
    err, ref, sg_ok, len_ok, ang_ok = _checks(pred, ref, sg_pred, sg_ref, tol)
    return {"lattice_rmse": np.sqrt(np.mean(err ** 2, axis=1)),
            "length_rmse": np.sqrt(np.mean(err[:, :3] ** 2, axis=1)),
            "angle_rmse": np.sqrt(np.mean(err[:, 3:] ** 2, axis=1)),
            "length_mape": np.mean(np.abs(err[:, :3]) / np.abs(ref[:, :3]), axis=1),
            "spacegroup_correct": sg_ok, "lattice_correct": len_ok & ang_ok,
            "joint_correct": sg_ok & len_ok & ang_ok}


def task2_metrics(pred: np.ndarray, ref: np.ndarray, sg_pred: np.ndarray, sg_ref: np.ndarray,
                  tol: Tolerances = Tolerances()) -> dict[str, float]:
    """Metrics over n predictions; ``pred``/``ref`` are (n, 6) arrays a, b, c, alpha, beta, gamma."""
    err, ref, sg_ok, len_ok, ang_ok = _checks(pred, ref, sg_pred, sg_ref, tol)
    return {
        "lattice_rmse": float(np.sqrt(np.mean(err ** 2))),
        "length_rmse": float(np.sqrt(np.mean(err[:, :3] ** 2))),
        "angle_rmse": float(np.sqrt(np.mean(err[:, 3:] ** 2))),
        "length_mape": float(np.mean(np.abs(err[:, :3]) / np.abs(ref[:, :3]))),
        "spacegroup_accuracy": float(np.mean(sg_ok)),
        "lattice_accuracy": float(np.mean(len_ok & ang_ok)),
        "joint_accuracy": float(np.mean(sg_ok & len_ok & ang_ok)),
    }
