"""A/B verdicts from per-variant analysis results (pure).

Each non-control variant is evaluated against the control with the same primary metric
(`engine.evaluate_metrics` with candidate = variant, baseline = control). This module turns those
results into the ABTest `decision`: Winner (a variant, or the control, is better with always-valid
significance, Holm-corrected across variants, and passes its guardrails), NoDifference (every
variant's confidence sequence lies inside +/- the margin: equivalence, may stop early), or
Inconclusive (keep running; at the end: not enough evidence either way). A sample-ratio
mismatch holds the decision.

A winner may be found on either side (a variant better than the control, or the control better
than every variant), so each side spends alpha/2: the chance of any false winner stays at or
below alpha. The reported p-value is the two-sided one (twice the adjusted one-sided p-value,
compared with alpha) and the interval has alpha/2 in each end (`details["ci_ab"]` from the judge).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stt_operator.analysis.model import HIGHER, MetricResult
from stt_operator.stats.counts import SRMResult
from stt_operator.stats.multiple import holm


@dataclass(frozen=True)
class ABDecision:
    outcome: str  # Winner | NoDifference | Inconclusive
    winner: str | None
    p_value: float | None
    effect: float | None  # winner (or best variant) minus control, metric units
    confidence_interval: tuple[float, float] | None
    reason: str
    final: bool  # the test can end now

    def to_status(self) -> dict[str, object]:
        out: dict[str, object] = {"outcome": self.outcome, "reason": self.reason}
        if self.p_value is not None:
            out["pValue"] = self.p_value
        if self.effect is not None and math.isfinite(self.effect):
            out["effect"] = self.effect
        if self.confidence_interval is not None:
            out["confidenceInterval"] = list(self.confidence_interval)
        return out


def decide_ab(
    control: str,
    results: Mapping[str, MetricResult],
    *,
    direction: str = "lower-is-better",
    alpha: float = 0.05,
    margin: float | None = None,
    ended: bool = False,
    srm: SRMResult | None = None,
    guardrail_failures: Mapping[str, Sequence[str]] | None = None,
) -> ABDecision:
    """`results`: variant -> primary-metric result against `control`. `guardrail_failures`:
    variant -> names of guardrail metrics that Failed (such a variant cannot win)."""
    if srm is not None and srm.mismatch:
        return ABDecision("Inconclusive", None, None, None, None, f"decision held: {srm.message}", False)
    if not results:
        return ABDecision("Inconclusive", None, None, None, None, "no variant results yet", ended)
    blocked = {v: list(g) for v, g in (guardrail_failures or {}).items() if g}
    waiting = [f"{v}: {r.message}" for v, r in results.items() if "p_higher" not in r.details]
    if waiting:
        return ABDecision("Inconclusive", None, None, None, None, "; ".join(waiting), ended)
    lower = direction != HIGHER
    better = {v: r.details["p_lower" if lower else "p_higher"] for v, r in results.items()}
    worse = {v: r.details["p_higher" if lower else "p_lower"] for v, r in results.items()}
    half = alpha / 2.0
    adj_better, adj_worse = holm(better, half), holm(worse, half)
    winners = [v for v, (_, rej) in adj_better.items() if rej and v not in blocked]
    if winners:
        best = min(winners, key=lambda v: (results[v].effect or 0.0) * (1 if lower else -1))
        r = results[best]
        return ABDecision(
            "Winner",
            best,
            min(1.0, 2.0 * adj_better[best][0]),
            r.effect,
            _ci(r),
            f"{best} beats {control}: {r.message}",
            True,
        )
    if all(rej for _, rej in adj_worse.values()) and control not in blocked:
        p = min(1.0, 2.0 * max(p for p, _ in adj_worse.values()))
        # The effect and interval reported are those of the variant closest to the control
        # (the largest adjusted p, the one that sets `p`): how much the control wins by at least.
        closest = max(adj_worse, key=lambda v: adj_worse[v][0])
        r = results[closest]
        return ABDecision(
            "Winner",
            control,
            p,
            r.effect,
            _ci(r),
            f"control {control} beats every variant (max adjusted p={p:.2g}; closest {closest}: {r.message})",
            True,
        )
    if margin is not None:
        cis = [_ci(r) for r in results.values()]
        inside = all(ci is not None and -margin <= ci[0] and ci[1] <= margin for ci in cis)
        if inside:
            return ABDecision(
                "NoDifference",
                None,
                None,
                None,
                None,
                f"every variant within +/-{margin:g} of {control} (always-valid intervals)",
                True,
            )
    note = f"; blocked by guardrails: {blocked}" if blocked else ""
    if ended:
        return ABDecision(
            "Inconclusive",
            None,
            None,
            None,
            None,
            f"ended without a significant difference at alpha={alpha:g}{note}",
            True,
        )
    return ABDecision("Inconclusive", None, None, None, None, f"no significant difference yet{note}", False)


def _ci(r: MetricResult) -> tuple[float, float] | None:
    """The interval at the A/B's sidedness (alpha/2 per end) when the judge gave one."""
    lo, hi = r.details.get("ci_ab") or (r.ci_low, r.ci_high)
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return None
    return (float(lo), float(hi))
