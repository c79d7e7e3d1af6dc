"""Always-valid inference for an interval-by-interval look at cumulative data.

Asymptotic confidence sequences (Waudby-Smith, Arbour, Sinha, Kennedy, Ramdas 2023, "Time-uniform
central limit theory and asymptotic confidence sequences"): for an asymptotically linear
estimator with per-unit influence s.d. sigma after t units,

    C_t = est +/- sigma * sqrt( 2 (t rho^2 + 1) / (t^2 rho^2) * log( sqrt(t rho^2 + 1) / alpha ) ).

Its dual is the normal-mixture likelihood ratio of mSPRT (Johari, Pekelis, Walsh), so the
always-valid p-value is 1 / M_t with M_t the mixture martingale; a one-sided version mixes over a
half-normal prior. All functions accept numpy arrays (the benchmark vectorises over runs).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stt_operator.stats.deferred import optimize, special, stats

ArrayLike = Any


def rho_squared(alpha: float, tuning_n: float) -> float:
    """The mixture width that makes the CS tightest at `tuning_n` units (paper, eq. for rho*)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if tuning_n <= 0:
        raise ValueError(f"tuning_n must be > 0, got {tuning_n}")
    la = -2.0 * np.log(alpha)
    return float((la + np.log(la + 1.0)) / tuning_n)


def cs_halfwidth(se: ArrayLike, t: ArrayLike, alpha: float, tuning_n: float) -> np.ndarray:
    """Half-width of the two-sided asymptotic CS for an estimate with standard error `se` at t units."""
    t = np.asarray(t, dtype=float)
    sd = np.asarray(se, dtype=float) * np.sqrt(t)
    r2 = rho_squared(alpha, tuning_n)
    tr = t * r2 + 1.0
    return sd * np.sqrt(2.0 * tr / (t * t * r2) * np.log(np.sqrt(tr) / alpha))


def log_mixture_two_sided(z: ArrayLike, t: ArrayLike, rho2: float) -> np.ndarray:
    """log M_t of the N(0, rho^2) normal mixture, z = estimate / se after t units."""
    z = np.asarray(z, dtype=float)
    tr = np.asarray(t, dtype=float) * rho2
    return -0.5 * np.log1p(tr) + z * z * tr / (2.0 * (1.0 + tr))


def log_mixture_one_sided(z: ArrayLike, t: ArrayLike, rho2: float) -> np.ndarray:
    """log M_t of the half-normal mixture over positive drifts (evidence that the effect is > 0)."""
    z = np.asarray(z, dtype=float)
    tr = np.asarray(t, dtype=float) * rho2
    return (
        np.log(2.0)
        - 0.5 * np.log1p(tr)
        + z * z * tr / (2.0 * (1.0 + tr))
        + special.log_ndtr(z * np.sqrt(tr / (1.0 + tr)))
    )


def always_valid_p(z: ArrayLike, t: ArrayLike, alpha: float, tuning_n: float) -> tuple[Any, Any, Any]:
    """(two-sided, greater, less) always-valid p-values for z = (estimate - null) / se at t units.

    `greater` is small when the effect is > null, `less` when it is < null.
    """
    r2 = rho_squared(alpha, tuning_n)
    # Infinite z (zero SE) would give inf - inf in log space; a huge finite z gives the limit.
    z = np.clip(np.asarray(z, dtype=float), -1e6, 1e6)
    two = np.minimum(1.0, np.exp(-log_mixture_two_sided(z, t, r2)))
    greater = np.minimum(1.0, np.exp(-log_mixture_one_sided(z, t, r2)))
    less = np.minimum(1.0, np.exp(-log_mixture_one_sided(-z, t, r2)))
    return _scalar(two), _scalar(greater), _scalar(less)


def one_sided_boundary(t: float, alpha: float, tuning_n: float) -> float:
    """The z at which the one-sided (half-normal mixture) always-valid p-value reaches `alpha`.

    `estimate -/+ boundary * se` are the lower / upper confidence-sequence bounds dual to the
    one-sided tests: a rule fails at level alpha exactly when its bound excludes the null, so the
    reported interval matches the decision's sidedness (each end has error alpha)."""
    if not t > 0:
        return math.inf
    r2 = rho_squared(alpha, tuning_n)
    target = -math.log(alpha)

    def f(z: float) -> float:
        return float(log_mixture_one_sided(z, t, r2)) - target

    hi = 4.0
    while f(hi) < 0 and hi < 1e6:
        hi *= 2.0
    return float(optimize.brentq(f, -10.0, hi, xtol=1e-7))


def one_sided_halfwidth(se: float, t: float, alpha: float, tuning_n: float) -> float:
    """Half-width of the interval whose ends are the one-sided always-valid bounds at `alpha` each."""
    if not (math.isfinite(se) and t > 0):
        return math.nan
    return se * one_sided_boundary(t, alpha, tuning_n)


def effective_n(n_candidate: ArrayLike, n_baseline: ArrayLike) -> Any:
    """The time index of a two-arm comparison: 4 n_c n_b / (n_c + n_b), the total for equal arms.

    The information of a difference grows like 1 / (1/n_c + 1/n_b); indexing the mixture by it
    (rather than n_c + n_b) keeps the confidence sequence tuned where the smaller arm reaches its
    minimum sample (a 90/10 split has 0.36x the information of 50/50 at the same total)."""
    nc = np.asarray(n_candidate, dtype=float)
    nb = np.asarray(n_baseline, dtype=float)
    tot = nc + nb
    return _scalar(np.where(tot > 0, 4.0 * nc * nb / np.where(tot > 0, tot, 1.0), 0.0))


def fixed_horizon_p(z: ArrayLike) -> tuple[Any, Any, Any]:
    """(two-sided, greater, less) p-values of a plain z-test: valid only at a horizon fixed in advance."""
    z = np.asarray(z, dtype=float)
    return _scalar(2.0 * stats.norm.sf(np.abs(z))), _scalar(stats.norm.sf(z)), _scalar(stats.norm.cdf(z))


def running_min(previous: float | None, current: float) -> float:
    """Always-valid p-values may be carried forward as a running minimum over looks."""
    return current if previous is None else min(previous, current)


def default_tuning_n(min_samples_per_arm: float, arms: int = 2) -> float:
    """Tune the CS to be tightest a little after the minimum sample size is reached."""
    return max(50.0, 2.0 * float(min_samples_per_arm) * arms)


def _scalar(x: np.ndarray) -> Any:
    return float(x) if np.ndim(x) == 0 else x
