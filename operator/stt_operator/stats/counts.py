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

from stt_operator.stats.deferred import special, stats

DEFAULT_SRM_CONCENTRATION = 1000.0  # tight prior: SRM deviations of interest are ~1 % of traffic
DEFAULT_RATE_CONCENTRATION = 20.0  # error-rate shifts of interest are large (x1.5, x2)
# Error-rate comparisons mix Beta priors of these concentrations (see compare_event_rates).
RARE_EVENT_CONCENTRATIONS = (0.5, 2.0, 8.0, 32.0, 128.0)


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


def live_counts(served: Mapping[str, float], replayed: Mapping[str, float] | None = None) -> dict[str, float]:
    """Live requests per arm: what the servers counted minus the evaluator's own replay to them
    (the replay goes straight to every variant's Service, equally, whatever the weights; left
    in, it would pull a 90/10 split toward 50/50 and hide or fake a mismatch)."""
    replayed = replayed or {}
    return {arm: max(0.0, float(n) - float(replayed.get(arm, 0.0))) for arm, n in served.items()}


def combine_sample_ratios(checks: Mapping[str, SRMResult | str]) -> SRMResult | str:
    """One verdict from several sample-ratio checks (source -> result, or why it has no data):
    the first that alarms, else the one closest to alarming; the sources are named in the
    message. A check without data does not clear another's alarm."""
    results = {source: r for source, r in checks.items() if isinstance(r, SRMResult)}
    if not results:
        return "; ".join(f"{source}: {r}" for source, r in checks.items()) or "no sample-ratio check"
    alarmed = [(source, r) for source, r in results.items() if r.mismatch]
    source, worst = alarmed[0] if alarmed else min(results.items(), key=lambda sr: sr[1].p_value)
    notes = [f"{s}: {r}" for s, r in checks.items() if isinstance(r, str)]
    others = [f"{s} p={r.p_value:.2g}" for s, r in results.items() if s != source]
    message = f"{source} {worst.message}" + "".join(f"; {x}" for x in [*others, *notes])
    return SRMResult(
        worst.mismatch, worst.p_value, worst.chi2_p_value, worst.observed, worst.expected_share, message
    )


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


def _log_mean_exp(x: np.ndarray) -> float:
    m = float(np.max(x))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.mean(np.exp(x - m))))


def _p_from_log_bf(lbf: float) -> float:
    return float(min(1.0, math.exp(-lbf))) if lbf > -700 else 1.0


def compare_event_rates(
    candidate_events: float,
    candidate_exposure: float,
    baseline_events: float,
    baseline_exposure: float,
    concentration: float | Sequence[float] = RARE_EVENT_CONCENTRATIONS,
) -> RateComparison:
    """Errors per request, candidate vs baseline, as a sequential multinomial test on which arm
    each error came from (Lindon & Malek 2022); under H0 (equal rates) that share is the arm's
    share of exposure (requests), whatever the split. Exposure is taken as given (conditioned on).

    Conditioning on the errors makes the test exact for rare events and unequal arms: an arm
    with no errors so far is evidence only in proportion to its share of traffic (0/500 vs
    22/4500 has a null probability of 0.9^22 = 0.098, and the Bayes factor can never exceed its
    reciprocal). The Beta prior is a mixture over several concentrations (an average of test
    martingales is one): a small concentration detects lopsided splits of a few errors (12 vs 0
    in 2,000 requests, which a single wide-shift prior misses), a large one small relative
    shifts over many errors; the price is log(number of components) in evidence.
    """
    if candidate_exposure <= 0 or baseline_exposure <= 0:
        raise ValueError("exposure (requests) must be > 0 in both arms")
    x = _as_counts([candidate_events, baseline_events], "events")
    theta0 = np.array([candidate_exposure, baseline_exposure], dtype=float)
    share0 = float(theta0[0] / theta0.sum())
    ks = np.atleast_1d(np.asarray(concentration, dtype=float))
    if np.any(ks <= 0):
        raise ValueError(f"concentration must be > 0, got {concentration}")
    a0, a1 = ks * share0, ks * (1.0 - share0)
    # log BF of the Beta(k share0, k (1 - share0)) mixture per concentration (two cells).
    lbf = (
        special.betaln(a0 + x[0], a1 + x[1])
        - special.betaln(a0, a1)
        - x[0] * math.log(share0)
        - x[1] * math.log1p(-share0)
    )
    # One-sided: the prior restricted to "candidate share > null share" is also a martingale
    # under H0; for two cells its factor is exact with Beta tail probabilities:
    # BF+ = BF * P_posterior(theta > theta0) / P_prior(theta > theta0).
    with np.errstate(divide="ignore"):
        log_post_up = np.log(special.betaincc(a0 + x[0], a1 + x[1], share0))
        log_prior_up = np.log(special.betaincc(a0, a1, share0))
        log_post_dn = np.log(special.betainc(a0 + x[0], a1 + x[1], share0))
        log_prior_dn = np.log(special.betainc(a0, a1, share0))
    rc, rb = x[0] / candidate_exposure, x[1] / baseline_exposure
    return RateComparison(
        candidate_rate=float(rc),
        baseline_rate=float(rb),
        relative=float(rc / rb - 1.0) if rb > 0 else (math.inf if rc > 0 else 0.0),
        p_value=_p_from_log_bf(_log_mean_exp(lbf)),
        p_greater=_p_from_log_bf(_log_mean_exp(lbf + log_post_up - log_prior_up)),
        p_less=_p_from_log_bf(_log_mean_exp(lbf + log_post_dn - log_prior_dn)),
        candidate_events=float(x[0]),
        baseline_events=float(x[1]),
        candidate_exposure=float(candidate_exposure),
        baseline_exposure=float(baseline_exposure),
    )


def proportion_difference_se(
    candidate_events: float, candidate_exposure: float, baseline_events: float, baseline_exposure: float
) -> float:
    """SE of the difference of two proportions with each rate shrunk as (x + 1) / (n + 2)
    (Agresti-Caffo): never zero for an arm with no events, which would read as certainty."""
    pc = (candidate_events + 1.0) / (candidate_exposure + 2.0)
    pb = (baseline_events + 1.0) / (baseline_exposure + 2.0)
    return math.sqrt(pc * (1 - pc) / (candidate_exposure + 2.0) + pb * (1 - pb) / (baseline_exposure + 2.0))
