"""Per-utterance WER/CER, ratio-of-sums summaries and the paired delta-method SE."""

from __future__ import annotations

import math

import pytest

from stt_operator.evaluator.scoring import Observation, paired_delta, score_utterance, summarise


def test_word_and_char_errors_after_normalisation() -> None:
    s = score_utterance("Set a timer for 10 minutes.", "set a timer for ten minute")
    assert (s.word_errors, s.ref_words) == (1, 6)  # "minutes" -> "minute"; "10" == "ten"
    assert s.char_errors == 1
    assert s.ref_chars == len("set a timer for ten minutes")
    assert s.reference == "set a timer for ten minutes"


def test_empty_hypothesis_is_all_deletions_and_empty_reference_all_insertions() -> None:
    assert score_utterance("turn on the lights", "").word_errors == 4
    s = score_utterance("", "hello there")
    assert (s.word_errors, s.ref_words, s.char_errors) == (2, 0, len("hello there"))


def test_error_counts_equal_jiwer_substitutions_deletions_insertions() -> None:
    """The evaluator counts with rapidfuzz directly; jiwer (same engine, full alignment) is the
    reference for what S + D + I must be."""
    import random

    import jiwer

    words = [
        "turn",
        "on",
        "off",
        "the",
        "kitchen",
        "lights",
        "please",
        "set",
        "a",
        "timer",
        "for",
        "five",
        "minutes",
        "open",
        "door",
    ]
    rng = random.Random(7)
    for _ in range(500):
        ref = " ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))
        hyp = " ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))
        s = score_utterance(ref, hyp)
        w, c = jiwer.process_words(ref, hyp), jiwer.process_characters(ref, hyp)
        assert s.word_errors == w.substitutions + w.deletions + w.insertions, (ref, hyp)
        assert s.char_errors == c.substitutions + c.deletions + c.insertions, (ref, hyp)


def test_insertions_count() -> None:
    s = score_utterance("volume up", "volume up up please")
    assert s.word_errors == 2


def obs(uid: str, variant: str, e: int, n: int, lat: float = 0.1, conf: float | None = 0.5) -> Observation:
    return Observation(
        uid,
        variant,
        score_utterance(" ".join(["a"] * n), " ".join(["b"] * e + ["a"] * (n - e))),
        lat,
        1.0,
        conf,
    )


def test_summary_is_a_ratio_of_sums() -> None:
    sums = summarise([obs("1", "A", 1, 2, 0.1), obs("2", "A", 0, 8, 0.3, None)])
    a = sums["A"].as_dict()
    assert a["wer"] == pytest.approx(1 / 10)  # not the mean of 0.5 and 0.0
    assert a["utterances"] == 2
    assert a["rtf"] == pytest.approx(0.4 / 2.0)
    assert a["confidence_mean"] == pytest.approx(0.5)
    assert a["latency_p50_s"] == pytest.approx(0.2)


def test_paired_delta_and_its_delta_method_se() -> None:
    base = [obs("1", "A", 0, 4), obs("2", "A", 1, 4), obs("3", "A", 0, 2)]
    cand = [obs("1", "B", 1, 4), obs("2", "B", 2, 4), obs("3", "B", 0, 2), obs("4", "B", 3, 3)]
    p = paired_delta(cand, base, "B", "A")
    assert p.pairs == 3  # utterance 4 has no baseline: not paired
    d, n = [1, 1, 0], [4, 4, 2]
    dw = sum(d) / sum(n)
    assert p.delta_wer == pytest.approx(dw)
    resid = [di - dw * ni for di, ni in zip(d, n, strict=True)]
    assert p.se == pytest.approx(math.sqrt(3 / 2 * sum(r * r for r in resid)) / sum(n))
    assert paired_delta([], base, "B", "A").delta_wer is None


def test_paired_delta_reports_a_bootstrap_interval_and_the_classic_checks() -> None:
    import numpy as np

    from stt_operator.stats.bootstrap import bootstrap_paired_difference
    from stt_operator.stats.classic import mapsswe, wilcoxon

    rng = np.random.default_rng(3)
    n = rng.integers(3, 12, size=40)
    base_e = rng.binomial(n, 0.1)
    cand_e = np.minimum(n, base_e + rng.binomial(n, 0.15))  # the candidate is clearly worse
    base = [obs(str(i), "A", int(e), int(k)) for i, (e, k) in enumerate(zip(base_e, n, strict=True))]
    cand = [obs(str(i), "B", int(e), int(k)) for i, (e, k) in enumerate(zip(cand_e, n, strict=True))]
    p = paired_delta(cand, base, "B", "A")
    boot = bootstrap_paired_difference(cand_e, base_e, n, resamples=2000)
    assert (p.ci_low, p.ci_high) == pytest.approx((boot.ci_low, boot.ci_high))
    assert p.ci_low is not None and p.ci_high is not None
    assert 0 < p.ci_low < p.delta_wer < p.ci_high  # worse, and the interval says so
    assert p.prob_improvement == pytest.approx(0.0, abs=0.01)
    assert p.mapsswe_p == pytest.approx(mapsswe(cand_e, base_e).p_value) and p.mapsswe_p < 0.01
    assert p.wilcoxon_p == pytest.approx(wilcoxon(cand_e, base_e).p_value) and p.wilcoxon_p < 0.01
    assert p.sign_p is not None and p.sign_p < 0.01
    # Too few shared utterances for an interval: the delta-method figures only.
    few = paired_delta(cand[:5], base[:5], "B", "A")
    assert few.se is not None and (few.ci_low, few.mapsswe_p) == (None, None)


def test_wer_by_slice_and_bounded_latency_memory() -> None:
    from dataclasses import replace

    from stt_operator.evaluator.scoring import MAX_LATENCIES, VariantSummary

    s = VariantSummary("A")
    s.add(replace(obs("1", "A", 1, 4), slice="noisy"))
    s.add(replace(obs("2", "A", 0, 4), slice="clean"))
    s.add(replace(obs("3", "A", 1, 4), slice="noisy"))
    assert s.as_dict()["wer_by_slice"] == {"clean": 0.0, "noisy": 0.25}
    assert s.latencies_s.maxlen == MAX_LATENCIES
