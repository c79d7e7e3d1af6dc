"""Per-utterance scores and their local aggregation (pure).

WER / CER are edit distances (substitutions + deletions + insertions) over words and characters
after the versioned text normaliser (`stt_operator.speech.normalise`) is applied to both
reference and hypothesis. They are computed with rapidfuzz's Levenshtein distance, the engine
jiwer aligns with: the counts equal jiwer's S + D + I (a unit test checks it on random text)
without building jiwer's alignment objects, which cost ~20x more per utterance and were a
third of the evaluator's own CPU time. References repeat every round, so normalised text is
cached. Aggregates are
ratios of sums (docs/statistics.md), the same quantities the exported counters carry, so the
evaluator's own summary and what PromQL computes can be compared exactly.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from rapidfuzz.distance import Levenshtein

from stt_operator.speech.normalise import DEFAULT_VERSION, normalise_text
from stt_operator.stats.bootstrap import bootstrap_paired_difference
from stt_operator.stats.classic import mapsswe, sign_test_arrays, wilcoxon

MAX_LATENCIES = 100_000


@dataclass(frozen=True)
class UtteranceScore:
    word_errors: int  # substitutions + deletions + insertions
    ref_words: int
    char_errors: int
    ref_chars: int
    reference: str  # normalised
    hypothesis: str  # normalised


@lru_cache(maxsize=65536)
def _normalised(text: str, version: str) -> str:
    return normalise_text(text, version)


def score_utterance(
    reference: str, hypothesis: str, normaliser_version: str = DEFAULT_VERSION
) -> UtteranceScore:
    ref = _normalised(reference, normaliser_version)
    hyp = _normalised(hypothesis, normaliser_version)
    ref_words, ref_chars = len(ref.split()), len(ref)
    if not ref:
        # Nothing to say: every hypothesised word or character is an insertion.
        return UtteranceScore(len(hyp.split()), 0, len(hyp), 0, ref, hyp)
    if not hyp:
        return UtteranceScore(ref_words, ref_words, ref_chars, ref_chars, ref, hyp)
    word_errors = Levenshtein.distance(ref.split(), hyp.split())
    char_errors = Levenshtein.distance(ref, hyp)
    return UtteranceScore(word_errors, ref_words, char_errors, ref_chars, ref, hyp)


@dataclass(frozen=True)
class Observation:
    """One scored transcription of one utterance by one variant."""

    utterance_id: str
    variant: str
    score: UtteranceScore
    latency_s: float
    audio_s: float
    confidence: float | None = None
    slice: str = ""  # evaluation-set slice (clean / noisy ...)
    speaker: str = ""
    # This utterance's share of its request's time (a batch's latency split by audio duration);
    # None = the whole latency (it travelled alone).
    processing_s: float | None = None

    @property
    def processing_seconds(self) -> float:
        return self.latency_s if self.processing_s is None else self.processing_s


@dataclass
class VariantSummary:
    """Ratio-of-sums summary of one variant (what the exported counters also hold)."""

    variant: str
    requests: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    utterances: int = 0
    word_errors: int = 0
    ref_words: int = 0
    char_errors: int = 0
    ref_chars: int = 0
    latency_sum_s: float = 0.0
    processing_sum_s: float = 0.0
    audio_sum_s: float = 0.0
    confidence_sum: float = 0.0
    confidence_count: int = 0
    # Recent latencies for the local percentiles; bounded, as the in-cluster evaluator never stops.
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_LATENCIES))
    # slice -> [word errors, reference words]
    slices: dict[str, list[int]] = field(default_factory=dict)

    def add(self, obs: Observation) -> None:
        self.utterances += 1
        self.word_errors += obs.score.word_errors
        self.ref_words += obs.score.ref_words
        self.char_errors += obs.score.char_errors
        self.ref_chars += obs.score.ref_chars
        self.latency_sum_s += obs.latency_s
        self.processing_sum_s += obs.processing_seconds
        self.audio_sum_s += obs.audio_s
        self.latencies_s.append(obs.latency_s)
        if obs.slice:
            acc = self.slices.setdefault(obs.slice, [0, 0])
            acc[0] += obs.score.word_errors
            acc[1] += obs.score.ref_words
        if obs.confidence is not None:
            self.confidence_sum += obs.confidence
            self.confidence_count += 1

    def as_dict(self) -> dict[str, object]:
        lat = np.asarray(self.latencies_s) if self.latencies_s else None
        return {
            "variant": self.variant,
            "requests": self.requests,
            "failures": dict(self.failures),
            "utterances": self.utterances,
            "word_errors": self.word_errors,
            "ref_words": self.ref_words,
            "char_errors": self.char_errors,
            "ref_chars": self.ref_chars,
            "wer": self.word_errors / self.ref_words if self.ref_words else None,
            "cer": self.char_errors / self.ref_chars if self.ref_chars else None,
            "latency_mean_s": self.latency_sum_s / self.utterances if self.utterances else None,
            "latency_p50_s": float(np.percentile(lat, 50)) if lat is not None else None,
            "latency_p95_s": float(np.percentile(lat, 95)) if lat is not None else None,
            "latency_max_s": float(lat.max()) if lat is not None else None,
            "rtf": self.processing_sum_s / self.audio_sum_s if self.audio_sum_s else None,
            "confidence_mean": self.confidence_sum / self.confidence_count if self.confidence_count else None,
            "wer_by_slice": {k: (e / n if n else None) for k, (e, n) in sorted(self.slices.items())},
        }


@dataclass(frozen=True)
class PairDelta:
    """Paired word-error comparison of a candidate against the baseline on shared utterances."""

    candidate: str
    baseline: str
    pairs: int
    delta_wer: float | None  # Σd / Σn
    se: float | None  # delta-method standard error (docs/statistics.md)
    # Reported beside it (from MIN_PAIRS_FOR_CHECKS shared utterances): the utterance bootstrap's
    # 95 % percentile interval of ΔW and its share of resamples where the candidate made fewer
    # errors (Bisani & Ney), and the ASR field's classic paired checks' two-sided p-values.
    ci_low: float | None = None
    ci_high: float | None = None
    prob_improvement: float | None = None
    mapsswe_p: float | None = None
    sign_p: float | None = None
    wilcoxon_p: float | None = None


def paired_delta(
    candidate: Sequence[Observation], baseline: Sequence[Observation], candidate_name: str, baseline_name: str
) -> PairDelta:
    """ΔW and its delta-method SE over utterances both variants transcribed."""
    base = {o.utterance_id: o for o in baseline}
    d, n = [], []
    for o in candidate:
        b = base.get(o.utterance_id)
        if b is not None:
            d.append(o.score.word_errors - b.score.word_errors)
            n.append(o.score.ref_words)
    total_n = sum(n)
    if not d or total_n == 0:
        return PairDelta(candidate_name, baseline_name, len(d), None, None)
    dw = sum(d) / total_n
    k = len(d)
    if k < 2:
        return PairDelta(candidate_name, baseline_name, k, dw, None)
    resid = np.asarray(d, dtype=float) - dw * np.asarray(n, dtype=float)
    se = float(np.sqrt(k / (k - 1) * float(np.sum(resid**2))) / total_n)
    delta = PairDelta(candidate_name, baseline_name, k, dw, se)
    if k < MIN_PAIRS_FOR_CHECKS:
        return delta
    cand = np.asarray([o.score.word_errors for o in candidate if o.utterance_id in base], dtype=float)
    baseline_errors = np.asarray(
        [base[o.utterance_id].score.word_errors for o in candidate if o.utterance_id in base], dtype=float
    )
    lengths = np.asarray(n, dtype=float)
    boot = bootstrap_paired_difference(cand, baseline_errors, lengths, resamples=BOOTSTRAP_RESAMPLES)
    return replace(
        delta,
        ci_low=_finite(boot.ci_low),
        ci_high=_finite(boot.ci_high),
        prob_improvement=_finite(boot.prob_improvement),
        mapsswe_p=mapsswe(cand, baseline_errors).p_value,
        sign_p=sign_test_arrays(cand, baseline_errors).p_value,
        wilcoxon_p=wilcoxon(cand, baseline_errors).p_value,
    )


MIN_PAIRS_FOR_CHECKS = 10
BOOTSTRAP_RESAMPLES = 2000


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summarise(observations: Iterable[Observation]) -> dict[str, VariantSummary]:
    out: dict[str, VariantSummary] = {}
    for obs in observations:
        out.setdefault(obs.variant, VariantSummary(obs.variant)).add(obs)
    return out
