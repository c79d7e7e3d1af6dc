"""Bootstrap confidence intervals for ratio-of-sums metrics (Bisani & Ney, ICASSP 2004).

Resampling units are utterances, or blocks (speaker / session) when block ids exist: errors
within a speaker are correlated, so resampling whole blocks keeps that in the interval. A ratio
of sums is unchanged by summing inside blocks first, so blocks become the units.
Also reports Bisani & Ney's "probability of improvement" (share of resamples where the
candidate's error rate is below the baseline's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stt_operator.stats.deferred import stats


@dataclass(frozen=True)
class BootstrapResult:
    estimate: float
    ci_low: float
    ci_high: float
    se: float
    units: int  # utterances or blocks resampled
    resamples: int
    prob_improvement: float | None = None  # paired/unpaired differences: P*(candidate < baseline)


def _by_block(blocks: np.ndarray | None, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    if blocks is None:
        return columns
    blocks = np.asarray(blocks)
    if blocks.shape[0] != columns[0].shape[0]:
        raise ValueError(f"blocks has {blocks.shape[0]} entries for {columns[0].shape[0]} utterances")
    _, inverse = np.unique(blocks, return_inverse=True)
    return tuple(np.bincount(inverse, weights=c) for c in columns)


def _ratio_diff(c: np.ndarray, b: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
    return (c.sum(axis=axis) - b.sum(axis=axis)) / n.sum(axis=axis)


def _check(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    out = tuple(np.asarray(a, dtype=float) for a in arrays)
    if len({a.shape for a in out}) != 1 or out[0].ndim != 1:
        raise ValueError(f"arrays must be 1-D of equal length, got {[a.shape for a in out]}")
    if out[0].size < 2:
        raise ValueError("bootstrap needs at least two units")
    return out


def bootstrap_ratio(
    errors: np.ndarray,
    lengths: np.ndarray,
    *,
    blocks: np.ndarray | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int | None = 0,
) -> BootstrapResult:
    """Percentile CI of Σe / Σn, resampling utterances (or blocks)."""
    e, n = _check(errors, lengths)
    e, n = _by_block(blocks, e, n)
    res = stats.bootstrap(
        (e, n),
        lambda x, y, axis=-1: x.sum(axis=axis) / y.sum(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return BootstrapResult(
        estimate=float(e.sum() / n.sum()),
        ci_low=float(res.confidence_interval.low),
        ci_high=float(res.confidence_interval.high),
        se=float(res.standard_error),
        units=int(e.size),
        resamples=resamples,
    )


def bootstrap_paired_difference(
    candidate_errors: np.ndarray,
    baseline_errors: np.ndarray,
    lengths: np.ndarray,
    *,
    blocks: np.ndarray | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int | None = 0,
) -> BootstrapResult:
    """Percentile CI of ΔW = (Σc - Σb) / Σn, both systems resampled on the same utterances."""
    c, b, n = _check(candidate_errors, baseline_errors, lengths)
    c, b, n = _by_block(blocks, c, b, n)
    res = stats.bootstrap(
        (c, b, n),
        _ratio_diff,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    dist = res.bootstrap_distribution
    return BootstrapResult(
        estimate=float(_ratio_diff(c, b, n)),
        ci_low=float(res.confidence_interval.low),
        ci_high=float(res.confidence_interval.high),
        se=float(res.standard_error),
        units=int(c.size),
        resamples=resamples,
        prob_improvement=float(np.mean(dist < 0)),
    )


def bootstrap_unpaired_difference(
    candidate_errors: np.ndarray,
    candidate_lengths: np.ndarray,
    baseline_errors: np.ndarray,
    baseline_lengths: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int | None = 0,
) -> BootstrapResult:
    """Percentile CI of R_c - R_b, each arm resampled on its own (split traffic)."""
    ce, cn = _check(candidate_errors, candidate_lengths)
    be, bn = _check(baseline_errors, baseline_lengths)
    rng = np.random.default_rng(seed)
    ic = rng.integers(0, ce.size, size=(resamples, ce.size))
    ib = rng.integers(0, be.size, size=(resamples, be.size))
    dist = ce[ic].sum(axis=1) / cn[ic].sum(axis=1) - be[ib].sum(axis=1) / bn[ib].sum(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(dist, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(
        estimate=float(ce.sum() / cn.sum() - be.sum() / bn.sum()),
        ci_low=float(low),
        ci_high=float(high),
        se=float(dist.std(ddof=1)),
        units=int(ce.size + be.size),
        resamples=resamples,
        prob_improvement=float(np.mean(dist < 0)),
    )
