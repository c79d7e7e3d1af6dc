"""The ASR field's classic paired significance tests (secondary evidence, fixed horizon).

- MAPSSWE (NIST sctk "matched pairs sentence-segment word error"): a normal test on the mean
  per-segment difference in error counts. With one utterance per segment it is a paired z-test.
- Sign test on which system made fewer errors per utterance (ties dropped).
- Wilcoxon signed-rank test on per-utterance error differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stt_operator.stats.deferred import stats


@dataclass(frozen=True)
class PairedTest:
    method: str
    statistic: float
    p_value: float  # two-sided
    n: int  # pairs used (non-ties for sign / Wilcoxon)
    mean_difference: float  # candidate - baseline errors per segment


def _diffs(candidate_errors: np.ndarray, baseline_errors: np.ndarray) -> np.ndarray:
    c = np.asarray(candidate_errors, dtype=float)
    b = np.asarray(baseline_errors, dtype=float)
    if c.shape != b.shape or c.ndim != 1:
        raise ValueError(f"paired error arrays must be 1-D of equal length, got {c.shape} and {b.shape}")
    return c - b


def mapsswe(candidate_errors: np.ndarray, baseline_errors: np.ndarray) -> PairedTest:
    d = _diffs(candidate_errors, baseline_errors)
    n = d.size
    if n < 2:
        return PairedTest("mapsswe", math.nan, 1.0, n, math.nan)
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0:
        return PairedTest(
            "mapsswe", 0.0 if mean == 0 else math.copysign(math.inf, mean), 1.0 if mean == 0 else 0.0, n, mean
        )
    w = mean / (sd / math.sqrt(n))
    return PairedTest("mapsswe", w, float(2 * stats.norm.sf(abs(w))), n, mean)


def sign_test(n_worse: float, n_better: float) -> PairedTest:
    """From counts of utterances where the candidate made more (`n_worse`) / fewer errors."""
    if n_worse < 0 or n_better < 0:
        raise ValueError("sign test counts must be >= 0")
    # Counts from Prometheus increase() may be non-integer.
    k, n = round(n_worse), round(n_worse + n_better)
    if n == 0:
        return PairedTest("sign", math.nan, 1.0, 0, math.nan)
    res = stats.binomtest(k, n, 0.5)
    return PairedTest("sign", float(k), float(res.pvalue), n, (k - (n - k)) / n)


def sign_test_arrays(candidate_errors: np.ndarray, baseline_errors: np.ndarray) -> PairedTest:
    d = _diffs(candidate_errors, baseline_errors)
    return sign_test(int((d > 0).sum()), int((d < 0).sum()))


def wilcoxon(candidate_errors: np.ndarray, baseline_errors: np.ndarray) -> PairedTest:
    d = _diffs(candidate_errors, baseline_errors)
    nz = int((d != 0).sum())
    if nz == 0:
        return PairedTest("wilcoxon", math.nan, 1.0, 0, 0.0)
    res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return PairedTest("wilcoxon", float(res.statistic), float(res.pvalue), nz, float(d.mean()))
