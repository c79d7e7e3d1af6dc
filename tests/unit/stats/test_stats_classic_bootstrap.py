"""MAPSSWE / sign / Wilcoxon and bootstrap intervals (Bisani & Ney)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from stt_operator.stats import classic
from stt_operator.stats.bootstrap import (
    bootstrap_paired_difference,
    bootstrap_ratio,
    bootstrap_unpaired_difference,
)


def test_mapsswe_closed_form() -> None:
    c = np.array([3, 2, 5, 4, 1])
    b = np.array([2, 2, 3, 3, 2])
    d = c - b
    w = d.mean() / (d.std(ddof=1) / math.sqrt(5))
    res = classic.mapsswe(c, b)
    assert res.statistic == pytest.approx(w)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(abs(w)))
    assert classic.mapsswe(b, b).p_value == 1.0


def test_sign_and_wilcoxon_match_scipy() -> None:
    rng = np.random.default_rng(0)
    b = rng.poisson(2, 200)
    c = b + rng.choice([-1, 0, 0, 1, 1], 200)
    d = c - b
    s = classic.sign_test_arrays(c, b)
    assert s.p_value == pytest.approx(stats.binomtest(int((d > 0).sum()), int((d != 0).sum())).pvalue)
    assert classic.sign_test(10.4, 9.6).n == 20  # increase() values are rounded
    w = classic.wilcoxon(c, b)
    assert w.p_value == pytest.approx(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    with pytest.raises(ValueError, match="equal length"):
        classic.wilcoxon(c, b[:10])


def test_darwin_corn_published_example() -> None:
    """Darwin's cross- vs self-fertilised Zea mays height differences (eighths of an inch), the
    example of scipy's `wilcoxon` documentation: T = 24, exact two-sided p = 0.041259765625.
    Sign test: 13 of 15 positive, p = 2 * (C(15,13) + C(15,14) + C(15,15)) / 2^15."""
    d = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75])
    w = classic.wilcoxon(d, np.zeros_like(d))
    assert (w.statistic, w.p_value) == (24.0, pytest.approx(0.041259765625))
    s = classic.sign_test_arrays(d, np.zeros_like(d))
    assert s.p_value == pytest.approx(242 / 32768)


def test_block_bootstrap_is_wider_when_speakers_correlate() -> None:
    rng = np.random.default_rng(1)
    speakers = np.repeat(np.arange(40), 25)
    speaker_rate = rng.beta(2, 14, 40)[speakers]
    n = rng.integers(5, 20, speakers.size)
    e = rng.binomial(n, speaker_rate)
    utt = bootstrap_ratio(e, n, resamples=1500)
    blk = bootstrap_ratio(e, n, blocks=speakers, resamples=1500)
    assert blk.units == 40 and utt.units == 1000
    assert (blk.ci_high - blk.ci_low) > 1.5 * (utt.ci_high - utt.ci_low)
    assert blk.ci_low <= blk.estimate <= blk.ci_high


def test_probability_of_improvement() -> None:
    rng = np.random.default_rng(2)
    n = rng.integers(5, 25, 600)
    b = rng.binomial(n, 0.15)
    c = np.maximum(0, b - rng.binomial(n, 0.03))
    res = bootstrap_paired_difference(c, b, n, resamples=1000)
    assert res.estimate < 0 and res.prob_improvement > 0.99
    un = bootstrap_unpaired_difference(c, n, b, n, resamples=1000)
    assert un.ci_low <= un.estimate <= un.ci_high
    assert (un.ci_high - un.ci_low) > (res.ci_high - res.ci_low)
    with pytest.raises(ValueError, match="blocks"):
        bootstrap_ratio(b, n, blocks=np.arange(3))
