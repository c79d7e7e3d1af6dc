"""Count data: the sequential multinomial test (Lindon & Malek 2022, "Anytime-valid inference
for multinomial count data", NeurIPS) and sample-ratio mismatch.

The Bayes factor of a Dirichlet(k * theta0) mixture against the point null theta0 is a
nonnegative martingale under H0, so by Ville's inequality 1 / BF is an always-valid p-value at
every look over cumulative counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

DEFAULT_SRM_CONCENTRATION = 1000.0  # tight prior: SRM deviations of interest are ~1 % of traffic
DEFAULT_RATE_CONCENTRATION = 20.0  # error-rate shifts of interest are large (x1.5, x2)


@dataclass(frozen=True)
class MultinomialTest:
    p_value: float  # always-valid
    log_bayes_factor: float
    observed: tuple[float, ...]
    expected_share: tuple[float, ...]
    chi2_p_value: float  # fixed-horizon Pearson chi-square, for reference only


def _as_counts(counts: Sequence[float], name: str) -> np.ndarray:
    x = np.asarray(counts, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"{name} must be a list of at least two counts, got {counts!r}")
    if not np.all(np.isfinite(x)) or np.any(x < -0.5):
        raise ValueError(f"{name} must be finite and non-negative, got {counts!r}")
    # increase() over Prometheus counters is extrapolated and may be non-integer: round.
    return np.maximum(np.rint(x), 0.0)


def _as_shares(shares: Sequence[float], size: int, name: str) -> np.ndarray:
    p = np.asarray(shares, dtype=float)
    if p.shape != (size,) or np.any(p <= 0) or not np.all(np.isfinite(p)):
        raise ValueError(f"{name} must be {size} positive numbers, got {shares!r}")
    return p / p.sum()


def multinomial_log_bayes_factor(counts: np.ndarray, theta0: np.ndarray, concentration: float) -> float:
    a = concentration * theta0
    n = counts.sum()
    log_marginal = (
        special.gammaln(a.sum())
        - special.gammaln(a.sum() + n)
        + np.sum(special.gammaln(a + counts) - special.gammaln(a))
    )
    log_null = float(np.sum(counts * np.log(theta0)))
    return float(log_marginal - log_null)


def sequential_multinomial_test(
    counts: Sequence[float], theta0: Sequence[float], concentration: float = DEFAULT_RATE_CONCENTRATION
) -> MultinomialTest:
    """Always-valid test of H0: the cells' probabilities are `theta0` (normalised)."""
    x = _as_counts(counts, "counts")
    p0 = _as_shares(theta0, x.size, "theta0")
    if concentration <= 0:
        raise ValueError(f"concentration must be > 0, got {concentration}")
    lbf = multinomial_log_bayes_factor(x, p0, concentration)
    n = x.sum()
    chi2_p = float(stats.chisquare(x, p0 * n).pvalue) if n > 0 else 1.0
    return MultinomialTest(
        p_value=float(min(1.0, math.exp(-lbf))) if lbf > -700 else 1.0,
        log_bayes_factor=lbf,
        observed=tuple(float(v) for v in x),
        expected_share=tuple(float(v) for v in p0),
        chi2_p_value=chi2_p,
    )


@dataclass(frozen=True)
class SRMResult:
    mismatch: bool
    p_value: float  # always-valid (sequential multinomial)
    chi2_p_value: float
    observed: dict[str, float]
    expected_share: dict[str, float]
    message: str


def sample_ratio_mismatch(
    counts: Mapping[str, float],
    weights: Mapping[str, float],
    threshold: float = 0.001,
    concentration: float = DEFAULT_SRM_CONCENTRATION,
) -> SRMResult:
    """Do the arms' sample counts match the configured weights? Alarm when p < threshold.

    Arms with weight 0 are left out (they should get no traffic)."""
    missing = set(weights) - set(counts)
    if missing:
        raise ValueError(f"counts lack arms {sorted(missing)} that have weights")
    arms = [a for a in weights if weights[a] > 0]
    if len(arms) < 2:
        raise ValueError("sample-ratio check needs at least two arms with positive weight")
    test = sequential_multinomial_test([counts[a] for a in arms], [weights[a] for a in arms], concentration)
    observed = dict(zip(arms, test.observed, strict=True))
    expected = dict(zip(arms, test.expected_share, strict=True))
    total = sum(observed.values())
    mismatch = test.p_value < threshold
    shares = ", ".join(
        f"{a} {observed[a] / total:.1%} (expected {expected[a]:.1%})" if total else f"{a} 0" for a in arms
    )
    msg = (
        f"sample ratio mismatch: {shares}; always-valid p={test.p_value:.2g} < {threshold:g}"
        if mismatch
        else f"sample ratio OK: {shares}; p={test.p_value:.2g}"
    )
    return SRMResult(mismatch, test.p_value, test.chi2_p_value, observed, expected, msg)


@dataclass(frozen=True)
class RateComparison:
    candidate_rate: float
    baseline_rate: float
    relative: float  # candidate / baseline - 1
    p_value: float  # always-valid, H0: equal rates
    p_greater: float  # always-valid, H0: candidate rate <= baseline rate
    p_less: float  # always-valid, H0: candidate rate >= baseline rate
    candidate_events: float
    baseline_events: float
    candidate_exposure: float
    baseline_exposure: float


def compare_event_rates(
    candidate_events: float,
    candidate_exposure: float,
    baseline_events: float,
    baseline_exposure: float,
    concentration: float = DEFAULT_RATE_CONCENTRATION,
) -> RateComparison:
    """Errors per request, candidate vs baseline, as a sequential multinomial test on which arm
    each error came from; under H0 (equal rates) that share is the arm's share of exposure
    (requests). Exposure is taken as given (conditioned on)."""
    if candidate_exposure <= 0 or baseline_exposure <= 0:
        raise ValueError("exposure (requests) must be > 0 in both arms")
    x = _as_counts([candidate_events, baseline_events], "events")
    theta0 = np.array([candidate_exposure, baseline_exposure], dtype=float)
    test = sequential_multinomial_test(x, theta0, concentration)
    rc, rb = x[0] / candidate_exposure, x[1] / baseline_exposure
    # One-sided: the same mixture with its prior restricted to "candidate share > null share" is
    # also a martingale under H0; for two cells its factor is exact with Beta probabilities:
    # BF+ = BF * P_posterior(theta > theta0) / P_prior(theta > theta0).
    a = concentration * (theta0 / theta0.sum())
    share0 = theta0[0] / theta0.sum()
    log_post = stats.beta.logsf(share0, a[0] + x[0], a[1] + x[1])
    log_prior = stats.beta.logsf(share0, a[0], a[1])
    lbf_plus = test.log_bayes_factor + log_post - log_prior
    p_greater = float(min(1.0, math.exp(-lbf_plus))) if lbf_plus > -700 else 1.0
    lbf_minus = (
        test.log_bayes_factor
        + stats.beta.logcdf(share0, a[0] + x[0], a[1] + x[1])
        - stats.beta.logcdf(share0, a[0], a[1])
    )
    p_less = float(min(1.0, math.exp(-lbf_minus))) if lbf_minus > -700 else 1.0
    return RateComparison(
        candidate_rate=float(rc),
        baseline_rate=float(rb),
        relative=float(rc / rb - 1.0) if rb > 0 else (math.inf if rc > 0 else 0.0),
        p_value=test.p_value,
        p_greater=p_greater,
        p_less=p_less,
        candidate_events=float(x[0]),
        baseline_events=float(x[1]),
        candidate_exposure=float(candidate_exposure),
        baseline_exposure=float(baseline_exposure),
    )
