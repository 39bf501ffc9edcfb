"""The paper's Table 5 normalisation: robust z-scores mapped to (0, 1).

For one metric, over the compared runs (every model and seed together):
``z = (x - median) / MAD`` with ``MAD = median(|x - median|)``, the sign flipped when
lower is better, and ``score = 1 / (1 + exp(-z))``: 0.5 is the median run, higher is
better. When every run has the same value (MAD = 0) all scores are 0.5. The score only
ranks runs against each other: the same raw numbers give other scores next to other
models, and a score of 1.0 can still be a bad model among worse ones.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit


def robust_scores(values: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """Logistic of the median/MAD z-score (direction-corrected) for each value."""
    x = np.asarray(values, float)
    finite = np.isfinite(x)
    out = np.full(len(x), np.nan)
    if not finite.any():
        return out
    med = np.median(x[finite])
    mad = np.median(np.abs(x[finite] - med))
    z = np.zeros(finite.sum()) if mad == 0 else (x[finite] - med) / mad
    if lower_is_better:
        z = -z
    out[finite] = expit(z)  # 1 / (1 + e^-z) without overflow
    return out
