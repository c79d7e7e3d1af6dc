"""The post-promotion SLO rule (stats/monitoring.py): its false-alarm bound, exactly and by a
small seeded simulation (the long one is bench/monitoring/simulate.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from stt_operator.stats.monitoring import (
    SECONDS_PER_DAY,
    alpha_per_look,
    binomial_slo_p_value,
    critical_events,
    look_slo,
)


def test_alpha_per_look_spends_the_daily_budget_over_the_days_looks_and_metrics() -> None:
    assert alpha_per_look(0.01, 300) == pytest.approx(0.01 / 288)
    assert alpha_per_look(0.01, 300, metrics=4) == pytest.approx(0.01 / 288 / 4)
    assert alpha_per_look(1.0, SECONDS_PER_DAY) == 1.0
    with pytest.raises(ValueError):
        alpha_per_look(0.0, 300)


@pytest.mark.parametrize("p0", [0.0005, 0.01, 0.05, 0.3])
@pytest.mark.parametrize("alpha", [1e-6, 3.5e-5, 0.001, 0.05])
def test_exact_size_at_the_boundary_is_at_most_alpha(p0: float, alpha: float) -> None:
    for n in (1, 10, 499, 500, 1000, 5000, 100_000):
        c = critical_events(n, p0, alpha)
        if c is None:  # no count can breach at this n: size 0
            assert binomial_slo_p_value(n, n, p0) > alpha
            continue
        size = stats.binom.sf(c - 1, n, p0)  # P(X >= c) at p = p0, the worst case
        assert size <= alpha
        assert stats.binom.sf(c - 2, n, p0) > alpha  # and c is the smallest such count
        assert look_slo(c, n, p0, alpha).breached and not look_slo(c - 1, n, p0, alpha).breached


def test_heterogeneous_requests_below_the_slo_breach_no_more_often() -> None:
    # Poisson-binomial: every request's failure probability is at most p0 (a bursty mix).
    p0, alpha, n = 0.02, 0.001, 400
    probs = np.where(np.arange(n) % 3 == 0, p0, p0 / 4)
    dist = np.array([1.0])
    for p in probs:  # exact distribution of the failure count
        dist = np.convolve(dist, [1 - p, p])
    c = critical_events(n, p0, alpha)
    assert c is not None and dist[c:].sum() <= alpha


def test_too_few_requests_hold_and_counts_are_sanitised() -> None:
    held = look_slo(50, 100, 0.01, 0.001, min_samples=500)
    assert not held.tested and not held.breached and held.p_value == 1.0
    assert look_slo(7.0000001, 1000.4, 0.01, 0.001).events == 7  # increase() may be fractional
    assert look_slo(12, 10, 0.01, 0.5).events == 10  # failures scraped after requests: capped
    assert look_slo(0, 1000, 0.0, 1e-9).p_value == 1.0 and look_slo(1, 1000, 0.0, 1e-9).breached
    with pytest.raises(ValueError):
        look_slo(float("nan"), 10, 0.01, 0.01)
    with pytest.raises(ValueError):
        look_slo(1, 10, 1.5, 0.01)


def test_seeded_simulation_stays_within_the_budget_at_the_boundary() -> None:
    """Windows of Poisson traffic, accumulating below minSamples, at p = p0: false alarms per
    simulated day within the budget (with a one-sided 99 % Clopper-Pearson margin)."""
    rng = np.random.default_rng(9)
    p0, interval_s, budget, min_samples = 0.01, 3600.0, 1.0, 300
    alpha = alpha_per_look(budget, interval_s)
    chains, looks = 400, 250
    acc_n = np.zeros(chains, dtype=np.int64)
    acc_x = np.zeros(chains, dtype=np.int64)
    alarms = 0
    crit = {n: critical_events(n, p0, alpha) for n in range(min_samples, 2000)}
    for _ in range(looks):
        n = rng.poisson(200, chains)
        acc_n += n
        acc_x += rng.binomial(n, p0)
        for i in np.flatnonzero(acc_n >= min_samples):
            c = crit[int(acc_n[i])]
            alarms += int(c is not None and acc_x[i] >= c)
            acc_n[i] = acc_x[i] = 0
    days = chains * looks * interval_s / SECONDS_PER_DAY
    lower = stats.beta.ppf(0.01, alarms, chains * looks - alarms + 1) * SECONDS_PER_DAY / interval_s
    assert alarms > 0  # the simulation can see alarms at all
    assert alarms / days <= budget and lower <= budget
