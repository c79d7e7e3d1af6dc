"""Latency comparisons from Prometheus histogram buckets.

Input is what `sum by (le) (increase(x_bucket[window]))` returns per arm: cumulative counts
keyed by upper bound `le` (including `+Inf`), possibly non-integer (increase() extrapolates)
and possibly non-monotone by a hair. Never average per-pod quantiles: add bucket counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stt_operator.stats import sequential
from stt_operator.stats.deferred import stats


@dataclass(frozen=True)
class Buckets:
    """Per-bucket (not cumulative) counts with their upper bounds; the last bound is +Inf."""

    upper: np.ndarray
    counts: np.ndarray

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def lower(self) -> np.ndarray:
        lo = np.concatenate([[0.0], self.upper[:-1]])
        return np.minimum(lo, self.upper)


def parse_le(le: str | float) -> float:
    if isinstance(le, str) and le.strip().lower() in ("+inf", "inf"):
        return math.inf
    value = float(le)
    if math.isnan(value):
        raise ValueError(f"bucket bound le={le!r} is NaN")
    return value


def from_cumulative(cumulative: Mapping[str | float, float]) -> Buckets:
    """Per-bucket counts from Prometheus cumulative `le` buckets.

    Non-integer values are rounded; a cumulative count that dips below its predecessor (rounding
    of extrapolated increases) is lifted to it, so no bucket is negative. A missing `+Inf` bucket
    is an error: without it the total is unknown.
    """
    if not cumulative:
        raise ValueError("histogram has no buckets")
    pairs = sorted((parse_le(k), float(v)) for k, v in cumulative.items())
    upper = np.array([p[0] for p in pairs])
    if not math.isinf(upper[-1]):
        raise ValueError('histogram lacks the le="+Inf" bucket')
    cum = np.array([p[1] for p in pairs])
    if not np.all(np.isfinite(cum)):
        raise ValueError("histogram bucket counts contain NaN or Inf")
    cum = np.maximum.accumulate(np.maximum(np.rint(cum), 0.0))
    counts = np.diff(np.concatenate([[0.0], cum]))
    return Buckets(upper=upper, counts=counts)


def increments_since(start: Mapping[str | float, float], now: Mapping[str | float, float]) -> Buckets:
    """Bucket increments between two raw scrapes of cumulative buckets. A smaller `+Inf` count now
    than at the start means the counter was reset (process restart): count from zero then."""
    b_now, b_start = from_cumulative(now), from_cumulative(start)
    if b_now.upper.shape != b_start.upper.shape or not np.array_equal(b_now.upper, b_start.upper):
        raise ValueError("bucket layouts differ between start and now")
    if b_now.total < b_start.total:
        return b_now
    return Buckets(upper=b_now.upper, counts=np.maximum(b_now.counts - b_start.counts, 0.0))


def _same_layout(a: Buckets, b: Buckets) -> None:
    if not np.array_equal(a.upper, b.upper):
        raise ValueError("the two arms' histograms have different bucket bounds")


def quantile(b: Buckets, q: float) -> float:
    """Quantile by linear interpolation inside its bucket (what histogram_quantile does); a
    quantile in the +Inf bucket returns the largest finite bound."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    n = b.total
    if n <= 0:
        return math.nan
    rank = q * n
    cum = np.cumsum(b.counts)
    i = int(np.searchsorted(cum, rank, side="left"))
    i = min(i, len(cum) - 1)
    if math.isinf(b.upper[i]):
        return float(b.upper[-2]) if len(b.upper) > 1 else math.nan
    lo = b.lower()[i]
    below = cum[i - 1] if i > 0 else 0.0
    inside = b.counts[i]
    frac = (rank - below) / inside if inside > 0 else 1.0
    return float(lo + (b.upper[i] - lo) * frac)


def quantile_ci(b: Buckets, q: float, confidence: float = 0.95) -> tuple[float, float]:
    """Conservative CI for a quantile: distribution-free order-statistic ranks (binomial), widened
    to the outer edges of the buckets that hold them. The upper end may be +Inf."""
    n = int(b.total)
    if n <= 0:
        return (math.nan, math.nan)
    alpha = 1.0 - confidence
    lo_rank = int(stats.binom.ppf(alpha / 2, n, q))  # order statistic index (1-based) >= this
    hi_rank = int(stats.binom.ppf(1 - alpha / 2, n, q)) + 1
    cum = np.cumsum(b.counts)
    lower_edges = b.lower()
    low = 0.0 if lo_rank < 1 else float(lower_edges[int(np.searchsorted(cum, lo_rank, side="left"))])
    high = math.inf if hi_rank > n else float(b.upper[int(np.searchsorted(cum, hi_rank, side="left"))])
    return (low, high)


@dataclass(frozen=True)
class TailTest:
    threshold: float  # the bucket bound actually used
    candidate_share: float
    baseline_share: float
    estimate: float  # candidate - baseline share above threshold
    se: float
    p_value: float
    p_greater: float  # small => candidate has more tail
    ci_low: float
    ci_high: float
    p_less: float = 1.0  # small => candidate has less tail


def exceedance(b: Buckets, threshold: float, snap: str = "up") -> tuple[float, float, float]:
    """(bound used, observations above it, total). `snap` picks the bucket bound at or above
    (`up`, fewer exceedances: conservative for "worse") or at or below (`down`) the threshold."""
    finite = b.upper[np.isfinite(b.upper)]
    if finite.size == 0:
        raise ValueError("histogram has only the +Inf bucket")
    if snap == "up":
        idx = np.nonzero(finite >= threshold)[0]
        bound = float(finite[idx[0]]) if idx.size else math.inf
    elif snap == "down":
        idx = np.nonzero(finite <= threshold)[0]
        bound = float(finite[idx[-1]]) if idx.size else 0.0
    else:
        raise ValueError(f"snap must be 'up' or 'down', got {snap!r}")
    above = float(b.counts[b.upper > bound].sum())
    return bound, above, b.total


def tail_exceedance_test(
    candidate: Buckets,
    baseline: Buckets,
    threshold: float,
    *,
    confidence: float = 0.95,
    sequential_: bool = True,
    tuning_n: float | None = None,
) -> TailTest:
    """Two proportions: share of requests slower than `threshold` (e.g. the baseline p95)."""
    _same_layout(candidate, baseline)
    bound, xc, nc = exceedance(candidate, threshold)
    _, xb, nb = exceedance(baseline, threshold)
    if nc <= 0 or nb <= 0:
        return TailTest(bound, math.nan, math.nan, math.nan, math.nan, 1.0, 1.0, math.nan, math.nan)
    pc, pb = xc / nc, xb / nb
    # Pooled variance for the test (exact under H0), unpooled for the interval.
    pool = (xc + xb) / (nc + nb)
    se0 = math.sqrt(pool * (1 - pool) * (1 / nc + 1 / nb))
    se = math.sqrt(pc * (1 - pc) / nc + pb * (1 - pb) / nb)
    est = pc - pb
    z = 0.0 if se0 == 0 else est / se0
    alpha = 1 - confidence
    t = float(sequential.effective_n(nc, nb))  # unequal arms: the information, not the total
    tuning = tuning_n if tuning_n is not None else sequential.default_tuning_n(t / 2)
    if sequential_:
        p2, pg, pl = sequential.always_valid_p(z, t, alpha, tuning)
        half = sequential.one_sided_halfwidth(se, t, alpha, tuning)
    else:
        p2, pg, pl = sequential.fixed_horizon_p(z)
        half = float(stats.norm.ppf(1 - alpha / 2) * se)
    return TailTest(bound, pc, pb, est, se, float(p2), float(pg), est - half, est + half, float(pl))


def merge_sparse(table: np.ndarray, min_expected: float = 5.0) -> np.ndarray:
    """Merge adjacent bucket columns of a 2 x k table until every expected count is >= min_expected
    (the chi-square approximation needs it); sparse tail buckets fold into their neighbour."""
    cols = [table[:, j].astype(float) for j in range(table.shape[1]) if table[:, j].sum() > 0]
    if not cols:
        return np.zeros((table.shape[0], 0))
    row = table.sum(axis=1)
    total = row.sum()

    def ok(col: np.ndarray) -> bool:
        return bool(np.all(row * col.sum() / total >= min_expected))

    merged: list[np.ndarray] = []
    acc = np.zeros(table.shape[0])
    for col in cols:
        acc = acc + col
        if ok(acc):
            merged.append(acc)
            acc = np.zeros(table.shape[0])
    if acc.sum() > 0:
        if merged:
            merged[-1] = merged[-1] + acc
        else:
            merged.append(acc)
    return np.stack(merged, axis=1)


@dataclass(frozen=True)
class ChiSquareTest:
    statistic: float
    dof: int
    p_value: float
    buckets_used: int


def chi_square_buckets(candidate: Buckets, baseline: Buckets, min_expected: float = 5.0) -> ChiSquareTest:
    """Homogeneity of the two arms' bucket distributions (fixed-horizon; secondary evidence)."""
    _same_layout(candidate, baseline)
    table = merge_sparse(np.vstack([candidate.counts, baseline.counts]), min_expected)
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return ChiSquareTest(0.0, 0, 1.0, int(table.shape[1]))
    res = stats.chi2_contingency(table, correction=False)
    return ChiSquareTest(float(res.statistic), int(res.dof), float(res.pvalue), int(table.shape[1]))


@dataclass(frozen=True)
class MannWhitneyTest:
    u: float
    z: float
    p_value: float
    p_greater: float  # small => candidate slower (stochastically larger)
    prob_candidate_slower: float  # P(C > B) + P(C = B) / 2


def mann_whitney_buckets(candidate: Buckets, baseline: Buckets) -> MannWhitneyTest:
    """Mann-Whitney U on bucket indices (ordinal, heavy ties), closed form with tie correction."""
    _same_layout(candidate, baseline)
    c, b = candidate.counts, baseline.counts
    n1, n2 = c.sum(), b.sum()
    if n1 == 0 or n2 == 0:
        return MannWhitneyTest(math.nan, math.nan, 1.0, 1.0, math.nan)
    below_b = np.concatenate([[0.0], np.cumsum(b)[:-1]])
    u = float(np.sum(c * (below_b + b / 2.0)))  # pairs where candidate > baseline, ties half
    n = n1 + n2
    t = c + b
    tie = float(np.sum(t**3 - t))
    var = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1))) if n > 1 else 0.0
    mean = n1 * n2 / 2.0
    z = 0.0 if var <= 0 else (u - mean) / math.sqrt(var)
    return MannWhitneyTest(
        u=u,
        z=z,
        p_value=float(2 * stats.norm.sf(abs(z))),
        p_greater=float(stats.norm.sf(z)),
        prob_candidate_slower=u / (n1 * n2),
    )


def one_sample_exceedance(
    b: Buckets,
    threshold: float,
    max_share: float,
    *,
    snap: str,
    confidence: float = 0.95,
    sequential_: bool = True,
    tuning_n: float | None = None,
) -> tuple[float, float, float, float]:
    """Is the share of observations above `threshold` larger than `max_share` (e.g. 0.05 for
    "p95 <= threshold")? Returns (bound used, share, p_greater, p_less) with always-valid p-values."""
    bound, above, n = exceedance(b, threshold, snap=snap)
    if n <= 0:
        return bound, math.nan, 1.0, 1.0
    share = above / n
    se0 = math.sqrt(max_share * (1 - max_share) / n)
    z = (share - max_share) / se0 if se0 > 0 else 0.0
    alpha = 1 - confidence
    if sequential_:
        tuning = tuning_n if tuning_n is not None else sequential.default_tuning_n(n, 1)
        _, pg, pl = sequential.always_valid_p(z, n, alpha, tuning)
    else:
        _, pg, pl = sequential.fixed_horizon_p(z)
    return bound, share, float(pg), float(pl)


def interpolated_share_above(b: Buckets, x: float, side: str = "low") -> float:
    """Share of observations above x, linear inside x's bucket (histogram_quantile's model).
    Above the last finite bound the +Inf bucket cannot be split: `low` counts none of it above
    x, `high` all of it."""
    n = b.total
    if n <= 0:
        return math.nan
    finite = b.upper[np.isfinite(b.upper)]
    if finite.size and x >= finite[-1]:
        inf_count = float(b.counts[~np.isfinite(b.upper)].sum())
        if x == finite[-1] or side == "high":
            return inf_count / n
        return 0.0
    i = int(np.searchsorted(b.upper, x, side="right"))  # x's bucket: lower <= x < upper
    lo = float(b.lower()[i])
    up = float(b.upper[i])
    inside = float(b.counts[i]) * ((up - x) / (up - lo) if up > lo else 0.0)
    return (float(b.counts[i + 1 :].sum()) + max(0.0, inside)) / n


@dataclass(frozen=True)
class QuantileComparison:
    bound: float  # the latency the candidate is compared at: factor * baseline quantile + shift
    baseline_quantile: float  # the baseline's interpolated quantile
    candidate_share: float  # candidate share above `bound`
    p_greater: float  # small => candidate quantile > factor * baseline quantile + shift
    p_less: float  # small => candidate quantile < factor * baseline quantile + shift


def two_sample_quantile_test(
    candidate: Buckets,
    baseline: Buckets,
    q: float,
    *,
    factor: float = 1.0,
    shift: float = 0.0,
    snap: str,
    confidence: float = 0.95,
    sequential_: bool = True,
    tuning_n: float | None = None,
) -> QuantileComparison:
    """H0: Q_c(q) = factor * Q_b(q) + shift, both quantiles estimated (relative and margin rules).

    The candidate's share above the bound x = factor * Q̂_b(q) + shift is compared with 1 - q.
    The baseline quantile is itself an estimate: by its Bahadur representation its error moves
    that share by as much as a binomial share of the baseline's own size, so under H0 (at the
    boundary, where the candidate is the baseline rescaled) the share has variance
    q (1 - q) (1/n_c + 1/n_b), not q (1 - q) / n_c as if the baseline were known. The null is the
    same at every look (the rule), so the always-valid p-values can be carried as running minima.
    The candidate's share above x is interpolated inside x's bucket, as the baseline quantile is
    (`histogram_quantile`): both arms read the same piecewise-linear CDF, so A/A data meets the
    null exactly, where snapping x to a bucket bound would lose all power on coarse buckets.
    Beyond the last finite bound nothing can be interpolated: `snap="up"` (for p_greater, fail)
    takes the smallest share the buckets allow there, `down` (p_less, pass) the largest."""
    _same_layout(candidate, baseline)
    nc, nb = candidate.total, baseline.total
    xb = quantile(baseline, q)
    if nc <= 0 or nb <= 0 or not math.isfinite(xb):
        return QuantileComparison(math.nan, xb, math.nan, 1.0, 1.0)
    bound = factor * xb + shift
    share = interpolated_share_above(candidate, bound, side="low" if snap == "up" else "high")
    se0 = math.sqrt(q * (1 - q) * (1.0 / nc + 1.0 / nb))
    z = (share - (1 - q)) / se0
    alpha = 1 - confidence
    t = float(sequential.effective_n(nc, nb))
    if sequential_:
        tuning = tuning_n if tuning_n is not None else sequential.default_tuning_n(t / 2)
        _, pg, pl = sequential.always_valid_p(z, t, alpha, tuning)
    else:
        _, pg, pl = sequential.fixed_horizon_p(z)
    return QuantileComparison(bound, xb, share, float(pg), float(pl))
