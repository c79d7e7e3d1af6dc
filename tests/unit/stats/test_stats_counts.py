"""Sequential multinomial test (Lindon & Malek 2022) and sample-ratio mismatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from stt_operator.stats.counts import (
    compare_event_rates,
    multinomial_log_bayes_factor,
    sample_ratio_mismatch,
    sequential_multinomial_test,
)


def test_bayes_factor_matches_beta_binomial_closed_form() -> None:
    # Uniform prior (concentration 2, theta0 = 1/2): BF = B(x+1, n-x+1) / 0.5^n.
    for x, n in ((0, 1), (10, 10), (3, 7)):
        expected = special.betaln(x + 1, n - x + 1) - n * math.log(0.5)
        got = multinomial_log_bayes_factor(np.array([x, n - x], float), np.array([0.5, 0.5]), 2.0)
        assert got == pytest.approx(expected)
    assert math.exp(multinomial_log_bayes_factor(np.array([10.0, 0.0]), np.array([0.5, 0.5]), 2.0)) == (
        pytest.approx(2**10 / 11)
    )


def test_chi2_reference_and_rounding_of_increase_values() -> None:
    t = sequential_multinomial_test([510.4, 489.6], [1, 1])
    assert t.observed == (510.0, 490.0)
    assert t.chi2_p_value == pytest.approx(stats.chisquare([510, 490]).pvalue)
    assert 0 <= t.p_value <= 1


def test_srm_detects_real_mismatch_and_not_balance() -> None:
    ok = sample_ratio_mismatch({"a": 10030, "b": 9970}, {"a": 50, "b": 50})
    assert not ok.mismatch and "sample ratio OK" in ok.message
    bad = sample_ratio_mismatch({"a": 10600, "b": 9400}, {"a": 50, "b": 50})
    assert bad.mismatch and bad.p_value < 0.001
    assert "a 53.0% (expected 50.0%)" in bad.message
    skewed = sample_ratio_mismatch({"a": 9000, "b": 1000, "c": 0}, {"a": 90, "b": 10, "c": 0})
    assert not skewed.mismatch


def test_srm_sequential_false_alarms_stay_below_threshold() -> None:
    rng = np.random.default_rng(1)
    alarms = 0
    for _ in range(100):
        total = np.cumsum(rng.binomial(400, 0.3, size=20))
        n = np.arange(1, 21) * 400
        if any(
            sample_ratio_mismatch({"a": a, "b": m - a}, {"a": 30, "b": 70}, 0.01).mismatch
            for a, m in zip(total, n, strict=True)
        ):
            alarms += 1
    assert alarms / 100 <= 0.02


def test_srm_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="lack arms"):
        sample_ratio_mismatch({"a": 1}, {"a": 50, "b": 50})
    with pytest.raises(ValueError, match="at least two arms"):
        sample_ratio_mismatch({"a": 1, "b": 0}, {"a": 100, "b": 0})
    with pytest.raises(ValueError, match="non-negative"):
        sequential_multinomial_test([-5, 3], [1, 1])


def test_event_rates_directional() -> None:
    worse = compare_event_rates(120, 10000, 60, 10000)
    assert worse.relative == pytest.approx(1.0)
    assert worse.p_greater < 0.001 and worse.p_less == 1.0
    better = compare_event_rates(60, 10000, 120, 10000)
    assert better.p_less < 0.001 and better.p_greater == 1.0
    same = compare_event_rates(100, 10000, 100, 10000)
    assert same.p_value == 1.0
    with pytest.raises(ValueError, match="exposure"):
        compare_event_rates(1, 0, 1, 10)
