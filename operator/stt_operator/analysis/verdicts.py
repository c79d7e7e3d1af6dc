"""Pure verdicts over analysis results: one run's outcome from its metrics', and the running
p-values a sequential test carries to its next look. No query, no client: the planners
(rollout/, experiments/) import these without reaching Prometheus (analysis/engine.py asks it)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from stt_operator.analysis.model import AnalysisResult


def p_value_key(metric: str, rule: str) -> str:
    """How a metric's rule is keyed in `previous_p` and `status.sequential`."""
    return f"{metric}/{rule}"


def aggregate(outcomes: Iterable[str], no_data_policy: str = "Pause") -> str:
    """One analysis run's outcome from its metrics' outcomes."""
    outs = list(outcomes)
    if not outs:
        return "NoData"
    if "Failed" in outs:
        return "Failed"
    if "Error" in outs:
        return "Error"
    if no_data_policy == "Ignore":
        rest = [o for o in outs if o != "NoData"]
        if not rest:
            return "NoData"
        outs = rest
    elif "NoData" in outs:
        return "NoData"
    if "Inconclusive" in outs:
        return "Inconclusive"
    return "Passed"


def p_state(result: AnalysisResult) -> dict[str, tuple[float, float]]:
    """Running-minimum p-values to pass back as `context.previous_p` at the next look."""
    out: dict[str, tuple[float, float]] = {}
    for m in result.metrics:
        for rule, (pf, pp) in (m.details.get("p_raw") or {}).items():
            if pf is not None and pp is not None and math.isfinite(pf) and math.isfinite(pp):
                out[p_value_key(m.name, rule)] = (pf, pp)
    return out
