"""Ratio metrics: delta method against closed forms, paired vs unpaired, invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_operator.stats.bootstrap import bootstrap_paired_difference, bootstrap_ratio
from stt_operator.stats.ratio import (
    PairedStats,
    RatioStats,
    one_sample,
    paired_difference,
    paired_relative,
    unpaired_difference,
    unpaired_relative,
)


def _corpus(rng: np.random.Generator, n: int, wer: float = 0.1, extra: float = 0.02):
    lengths = rng.integers(3, 30, n)
    # Per-utterance difficulty varies (over-dispersion): words are not independent trials.
    difficulty = rng.beta(2, 2 / wer - 2, n)
    base = rng.binomial(lengths, difficulty)
    cand = np.minimum(lengths * 2, base + rng.binomial(lengths, extra))
    return cand, base, lengths


def test_delta_variance_matches_closed_form() -> None:
    e = np.array([1.0, 0.0, 3.0, 2.0, 5.0])
    n = np.array([10.0, 4.0, 12.0, 8.0, 20.0])
    rs = RatioStats.from_arrays(e, n)
    r = e.sum() / n.sum()
    expected = len(e) / (len(e) - 1) * np.sum((e - r * n) ** 2) / n.sum() ** 2
    assert rs.ratio == pytest.approx(11 / 54)
    assert rs.variance == pytest.approx(expected, rel=1e-12)


def test_paired_se_is_design_formula_and_exported_sums_agree() -> None:
    rng = np.random.default_rng(3)
    c, b, n = _corpus(rng, 500)
    ps = PairedStats.from_arrays(c, b, n)
    d = c - b
    dw = d.sum() / n.sum()
    se = math.sqrt(len(d) / (len(d) - 1) * np.sum((d - dw * n) ** 2)) / n.sum()
    assert ps.difference == pytest.approx(dw)
    assert ps.difference_se == pytest.approx(se, rel=1e-9)
    exported = PairedStats.from_exported(
        pairs=len(d),
        sum_len=n.sum(),
        sum_len_sq=(n * n).sum(),
        sum_cand=c.sum(),
        sum_base=b.sum(),
        sum_diff_sq=(d * d).sum(),
        sum_cand_sq=(c * c).sum(),
        sum_base_sq=(b * b).sum(),
        sum_cand_len=(c * n).sum(),
        sum_base_len=(b * n).sum(),
    )
    assert exported.difference_se == pytest.approx(se, rel=1e-9)
    k = 1.07
    direct = RatioStats.from_arrays(c - k * b, n)
    assert ps.contrast(k).se == pytest.approx(direct.se, rel=1e-9)


def test_words_as_bernoulli_underestimates_variance() -> None:
    rng = np.random.default_rng(5)
    _, b, n = _corpus(rng, 2000)
    rs = RatioStats.from_arrays(b, n)
    assert rs.se > 1.15 * rs.naive_binomial_se()


def test_delta_se_agrees_with_bootstrap() -> None:
    rng = np.random.default_rng(7)
    c, b, n = _corpus(rng, 800)
    rs = RatioStats.from_arrays(b, n)
    boot = bootstrap_ratio(b, n, resamples=2000, seed=1)
    assert boot.se == pytest.approx(rs.se, rel=0.12)
    ps = PairedStats.from_arrays(c, b, n)
    bd = bootstrap_paired_difference(c, b, n, resamples=2000, seed=1)
    assert bd.se == pytest.approx(ps.difference_se, rel=0.12)
    assert bd.ci_low <= ps.difference <= bd.ci_high


def test_fixed_horizon_ci_coverage_near_nominal() -> None:
    rng = np.random.default_rng(11)
    truth_runs = []
    for _ in range(300):
        lengths = rng.integers(3, 30, 400)
        base = rng.binomial(lengths, 0.1)
        rs = RatioStats.from_arrays(base, lengths)
        c = one_sample(rs.ratio, rs.se, rs.n, null=0.1, sequential_=False)
        truth_runs.append(c.ci_low <= 0.1 <= c.ci_high)
    assert 0.91 <= np.mean(truth_runs) <= 0.985


def test_paired_is_tighter_than_unpaired_for_correlated_errors() -> None:
    rng = np.random.default_rng(13)
    c, b, n = _corpus(rng, 1000)
    ps = PairedStats.from_arrays(c, b, n)
    paired = paired_difference(ps)
    unpaired = unpaired_difference(ps.candidate, ps.baseline)
    assert paired.estimate == pytest.approx(unpaired.estimate)
    assert paired.se < 0.6 * unpaired.se
    assert paired.p_greater < unpaired.p_greater


def test_relative_rules_split_at_the_true_ratio() -> None:
    rng = np.random.default_rng(17)
    c, b, n = _corpus(rng, 3000, extra=0.03)
    ps = PairedStats.from_arrays(c, b, n)
    rel = c.sum() / b.sum() - 1
    assert rel > 0.2
    loose = paired_relative(ps, max_increase=rel + 0.15)
    tight = paired_relative(ps, max_increase=max(0.0, rel - 0.15))
    assert loose.p_less < 0.01 and loose.p_greater > 0.5
    assert tight.p_greater < 0.01 and tight.p_less > 0.5
    un = unpaired_relative(ps.candidate, ps.baseline, max_increase=0.0)
    assert un.estimate == pytest.approx(rel)
    assert un.p_greater < 0.05


def test_zero_variance_and_tiny_samples_are_handled() -> None:
    rs = RatioStats.from_arrays(np.zeros(5), np.full(5, 10.0))
    assert rs.ratio == 0 and rs.se == 0
    c = one_sample(rs.ratio, rs.se, rs.n, null=0.1)
    assert c.p_less == 0.0 and c.p_greater == 1.0
    single = RatioStats.from_arrays(np.array([1.0]), np.array([4.0]))
    assert math.isnan(single.variance)
    assert one_sample(single.ratio, single.se, single.n, null=0.1).p_value == 1.0


counts = st.lists(st.tuples(st.integers(0, 20), st.integers(1, 30)), min_size=3, max_size=60)


@settings(max_examples=60, deadline=None)
@given(a=counts, b=counts)
def test_unpaired_symmetry_and_valid_p(a, b) -> None:
    ra = RatioStats.from_arrays(np.array([x for x, _ in a]), np.array([y for _, y in a]))
    rb = RatioStats.from_arrays(np.array([x for x, _ in b]), np.array([y for _, y in b]))
    ab, ba = unpaired_difference(ra, rb), unpaired_difference(rb, ra)
    assert ab.estimate == pytest.approx(-ba.estimate, abs=1e-12)
    assert ab.p_value == pytest.approx(ba.p_value, abs=1e-9)
    assert ab.p_greater == pytest.approx(ba.p_less, abs=1e-9)
    for p in (ab.p_value, ab.p_greater, ab.p_less):
        assert 0.0 <= p <= 1.0
    if math.isfinite(ab.ci_low):
        assert ab.ci_low - 1e-12 <= ab.estimate <= ab.ci_high + 1e-12


@settings(max_examples=60, deadline=None)
@given(a=counts, scale=st.integers(2, 9))
def test_ratio_scale_invariance(a, scale) -> None:
    e = np.array([x for x, _ in a], dtype=float)
    n = np.array([y for _, y in a], dtype=float)
    r1, r2 = RatioStats.from_arrays(e, n), RatioStats.from_arrays(e * scale, n * scale)
    assert r2.ratio == pytest.approx(r1.ratio)
    # Sums of squares cancel when the residuals vanish: compare up to float noise.
    assert r2.se == pytest.approx(r1.se, rel=1e-6, abs=1e-6)
