"""Post-promotion monitoring: is the served revision still within its absolute SLO?

The rule (docs/rollouts.md, "Monitoring after promotion"; simulated in bench/monitoring/):

- Each look tests H0 "the event probability is at most the SLO threshold p0" on the counts of
  its OWN window (events x out of n trials since the previous look's end): windows never
  overlap and counts are never reused.
- The test is the one-sided exact binomial test, p = P(Bin(n, p0) >= x) (scipy's binomtest).
  It is exact for independent trials whose probabilities are each at most p0 (a Poisson-binomial
  count with every p_i <= p0 is stochastically smaller than Bin(n, p0)), so the worst case is the
  boundary p = p0.
- Each test runs at level alpha_look = budget_per_day * interval_s / 86400 / metrics (Bonferroni
  over the metrics of one look). At most 86400 / interval_s tests happen per day, so by the union
  bound the expected number of false alarms per day while the SLO holds is at most the budget,
  whatever the horizon and whatever the dependence between looks.
- A window with fewer than `min_samples` trials is not tested: it keeps accumulating into the
  next look (still one test per look at most), so low traffic delays a verdict but never makes
  one.

This is exact for count data only (error rate: failed / all requests). Metrics the served
revision's Prometheus series do not support with a valid test are not offered (see
api/modeldeployment.py, MonitoringMetric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stt_operator.stats.deferred import stats

SECONDS_PER_DAY = 86400.0


def alpha_per_look(budget_per_day: float, interval_s: float, metrics: int = 1) -> float:
    """The level of one metric's test at one look so that false alarms per day <= budget."""
    if budget_per_day <= 0 or interval_s <= 0 or metrics < 1:
        raise ValueError("budget_per_day and interval_s must be > 0 and metrics >= 1")
    return min(1.0, budget_per_day * interval_s / SECONDS_PER_DAY / metrics)


@dataclass(frozen=True)
class SloTest:
    """One look's test of one metric."""

    events: int
    trials: int
    threshold: float  # p0: the SLO's maximum event probability
    p_value: float  # 1.0 when not tested
    alpha: float
    tested: bool  # False: fewer than min_samples trials (hold, keep accumulating)

    @property
    def observed(self) -> float | None:
        return self.events / self.trials if self.trials else None

    @property
    def breached(self) -> bool:
        return self.tested and self.p_value <= self.alpha


def _count(value: float, name: str) -> int:
    if not math.isfinite(value) or value < -0.5:
        raise ValueError(f"{name} must be a finite non-negative count, got {value}")
    # Counter increases from raw samples are integers; server-side increase() may not be: round.
    return max(0, round(value))


def binomial_slo_p_value(events: int, trials: int, threshold: float) -> float:
    """One-sided exact p-value of H0 p <= threshold given `events` out of `trials`."""
    if trials <= 0:
        return 1.0
    if threshold <= 0.0:
        return 0.0 if events > 0 else 1.0
    if threshold >= 1.0:
        return 1.0
    return float(stats.binomtest(events, trials, threshold, alternative="greater").pvalue)


def look_slo(events: float, trials: float, threshold: float, alpha: float, min_samples: int = 1) -> SloTest:
    """Test one window's counts against an absolute threshold (see the module docstring)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a probability, got {threshold}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    x, n = _count(events, "events"), _count(trials, "trials")
    x = min(x, n)  # a failure counter scraped after its request counter: never more than all
    if n < max(1, min_samples):
        return SloTest(x, n, threshold, 1.0, alpha, tested=False)
    return SloTest(x, n, threshold, binomial_slo_p_value(x, n, threshold), alpha, tested=True)


def critical_events(trials: int, threshold: float, alpha: float) -> int | None:
    """The smallest event count that breaches at `trials` (None: no count can; the look has no
    power at this sample size). For messages and the simulation."""
    if trials <= 0:
        return None
    if threshold <= 0.0:
        return 1
    # P(X >= c) <= alpha  <=>  sf(c - 1) <= alpha; isf gives the smallest k with sf(k) <= alpha.
    c = int(stats.binom.isf(alpha, trials, threshold)) + 1
    while c > 0 and stats.binom.sf(c - 2, trials, threshold) <= alpha:
        c -= 1  # guard against isf rounding upwards
    while c <= trials and stats.binom.sf(c - 1, trials, threshold) > alpha:
        c += 1
    return c if c <= trials else None
