"""Synthetic evaluator traffic for tests and benchmarks that drive Prometheus directly.

The real evaluator (stt_operator.evaluator) scores real transcripts; these helpers record
made-up scores through the same `EvalMetrics` so the series, labels and sufficient
statistics are exactly the evaluator's.
"""

from __future__ import annotations

from collections.abc import Mapping

from stt_operator.evalmetrics import EvalMetrics

CHARS_PER_WORD = 5  # synthetic character counts: 5 per word, 2 character errors per word error
CHAR_ERRORS_PER_WORD_ERROR = 2


def record_paired_utterance(
    metrics: EvalMetrics,
    baseline: Mapping[str, str],
    candidate: Mapping[str, str],
    *,
    words: int,
    baseline_errors: int,
    candidate_errors: int,
    latency_s: tuple[float, float] = (0.2, 0.2),
    confidence: tuple[float, float] = (0.9, 0.9),
    pair_labels: Mapping[str, str] | None = None,
) -> None:
    """One utterance scored for both arms, and the pair (word and char units).

    Requests are left to the caller: tests of sample-ratio mismatch count them unevenly."""
    arms = ((baseline, baseline_errors, latency_s[0], confidence[0]),)
    arms += ((candidate, candidate_errors, latency_s[1], confidence[1]),)
    for labels, errors, latency, conf in arms:
        metrics.record_utterance(
            labels,
            word_errors=errors,
            ref_words=words,
            char_errors=CHAR_ERRORS_PER_WORD_ERROR * errors,
            ref_chars=CHARS_PER_WORD * words,
            latency_seconds=latency,
            audio_seconds=words * 0.4,
            confidence=conf,
        )
    pair = pair_labels or candidate
    metrics.record_pair(
        pair, unit="word", candidate_errors=candidate_errors, baseline_errors=baseline_errors, ref_len=words
    )
    metrics.record_pair(
        pair,
        unit="char",
        candidate_errors=CHAR_ERRORS_PER_WORD_ERROR * candidate_errors,
        baseline_errors=CHAR_ERRORS_PER_WORD_ERROR * baseline_errors,
        ref_len=CHARS_PER_WORD * words,
    )
