"""Ratio-of-sums metrics (WER, CER, RTF) with delta-method variances.

WER = Σe / Σn over utterances (docs/statistics.md): the utterance, not the word, is the
independent unit, so the variance comes from the delta method on per-utterance (e_i, n_i):

    Var(R) = N/(N-1) * Σ(e_i - R n_i)^2 / (Σn)^2,   Σ(e - R n)^2 = Σe² - 2RΣen + R²Σn².

Everything is computed from sufficient statistics, the same sums the evaluator exports to
Prometheus (see `stt_operator.evalmetrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stt_operator.stats import sequential
from stt_operator.stats.deferred import stats
from stt_operator.stats.results import Comparison


@dataclass(frozen=True)
class RatioStats:
    """Sufficient statistics of a ratio Σx / Σy over n independent units."""

    n: float
    sum_x: float
    sum_y: float
    sum_xx: float
    sum_yy: float
    sum_xy: float

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray) -> RatioStats:
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
        return cls(
            n=float(x.size),
            sum_x=float(x.sum()),
            sum_y=float(y.sum()),
            sum_xx=float((x * x).sum()),
            sum_yy=float((y * y).sum()),
            sum_xy=float((x * y).sum()),
        )

    @property
    def ratio(self) -> float:
        return self.sum_x / self.sum_y if self.sum_y > 0 else math.nan

    def residual_ss(self, r: float) -> float:
        """Σ(x_i - r y_i)^2, clipped at 0 against rounding."""
        return max(0.0, self.sum_xx - 2.0 * r * self.sum_xy + r * r * self.sum_yy)

    @property
    def variance(self) -> float:
        if self.n < 2 or self.sum_y <= 0:
            return math.nan
        return self.n / (self.n - 1.0) * self.residual_ss(self.ratio) / (self.sum_y**2)

    @property
    def se(self) -> float:
        return math.sqrt(self.variance)

    def inconsistency(self, what: str = "") -> str | None:
        """Why these sums cannot come from real data (a stuck or reset counter), or None.

        Sums of squares bound the squared sums (Cauchy-Schwarz): Σx² >= (Σx)²/n, Σy² >= (Σy)²/n,
        (Σxy)² <= Σx² Σy². A stuck Σx² counter otherwise reads as zero variance: certainty."""
        return _inconsistency(
            what,
            self.n,
            (("Σx", self.sum_x, self.sum_xx), ("Σy", self.sum_y, self.sum_yy)),
            self.sum_xy,
            self.sum_xx,
            self.sum_yy,
        )

    def naive_binomial_se(self) -> float:
        """The wrong SE that treats each word as a Bernoulli trial (for comparison only)."""
        r = self.ratio
        return math.sqrt(r * (1 - r) / self.sum_y) if 0 <= r <= 1 and self.sum_y > 0 else math.nan


@dataclass(frozen=True)
class PairedStats:
    """Sufficient statistics of paired errors: candidate c_i and baseline b_i on the same utterance
    of reference length n_i."""

    n: float
    sum_len: float
    sum_len_sq: float
    sum_c: float
    sum_b: float
    sum_cc: float
    sum_bb: float
    sum_cb: float
    sum_cn: float
    sum_bn: float

    @classmethod
    def from_arrays(cls, cand: np.ndarray, base: np.ndarray, lengths: np.ndarray) -> PairedStats:
        c, b, n = (np.asarray(a, dtype=float) for a in (cand, base, lengths))
        if not (c.shape == b.shape == n.shape):
            raise ValueError(f"cand, base, lengths must share a shape: {c.shape}, {b.shape}, {n.shape}")
        return cls(
            n=float(c.size),
            sum_len=float(n.sum()),
            sum_len_sq=float((n * n).sum()),
            sum_c=float(c.sum()),
            sum_b=float(b.sum()),
            sum_cc=float((c * c).sum()),
            sum_bb=float((b * b).sum()),
            sum_cb=float((c * b).sum()),
            sum_cn=float((c * n).sum()),
            sum_bn=float((b * n).sum()),
        )

    @classmethod
    def from_exported(
        cls,
        *,
        pairs: float,
        sum_len: float,
        sum_len_sq: float,
        sum_cand: float,
        sum_base: float,
        sum_diff_sq: float,
        sum_cand_sq: float,
        sum_base_sq: float,
        sum_cand_len: float,
        sum_base_len: float,
    ) -> PairedStats:
        """From the evaluator's monotone counters: Σc·b = (Σc² + Σb² - Σd²) / 2."""
        return cls(
            n=pairs,
            sum_len=sum_len,
            sum_len_sq=sum_len_sq,
            sum_c=sum_cand,
            sum_b=sum_base,
            sum_cc=sum_cand_sq,
            sum_bb=sum_base_sq,
            sum_cb=(sum_cand_sq + sum_base_sq - sum_diff_sq) / 2.0,
            sum_cn=sum_cand_len,
            sum_bn=sum_base_len,
        )

    def contrast(self, k: float = 1.0) -> RatioStats:
        """Ratio statistics of Σ(c_i - k b_i) / Σn_i; k = 1 is the WER difference."""
        return RatioStats(
            n=self.n,
            sum_x=self.sum_c - k * self.sum_b,
            sum_y=self.sum_len,
            sum_xx=self.sum_cc - 2.0 * k * self.sum_cb + k * k * self.sum_bb,
            sum_yy=self.sum_len_sq,
            sum_xy=self.sum_cn - k * self.sum_bn,
        )

    @property
    def candidate(self) -> RatioStats:
        return RatioStats(self.n, self.sum_c, self.sum_len, self.sum_cc, self.sum_len_sq, self.sum_cn)

    @property
    def baseline(self) -> RatioStats:
        return RatioStats(self.n, self.sum_b, self.sum_len, self.sum_bb, self.sum_len_sq, self.sum_bn)

    @property
    def difference(self) -> float:
        """ΔW = Σd / Σn."""
        return self.contrast(1.0).ratio

    @property
    def difference_se(self) -> float:
        """sqrt(N/(N-1) Σ(d_i - ΔW n_i)^2) / Σn (docs/statistics.md)."""
        return self.contrast(1.0).se

    def inconsistency(self) -> str | None:
        """Why these paired sums cannot come from real data, or None: each arm's checks, and
        Σd² >= (Σd)²/N for the per-utterance differences d = c - b."""
        for arm, rs in (("candidate", self.candidate), ("baseline", self.baseline)):
            why = rs.inconsistency(f"paired {arm} ")
            if why:
                return why
        sum_d = self.sum_c - self.sum_b
        sum_dd = self.sum_cc - 2.0 * self.sum_cb + self.sum_bb
        return _inconsistency("paired ", self.n, (("Σd", sum_d, sum_dd),), None, None, None)


_REL_TOL = 1e-6  # counters read through increase() carry float rounding


def _inconsistency(
    prefix: str,
    n: float,
    pairs: tuple[tuple[str, float, float], ...],
    sum_xy: float | None,
    sum_xx: float | None,
    sum_yy: float | None,
) -> str | None:
    values = [n, *(v for _, s, ss in pairs for v in (s, ss))]
    if not all(math.isfinite(v) for v in values):
        return f"{prefix}sums are not finite"
    if n <= 0:
        return None
    for name, s, ss in pairs:
        floor = s * s / n
        if ss < 0 or ss < floor * (1.0 - _REL_TOL) - 1e-9:
            return (
                f"inconsistent {prefix}counters: {name}² = {ss:.6g} < ({name})²/N = {floor:.6g} "
                "(a stuck or reset sum-of-squares counter)"
            )
    cross = sum_xy is not None and sum_xx is not None and sum_yy is not None
    if cross and sum_xy * sum_xy > sum_xx * sum_yy * (1.0 + _REL_TOL) + 1e-9:  # type: ignore[operator]
        return f"inconsistent {prefix}counters: (Σxy)² > Σx² Σy² (a stuck or reset counter)"
    return None


def _compare(
    method: str,
    estimate: float,
    se: float,
    t: float,
    *,
    null: float,
    confidence: float,
    sequential_: bool,
    tuning_n: float | None,
    n_candidate: float,
    n_baseline: float,
    paired: bool,
    test_estimate: float | None = None,
    test_se: float | None = None,
) -> Comparison:
    alpha = 1.0 - confidence
    tuning = tuning_n if tuning_n is not None else sequential.default_tuning_n(t / 2.0)
    # The test may use a different linear statistic than the reported effect (relative rules):
    # its SE comes from the test statistic alone. A NaN reported SE (e.g. a relative change
    # against a baseline with no errors) leaves the interval open but must not block the test.
    te = estimate - null if test_estimate is None else test_estimate
    tse = se if test_se is None else test_se
    if not (math.isfinite(te) and math.isfinite(tse)) or t < 2:
        return Comparison(
            method,
            estimate,
            se,
            math.nan,
            math.nan,
            1.0,
            1.0,
            1.0,
            n_candidate,
            n_baseline,
            null,
            sequential_,
            paired,
            confidence,
        )
    # A zero SE (e.g. identical outputs) with a non-zero effect is overwhelming evidence;
    # counters that only look like that are caught by the consistency checks before.
    z = (0.0 if te == 0 else math.copysign(math.inf, te)) if tse == 0.0 else te / tse
    if sequential_:
        # Each end is the one-sided bound at alpha: the interval excludes the null exactly when
        # the matching one-sided rule is rejected (before Holm).
        half = sequential.one_sided_halfwidth(se, t, alpha, tuning) if math.isfinite(se) else math.nan
        p2, pg, pl = sequential.always_valid_p(z, t, alpha, tuning)
    else:
        half = float(stats.norm.ppf(1 - alpha / 2) * se)
        p2, pg, pl = sequential.fixed_horizon_p(z)
    return Comparison(
        method=method,
        estimate=estimate,
        se=se,
        ci_low=estimate - half,
        ci_high=estimate + half,
        p_value=float(p2),
        p_greater=float(pg),
        p_less=float(pl),
        n_candidate=n_candidate,
        n_baseline=n_baseline,
        null=null,
        sequential=sequential_,
        paired=paired,
        confidence=confidence,
    )


def paired_difference(
    ps: PairedStats,
    *,
    null: float = 0.0,
    confidence: float = 0.95,
    sequential_: bool = True,
    tuning_n: float | None = None,
) -> Comparison:
    """Candidate minus baseline ratio on the same units; tests H0: difference == null."""
    con = ps.contrast(1.0)
    return _compare(
        "paired-delta",
        con.ratio,
        con.se,
        ps.n,
        null=null,
        confidence=confidence,
        sequential_=sequential_,
        tuning_n=tuning_n,
        n_candidate=ps.n,
        n_baseline=ps.n,
        paired=True,
    )


def paired_relative(
    ps: PairedStats,
    *,
    max_increase: float = 0.0,
    confidence: float = 0.95,
    sequential_: bool = True,
    tuning_n: float | None = None,
) -> Comparison:
    """Relative change R_c / R_b - 1; tests H0: R_c = (1 + max_increase) R_b exactly through the
    contrast Σ(c - (1+r) b) / Σn, which has an exact delta-method variance."""
    k = 1.0 + max_increase
    con = ps.contrast(k)
    rel = ps.sum_c / ps.sum_b - 1.0 if ps.sum_b > 0 else math.nan
    # SE of the relative change by the delta method on Σc/Σb (same units).
    rs = RatioStats(ps.n, ps.sum_c, ps.sum_b, ps.sum_cc, ps.sum_bb, ps.sum_cb)
    return _compare(
        "paired-relative",
        rel,
        rs.se,
        ps.n,
        null=max_increase,
        confidence=confidence,
        sequential_=sequential_,
        tuning_n=tuning_n,
        n_candidate=ps.n,
        n_baseline=ps.n,
        paired=True,
        test_estimate=con.ratio,
        test_se=con.se,
    )


def unpaired_difference(
    candidate: RatioStats,
    baseline: RatioStats,
    *,
    null: float = 0.0,
    confidence: float = 0.95,
    sequential_: bool = True,
    tuning_n: float | None = None,
) -> Comparison:
    """Independent arms (split traffic): Δ = R_c - R_b, Var = Var_c + Var_b."""
    est = candidate.ratio - baseline.ratio
    se = math.sqrt(candidate.variance + baseline.variance)
    t = float(sequential.effective_n(candidate.n, baseline.n))
    return _compare(
        "unpaired-delta",
        est,
        se,
        t,
        null=null,
        confidence=confidence,
        sequential_=sequential_,
        tuning_n=tuning_n,
        n_candidate=candidate.n,
        n_baseline=baseline.n,
        paired=False,
    )


def unpaired_relative(
    candidate: RatioStats,
    baseline: RatioStats,
    *,
    max_increase: float = 0.0,
    confidence: float = 0.95,
    sequential_: bool = True,
    tuning_n: float | None = None,
) -> Comparison:
    """Relative change R_c / R_b - 1; the test uses D = R_c - (1+r) R_b with
    Var = Var_c + (1+r)^2 Var_b, the CI the delta method on log(R_c / R_b)."""
    k = 1.0 + max_increase
    rc, rb = candidate.ratio, baseline.ratio
    rel = rc / rb - 1.0 if rb > 0 else math.nan
    d = rc - k * rb
    d_se = math.sqrt(candidate.variance + k * k * baseline.variance)
    rel_se = math.nan
    if rc > 0 and rb > 0:
        rel_se = (rc / rb) * math.sqrt(candidate.variance / rc**2 + baseline.variance / rb**2)
    t = float(sequential.effective_n(candidate.n, baseline.n))
    return _compare(
        "unpaired-relative",
        rel,
        rel_se,
        t,
        null=max_increase,
        confidence=confidence,
        sequential_=sequential_,
        tuning_n=tuning_n,
        n_candidate=candidate.n,
        n_baseline=baseline.n,
        paired=False,
        test_estimate=d,
        test_se=d_se,
    )


def one_sample(
    estimate: float,
    se: float,
    n: float,
    *,
    null: float,
    confidence: float = 0.95,
    sequential_: bool = True,
    tuning_n: float | None = None,
    method: str = "one-sample",
) -> Comparison:
    """A single arm's estimate against a fixed bound (absolute thresholds)."""
    return _compare(
        method,
        estimate,
        se,
        n,
        null=null,
        confidence=confidence,
        sequential_=sequential_,
        tuning_n=tuning_n if tuning_n is not None else sequential.default_tuning_n(n, 1),
        n_candidate=n,
        n_baseline=0.0,
        paired=False,
    )
