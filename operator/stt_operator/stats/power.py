"""Power and minimum sample size for planning an analysis or an A/B test.

`per_unit_sd` is the s.d. of one unit's influence on the estimate: for a ratio metric
sqrt(n) * SE (use `RatioStats.se` on pilot data), for a paired difference the same on the
paired contrast. Paired designs have a much smaller per-unit s.d. (errors of two models on the
same utterance are correlated), which is where their sample saving comes from.
"""

from __future__ import annotations

import math

from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from stt_operator.stats import sequential
from stt_operator.stats.deferred import optimize, stats


def _check(effect: float, alpha: float, power: float) -> None:
    if effect <= 0:
        raise ValueError(f"effect must be > 0, got {effect}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")


def min_samples_fixed(per_unit_sd: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units for a fixed-horizon two-sided z-test to detect `effect` with `power`."""
    _check(effect, alpha, power)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil((z * per_unit_sd / effect) ** 2)


def power_sequential(
    n: float, per_unit_sd: float, effect: float, alpha: float = 0.05, tuning_n: float | None = None
) -> float:
    """Approximate probability that the always-valid CS excludes 0 by `n` units (normal approx.;
    it ignores earlier crossings, so slightly conservative)."""
    tuning = tuning_n if tuning_n is not None else n
    half = float(sequential.cs_halfwidth(per_unit_sd / math.sqrt(n), n, alpha, tuning))
    return float(stats.norm.sf((half - effect) / (per_unit_sd / math.sqrt(n))))


def min_samples_sequential(
    per_unit_sd: float, effect: float, alpha: float = 0.05, power: float = 0.8, max_n: float = 1e9
) -> int:
    """Units for the always-valid test (tuned at that n) to reach `power`: larger than the fixed
    horizon by the price of peeking at every interval."""
    _check(effect, alpha, power)
    lo = max(2.0, float(min_samples_fixed(per_unit_sd, effect, alpha, power)))
    if power_sequential(max_n, per_unit_sd, effect, alpha) < power:
        raise ValueError("effect too small to detect within max_n units")
    hi = lo
    while power_sequential(hi, per_unit_sd, effect, alpha) < power:
        hi *= 2
    n = optimize.brentq(lambda x: power_sequential(x, per_unit_sd, effect, alpha) - power, lo, hi)
    return math.ceil(n)


def min_samples_two_proportions(
    p_baseline: float, p_candidate: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> int:
    """Per-arm baseline samples for error-rate / tail-exceedance comparisons (Cohen's h)."""
    if not (0 < p_baseline < 1 and 0 < p_candidate < 1) or p_baseline == p_candidate:
        raise ValueError("proportions must be in (0, 1) and differ")
    h = abs(proportion_effectsize(p_candidate, p_baseline))
    n = NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=ratio)
    return math.ceil(float(n))
