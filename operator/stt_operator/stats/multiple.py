"""Multiple guardrail metrics: Holm's step-down correction (statsmodels)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from statsmodels.stats.multitest import multipletests


def holm(p_values: Mapping[str, float], alpha: float = 0.05) -> dict[str, tuple[float, bool]]:
    """name -> (Holm-adjusted p-value, rejected at alpha). NaN p-values count as 1."""
    if not p_values:
        return {}
    names = list(p_values)
    p = np.array([1.0 if math.isnan(p_values[n]) else min(1.0, max(0.0, p_values[n])) for n in names])
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
    return {n: (float(a), bool(r)) for n, a, r in zip(names, adjusted, reject, strict=True)}
