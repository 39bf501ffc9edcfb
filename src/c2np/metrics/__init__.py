"""Metrics of both tasks and their registry (name, unit, direction).

The registry is the single place that says which way each metric is better, so the
Evaluator, the report and the Table 5 normalisation cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """A reported metric: its task, unit and whether lower values are better."""

    name: str
    task: int
    unit: str
    lower_is_better: bool
    description: str


METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("rmsd", 1, "A", True, "RMSD after optimal rigid alignment and same-species assignment, "
                                     "each unmatched atom at 3 A (the minimised objective)"),
    MetricInfo("hausdorff", 1, "A", True, "symmetric Hausdorff distance after the same alignment"),
    MetricInfo("hull_volume_error", 1, "1", True, "|V_pred - V_ref| / V_ref of convex hulls"),
    MetricInfo("volume_ratio_error", 1, "1", True, "|volume_ratio_pred - volume_ratio_ref| (shape, not size)"),
    MetricInfo("volume_ratio", 1, "1", False, "hull volume / (4/3 pi r^3), r the particle's own radius "
                                              "(how fully it fills its sphere; not ranked)"),
    MetricInfo("rdf_error", 1, "1", True, "relative L1 distance between g(r) histograms"),
    MetricInfo("lev_error", 1, "1", True, "|Var(CN)_pred - Var(CN)_ref|, CN within 3 A"),
    MetricInfo("atom_count_error", 1, "1", True, "|N_pred - N_ref| / N_ref"),
    MetricInfo("lattice_rmse", 2, "mixed", True, "RMSE over a, b, c (A) and alpha, beta, gamma (deg) together"),
    MetricInfo("length_rmse", 2, "A", True, "RMSE over a, b, c"),
    MetricInfo("angle_rmse", 2, "deg", True, "RMSE over alpha, beta, gamma"),
    MetricInfo("length_mape", 2, "1", True, "mean |a_pred - a_ref| / a_ref over the three lengths"),
    MetricInfo("lattice_accuracy", 2, "1", False, "all six parameters within tolerance (space group ignored)"),
    MetricInfo("spacegroup_accuracy", 2, "1", False, "fraction with the right space-group number"),
    MetricInfo("joint_accuracy", 2, "1", False, "space group right and all six parameters within tolerance"),
    MetricInfo("time_per_epoch", 0, "s", True, "training time per epoch (reported raw, never normalised)"),
)}

#: Metrics that enter the Table 5 normalisation, per task.
RANKED = {1: ["rmsd", "hausdorff", "hull_volume_error", "rdf_error", "lev_error", "volume_ratio_error"],
          2: ["lattice_rmse", "spacegroup_accuracy", "joint_accuracy"]}
