"""Multiple guardrail metrics: Holm's step-down correction.

Implemented directly (a sort and a running maximum) rather than through statsmodels'
`multipletests`: that function runs a full garbage collection on every call (tens of ms on a
large process), and the engine calls it several times per verdict. The result is the same
(tests/unit/stats/test_stats_planning.py compares the two).
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def holm_adjust(p: list[float]) -> list[float]:
    """Holm-adjusted p-values in input order: max over the sorted prefix of (m - i) * p_(i), capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def holm(p_values: Mapping[str, float], alpha: float = 0.05) -> dict[str, tuple[float, bool]]:
    """name -> (Holm-adjusted p-value, rejected at alpha). NaN p-values count as 1."""
    if not p_values:
        return {}
    names = list(p_values)
    p = [1.0 if math.isnan(p_values[n]) else min(1.0, max(0.0, float(p_values[n]))) for n in names]
    adjusted = holm_adjust(p)
    return {n: (a, a <= alpha) for n, a in zip(names, adjusted, strict=True)}
