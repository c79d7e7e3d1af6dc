"""Latency from histogram buckets: parsing, resets, quantiles, and the three tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from stt_operator.stats import histogram as h

LES = ["0.1", "0.2", "0.5", "1", "2", "+Inf"]


def _cum(counts: list[float]) -> dict[str, float]:
    return dict(zip(LES, np.cumsum(counts).tolist(), strict=True))


def _sample(rng: np.random.Generator, scale: float, n: int) -> h.Buckets:
    x = rng.gamma(3.0, scale, n)
    edges = [0.1, 0.2, 0.5, 1, 2]
    idx = np.searchsorted(edges, x, side="left")
    return h.Buckets(np.array([*edges, math.inf]), np.bincount(idx, minlength=6).astype(float))


def test_from_cumulative_inf_rounding_and_monotonicity() -> None:
    b = h.from_cumulative({"+Inf": 30.2, "0.1": 9.6, "0.2": 20.0, "0.5": 19.7, "1": 30, "2": 30})
    assert list(b.counts) == [10, 10, 0, 10, 0, 0]
    assert math.isinf(b.upper[-1])
    with pytest.raises(ValueError, match=r"\+Inf"):
        h.from_cumulative({"0.1": 1, "1": 2})
    with pytest.raises(ValueError, match="NaN"):
        h.from_cumulative({"0.1": math.nan, "+Inf": 2})


def test_increments_since_handle_counter_reset() -> None:
    start = _cum([10, 10, 5, 0, 0, 0])
    now = _cum([12, 15, 5, 1, 0, 0])
    assert list(h.increments_since(start, now).counts) == [2, 5, 0, 1, 0, 0]
    after_reset = _cum([1, 2, 0, 0, 0, 0])
    assert list(h.increments_since(start, after_reset).counts) == [1, 2, 0, 0, 0, 0]


def test_quantile_interpolates_like_histogram_quantile() -> None:
    b = h.from_cumulative(_cum([10, 10, 10, 0, 0, 0]))
    assert h.quantile(b, 0.5) == pytest.approx(0.15)
    tail = h.from_cumulative(_cum([1, 0, 0, 0, 0, 9]))
    assert h.quantile(tail, 0.95) == 2.0  # in +Inf: the largest finite bound
    assert math.isnan(h.quantile(h.from_cumulative(_cum([0] * 6)), 0.5))


def test_quantile_ci_is_conservative_and_contains_estimate() -> None:
    rng = np.random.default_rng(2)
    b = _sample(rng, 0.1, 2000)
    lo, hi = h.quantile_ci(b, 0.95)
    assert lo <= h.quantile(b, 0.95) <= hi
    small = _sample(rng, 0.1, 20)
    assert h.quantile_ci(small, 0.99)[1] == math.inf


def test_mann_whitney_matches_scipy_on_expanded_data() -> None:
    rng = np.random.default_rng(3)
    a, b = _sample(rng, 0.12, 300), _sample(rng, 0.1, 250)
    xa = np.repeat(np.arange(6), a.counts.astype(int))
    xb = np.repeat(np.arange(6), b.counts.astype(int))
    ref = stats.mannwhitneyu(xa, xb, alternative="two-sided", use_continuity=False, method="asymptotic")
    got = h.mann_whitney_buckets(a, b)
    assert got.u == pytest.approx(ref.statistic)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    assert got.prob_candidate_slower > 0.5


def test_chi_square_merges_sparse_buckets() -> None:
    a = h.from_cumulative(_cum([100, 80, 30, 3, 1, 0]))
    b = h.from_cumulative(_cum([90, 85, 35, 2, 0, 1]))
    res = h.chi_square_buckets(a, b)
    table = h.merge_sparse(np.vstack([a.counts, b.counts]))
    exp = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    assert np.all(exp >= 5)
    assert res.buckets_used == table.shape[1] < 6
    assert res.p_value == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    assert res.p_value > 0.05


def test_tail_exceedance_detects_a_slower_candidate() -> None:
    rng = np.random.default_rng(4)
    base = _sample(rng, 0.1, 4000)
    same = _sample(rng, 0.1, 4000)
    slow = _sample(rng, 0.14, 4000)
    thr = h.quantile(base, 0.95)
    assert h.tail_exceedance_test(same, base, thr).p_value > 0.05
    res = h.tail_exceedance_test(slow, base, thr)
    assert res.p_greater < 1e-6 and res.candidate_share > res.baseline_share
    assert res.threshold >= thr  # snapped up to a bucket bound


def test_one_sample_exceedance_snaps_conservatively() -> None:
    b = h.from_cumulative(_cum([50, 30, 15, 5, 0, 0]))  # 5 % above 0.5 s
    bound_up, share, _, _ = h.one_sample_exceedance(b, 0.3, 0.05, snap="up")
    bound_dn, share_dn, _, _ = h.one_sample_exceedance(b, 0.3, 0.05, snap="down")
    assert (bound_up, bound_dn) == (0.5, 0.2)
    assert share == pytest.approx(0.05) and share_dn == pytest.approx(0.20)
    with pytest.raises(ValueError, match="snap"):
        h.one_sample_exceedance(b, 0.3, 0.05, snap="sideways")


def test_mismatched_layouts_rejected() -> None:
    a = h.from_cumulative(_cum([1, 1, 1, 1, 1, 1]))
    b = h.from_cumulative({"0.1": 1, "+Inf": 2})
    with pytest.raises(ValueError, match="bucket bounds"):
        h.chi_square_buckets(a, b)


@settings(deadline=None)  # shared CI machines are slow; no per-example deadline
@given(
    st.lists(st.integers(0, 50), min_size=6, max_size=6), st.lists(st.integers(0, 50), min_size=6, max_size=6)
)
def test_tests_return_valid_p_values(ca: list[int], cb: list[int]) -> None:
    a, b = h.from_cumulative(_cum(ca)), h.from_cumulative(_cum(cb))
    for p in (h.chi_square_buckets(a, b).p_value, h.mann_whitney_buckets(a, b).p_value):
        assert 0.0 <= p <= 1.0
    if a.total and b.total:
        t = h.tail_exceedance_test(a, b, 0.3)
        assert 0.0 <= t.p_value <= 1.0 and 0.0 <= t.p_greater <= 1.0
