"""The evaluator's Prometheus metrics: names, labels, help texts and a builder.

The evaluator (which exports them) and the analysis engine (which queries them) both import
this module, so a name lives in exactly one place.

Ratio metrics (WER, CER, RTF) are exported as *sufficient statistics* so the delta-method
variance is computable from PromQL over cumulative counters (docs/statistics.md):
per variant Σe, Σn, Σe², Σn², Σe·n; per (candidate, baseline) pair of variants that saw the
same utterance Σd, Σd², Σd·n and the pair count. Prometheus counters must never decrease, and a
paired difference d = e(candidate) - e(baseline) can be negative, so the signed sums are
exported as two monotone halves: Σd = Σe_cand - Σe_base and Σd·n = Σe_cand·n - Σe_base·n.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

PREFIX = "stt_eval"

# --- label names -------------------------------------------------------------------------
LABEL_ENDPOINT = "endpoint"  # the ModelDeployment (endpoint) name
LABEL_VARIANT = "variant"  # ABTest variant name, or revision role (stable / canary / preview)
LABEL_MODEL = "model"  # the STTModel name serving this variant
LABEL_LANGUAGE = "language"  # BCP-47 tag of the evaluation set, e.g. en-US
LABEL_UNIT = "unit"  # "word" (WER) or "char" (CER)
LABEL_BASELINE = "baseline"  # paired metrics: the variant the candidate is compared with
LABEL_REASON = "reason"  # failures: timeout | http | empty | decode | other
LABEL_SLICE = "slice"  # sliced series: the slice dimension (one of SLICE_KEYS)
LABEL_SLICE_VALUE = "slice_value"  # sliced series: the utterance's value of that dimension

# Slice dimensions the evaluator exports per value (docs/statistics.md, "Per-slice guardrails"):
# noise = the evaluation set's `slice` field (clean / noisy), speaker = its `speaker` field,
# language = its `language` field, languagePair = its optional `language_pair` field (en>es).
SLICE_NOISE = "noise"
SLICE_SPEAKER = "speaker"
SLICE_LANGUAGE = "language"
SLICE_LANGUAGE_PAIR = "languagePair"
SLICE_KEYS = (SLICE_NOISE, SLICE_SPEAKER, SLICE_LANGUAGE, SLICE_LANGUAGE_PAIR)
SLICE_PREFIX = f"{PREFIX}_slice"

UNIT_WORD = "word"
UNIT_CHAR = "char"
UNITS = (UNIT_WORD, UNIT_CHAR)

FAILURE_REASONS = ("timeout", "http", "empty", "decode", "other")

# Labels every per-variant series carries.
VARIANT_LABELS: tuple[str, ...] = (LABEL_ENDPOINT, LABEL_VARIANT, LABEL_MODEL, LABEL_LANGUAGE)
# Labels of per-pair series (candidate = LABEL_VARIANT).
PAIR_LABELS: tuple[str, ...] = (LABEL_ENDPOINT, LABEL_VARIANT, LABEL_BASELINE, LABEL_LANGUAGE)

# --- exposed metric names (as they appear in Prometheus, with _total for counters) ------
# Requests and utterances.
REQUESTS = f"{PREFIX}_requests_total"
FAILURES = f"{PREFIX}_request_failures_total"
UTTERANCES = f"{PREFIX}_utterances_total"

# Error-rate sufficient statistics per variant, labelled by unit (word / char).
ERRORS = f"{PREFIX}_errors_total"  # Σe  (substitutions + deletions + insertions)
REF_LEN = f"{PREFIX}_reference_length_total"  # Σn  (reference words / chars)
ERRORS_SQ = f"{PREFIX}_errors_squared_total"  # Σe²
REF_LEN_SQ = f"{PREFIX}_reference_length_squared_total"  # Σn²
ERRORS_X_REF = f"{PREFIX}_errors_x_reference_length_total"  # Σe·n

# Paired sufficient statistics per (candidate variant, baseline variant), labelled by unit.
PAIRS = f"{PREFIX}_pairs_total"  # number of utterances both variants transcribed
PAIR_REF_LEN = f"{PREFIX}_pair_reference_length_total"  # Σn over pairs
PAIR_REF_LEN_SQ = f"{PREFIX}_pair_reference_length_squared_total"  # Σn² over pairs
PAIR_CAND_ERRORS = f"{PREFIX}_pair_candidate_errors_total"  # Σe_cand
PAIR_BASE_ERRORS = f"{PREFIX}_pair_baseline_errors_total"  # Σe_base  (Σd = cand - base)
PAIR_DIFF_SQ = f"{PREFIX}_pair_error_difference_squared_total"  # Σd²
# Σe_cand², Σe_base² (with Σd² they give Σe_cand·e_base): any contrast e_cand - k·e_base, e.g. a
# relative-increase test, keeps an exact delta-method variance.
PAIR_CAND_ERRORS_SQ = f"{PREFIX}_pair_candidate_errors_squared_total"
PAIR_BASE_ERRORS_SQ = f"{PREFIX}_pair_baseline_errors_squared_total"
PAIR_CAND_ERRORS_X_REF = f"{PREFIX}_pair_candidate_errors_x_reference_length_total"  # Σe_cand·n
PAIR_BASE_ERRORS_X_REF = f"{PREFIX}_pair_baseline_errors_x_reference_length_total"  # Σe_base·n
PAIR_WORSE = f"{PREFIX}_pair_candidate_worse_total"  # pairs with d > 0 (sign test)
PAIR_BETTER = f"{PREFIX}_pair_candidate_better_total"  # pairs with d < 0 (sign test)

# Confidence (mean of per-utterance confidence in [0, 1]).
CONFIDENCE = f"{PREFIX}_confidence_total"  # Σc
CONFIDENCE_SQ = f"{PREFIX}_confidence_squared_total"  # Σc²
CONFIDENCE_COUNT = f"{PREFIX}_confidence_observations_total"  # utterances with a confidence

# Real-time factor as a ratio of sums: Σ processing seconds / Σ audio seconds.
PROCESSING_SECONDS = f"{PREFIX}_processing_seconds_total"  # Σp
AUDIO_SECONDS = f"{PREFIX}_audio_seconds_total"  # Σa
PROCESSING_SECONDS_SQ = f"{PREFIX}_processing_seconds_squared_total"  # Σp²
AUDIO_SECONDS_SQ = f"{PREFIX}_audio_seconds_squared_total"  # Σa²
PROCESSING_X_AUDIO = f"{PREFIX}_processing_x_audio_seconds_total"  # Σp·a

# End-to-end request latency seen by the evaluator (histogram: _bucket, _sum, _count).
LATENCY = f"{PREFIX}_request_duration_seconds"
LATENCY_BUCKETS: tuple[float, ...] = (
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    30.0,
)

HELP: dict[str, str] = {
    REQUESTS: "Transcription requests the evaluator sent to a variant.",
    FAILURES: "Transcription requests that failed, by reason.",
    UTTERANCES: "Utterances transcribed and scored against their reference.",
    ERRORS: "Sum of edit errors (S+D+I) over utterances, by unit (word or char).",
    REF_LEN: "Sum of reference lengths over utterances, by unit (word or char).",
    ERRORS_SQ: "Sum of squared per-utterance error counts (delta-method variance).",
    REF_LEN_SQ: "Sum of squared per-utterance reference lengths (delta-method variance).",
    ERRORS_X_REF: "Sum of per-utterance errors times reference length (delta-method variance).",
    PAIRS: "Utterances transcribed by both the candidate and its baseline variant.",
    PAIR_REF_LEN: "Sum of reference lengths over paired utterances.",
    PAIR_REF_LEN_SQ: "Sum of squared reference lengths over paired utterances.",
    PAIR_CAND_ERRORS: "Sum of candidate errors over paired utterances.",
    PAIR_BASE_ERRORS: "Sum of baseline errors over paired utterances.",
    PAIR_DIFF_SQ: "Sum of squared error differences (candidate - baseline) over paired utterances.",
    PAIR_CAND_ERRORS_SQ: "Sum of squared candidate errors over paired utterances.",
    PAIR_BASE_ERRORS_SQ: "Sum of squared baseline errors over paired utterances.",
    PAIR_CAND_ERRORS_X_REF: "Sum of candidate errors times reference length over paired utterances.",
    PAIR_BASE_ERRORS_X_REF: "Sum of baseline errors times reference length over paired utterances.",
    PAIR_WORSE: "Paired utterances where the candidate made more errors than the baseline.",
    PAIR_BETTER: "Paired utterances where the candidate made fewer errors than the baseline.",
    CONFIDENCE: "Sum of per-utterance recogniser confidence (0..1).",
    CONFIDENCE_SQ: "Sum of squared per-utterance recogniser confidence.",
    CONFIDENCE_COUNT: "Utterances that reported a recogniser confidence.",
    PROCESSING_SECONDS: "Sum of request processing seconds (real-time factor numerator).",
    AUDIO_SECONDS: "Sum of audio seconds transcribed (real-time factor denominator).",
    PROCESSING_SECONDS_SQ: "Sum of squared per-utterance processing seconds.",
    AUDIO_SECONDS_SQ: "Sum of squared per-utterance audio seconds.",
    PROCESSING_X_AUDIO: "Sum of per-utterance processing seconds times audio seconds.",
    LATENCY: "End-to-end transcription request latency seen by the evaluator.",
}


def sliced(name: str) -> str:
    """The per-slice twin of an exported name: stt_eval_X -> stt_eval_slice_X. Sliced series are
    a separate family (not an extra label on the whole-set series) so that every existing sum over
    stt_eval_* keeps counting each utterance once."""
    if not name.startswith(PREFIX + "_"):
        raise ValueError(f"{name} is not an evaluator metric")
    return SLICE_PREFIX + name[len(PREFIX) :]


def _help(name: str) -> str:
    if name.startswith(SLICE_PREFIX + "_"):
        return HELP[PREFIX + name[len(SLICE_PREFIX) :]] + " Per slice value (labels slice, slice_value)."
    return HELP[name]


def _counter(name: str, labels: tuple[str, ...], registry: CollectorRegistry) -> Counter:
    return Counter(name, _help(name), labelnames=labels, registry=registry)


class _VariantSeries:
    """The labelled children of one variant's series, looked up once (a `labels()` call costs
    microseconds, and an utterance touches about twenty series)."""

    __slots__ = (
        "audio",
        "audio_sq",
        "confidence",
        "confidence_count",
        "confidence_sq",
        "failures",
        "latency",
        "processing",
        "processing_sq",
        "processing_x_audio",
        "requests",
        "units",
        "utterances",
    )

    def __init__(self, m: EvalMetrics, lv: dict[str, str]) -> None:
        self.requests = m.requests.labels(**lv)
        self.failures = {r: m.failures.labels(**lv, reason=r) for r in FAILURE_REASONS}
        self.utterances = m.utterances.labels(**lv)
        # unit -> (Σe, Σn, Σe², Σn², Σe·n)
        self.units = {
            unit: tuple(
                c.labels(**lv, unit=unit)
                for c in (m.errors, m.ref_len, m.errors_sq, m.ref_len_sq, m.errors_x_ref)
            )
            for unit in UNITS
        }
        self.latency = m.latency.labels(**lv)
        self.processing = m.processing_seconds.labels(**lv)
        self.audio = m.audio_seconds.labels(**lv)
        self.processing_sq = m.processing_seconds_sq.labels(**lv)
        self.audio_sq = m.audio_seconds_sq.labels(**lv)
        self.processing_x_audio = m.processing_x_audio.labels(**lv)
        self.confidence = m.confidence.labels(**lv)
        self.confidence_sq = m.confidence_sq.labels(**lv)
        self.confidence_count = m.confidence_count.labels(**lv)


@dataclass(frozen=True)
class EvalMetrics:
    """The evaluator's prometheus_client metric objects, registered on one registry.

    Use `record_utterance` and `record_pair` rather than touching the counters directly: they
    keep the sufficient statistics consistent with each other.
    """

    requests: Counter
    failures: Counter
    utterances: Counter
    errors: Counter
    ref_len: Counter
    errors_sq: Counter
    ref_len_sq: Counter
    errors_x_ref: Counter
    pairs: Counter
    pair_ref_len: Counter
    pair_ref_len_sq: Counter
    pair_cand_errors: Counter
    pair_base_errors: Counter
    pair_diff_sq: Counter
    pair_cand_errors_sq: Counter
    pair_base_errors_sq: Counter
    pair_cand_errors_x_ref: Counter
    pair_base_errors_x_ref: Counter
    pair_worse: Counter
    pair_better: Counter
    confidence: Counter
    confidence_sq: Counter
    confidence_count: Counter
    processing_seconds: Counter
    audio_seconds: Counter
    processing_seconds_sq: Counter
    audio_seconds_sq: Counter
    processing_x_audio: Counter
    latency: Histogram
    # Children per label set, filled on first use (the evaluator's label sets are few and fixed).
    # Label names of this family's series (the sliced family adds slice and slice_value).
    variant_labels: tuple[str, ...] = VARIANT_LABELS
    pair_labels: tuple[str, ...] = PAIR_LABELS
    # The per-slice family (stt_eval_slice_*), when this is the whole-set family.
    sliced: EvalMetrics | None = field(default=None, repr=False)
    _variant_cache: dict[tuple[str, ...], _VariantSeries] = field(default_factory=dict, repr=False)
    _pair_cache: dict[tuple[str, ...], tuple[Any, ...]] = field(default_factory=dict, repr=False)

    def _variant(self, labels: Mapping[str, str]) -> _VariantSeries:
        key = _key(labels, self.variant_labels)
        series = self._variant_cache.get(key)
        if series is None:
            lv = dict(zip(self.variant_labels, key, strict=True))
            series = self._variant_cache[key] = _VariantSeries(self, lv)
        return series

    def _pair(self, labels: Mapping[str, str], unit: str) -> tuple[Any, ...]:
        key = (*_key(labels, self.pair_labels), unit)
        children = self._pair_cache.get(key)
        if children is None:
            lp = {**dict(zip(self.pair_labels, key[:-1], strict=True)), LABEL_UNIT: unit}
            children = self._pair_cache[key] = tuple(c.labels(**lp) for c in self._pair_counters())
        return children

    def _pair_counters(self) -> tuple[Counter, ...]:
        return (
            self.pairs,
            self.pair_ref_len,
            self.pair_ref_len_sq,
            self.pair_cand_errors,
            self.pair_base_errors,
            self.pair_diff_sq,
            self.pair_cand_errors_sq,
            self.pair_base_errors_sq,
            self.pair_cand_errors_x_ref,
            self.pair_base_errors_x_ref,
            self.pair_worse,
            self.pair_better,
        )

    def init_variant(self, labels: Mapping[str, str]) -> None:
        """Create a variant's series at zero before its first utterance, so Prometheus scrapes the
        zero and `increase()` since the analysis start counts the first increments too."""
        self._variant(labels)

    def init_pair(self, labels: Mapping[str, str]) -> None:
        """Create a (candidate, baseline) pair's series at zero (see `init_variant`)."""
        for unit in UNITS:
            self._pair(labels, unit)

    def record_request(self, labels: Mapping[str, str], failure_reason: str | None = None) -> None:
        """One transcription request to a variant (one per utterance, whether it travelled alone or
        in a batch); `failure_reason` when it failed (one of FAILURE_REASONS)."""
        series = self._variant(labels)
        if failure_reason is not None and failure_reason not in FAILURE_REASONS:
            raise ValueError(f"failure_reason {failure_reason!r} is not one of {FAILURE_REASONS}")
        series.requests.inc()
        if failure_reason is not None:
            series.failures[failure_reason].inc()

    def record_utterance(
        self,
        labels: Mapping[str, str],
        *,
        word_errors: int,
        ref_words: int,
        char_errors: int,
        ref_chars: int,
        latency_seconds: float,
        audio_seconds: float,
        confidence: float | None = None,
        processing_seconds: float | None = None,
    ) -> None:
        """One scored utterance of a variant (labels: endpoint, variant, model, language).

        `latency_seconds` is how long the utterance waited for its transcript (the latency
        histogram); `processing_seconds` its share of the request's time for the real-time
        factor — the same unless several utterances shared one request."""
        processing = latency_seconds if processing_seconds is None else processing_seconds
        _check_nonneg(word_errors=word_errors, ref_words=ref_words, char_errors=char_errors)
        _check_nonneg(ref_chars=ref_chars, latency_seconds=latency_seconds, audio_seconds=audio_seconds)
        _check_nonneg(processing_seconds=processing)
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {confidence}")
        s = self._variant(labels)
        s.utterances.inc()
        for unit, e, n in ((UNIT_WORD, word_errors, ref_words), (UNIT_CHAR, char_errors, ref_chars)):
            errors, ref_len, errors_sq, ref_len_sq, errors_x_ref = s.units[unit]
            errors.inc(e)
            ref_len.inc(n)
            errors_sq.inc(e * e)
            ref_len_sq.inc(n * n)
            errors_x_ref.inc(e * n)
        s.latency.observe(latency_seconds)
        s.processing.inc(processing)
        s.audio.inc(audio_seconds)
        s.processing_sq.inc(processing**2)
        s.audio_sq.inc(audio_seconds**2)
        s.processing_x_audio.inc(processing * audio_seconds)
        if confidence is not None:
            s.confidence.inc(confidence)
            s.confidence_sq.inc(confidence**2)
            s.confidence_count.inc()

    def record_pair(
        self,
        labels: Mapping[str, str],
        *,
        unit: str,
        candidate_errors: int,
        baseline_errors: int,
        ref_len: int,
    ) -> None:
        """One utterance scored on both the candidate (`variant` label) and `baseline` variant."""
        if unit not in UNITS:
            raise ValueError(f"unit {unit!r} is not one of {UNITS}")
        _check_nonneg(candidate_errors=candidate_errors, baseline_errors=baseline_errors, ref_len=ref_len)
        (
            pairs,
            pair_ref_len,
            pair_ref_len_sq,
            cand_errors,
            base_errors,
            diff_sq,
            cand_errors_sq,
            base_errors_sq,
            cand_errors_x_ref,
            base_errors_x_ref,
            worse,
            better,
        ) = self._pair(labels, unit)
        d = candidate_errors - baseline_errors
        pairs.inc()
        pair_ref_len.inc(ref_len)
        pair_ref_len_sq.inc(ref_len * ref_len)
        cand_errors.inc(candidate_errors)
        base_errors.inc(baseline_errors)
        diff_sq.inc(d * d)
        cand_errors_sq.inc(candidate_errors * candidate_errors)
        base_errors_sq.inc(baseline_errors * baseline_errors)
        cand_errors_x_ref.inc(candidate_errors * ref_len)
        base_errors_x_ref.inc(baseline_errors * ref_len)
        # Touch both sign counters so each series exists from the first pair on.
        worse.inc(1 if d > 0 else 0)
        better.inc(1 if d < 0 else 0)


def _key(labels: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(str(labels[n]) for n in names)
    except KeyError:
        _pick(labels, names)  # raises the error naming every missing label
        raise


def _pick(labels: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    missing = [n for n in names if n not in labels]
    if missing:
        raise ValueError(f"metric labels missing {missing}; expected {list(names)}")
    return {n: str(labels[n]) for n in names}


def _check_nonneg(**values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def build_eval_metrics(registry: CollectorRegistry, *, slices: bool = True) -> EvalMetrics:
    """Create and register every evaluator metric on `registry` (one call per registry); with
    `slices`, also the per-slice family (`sliced`), which `record_*` of the sliced family fill."""
    whole = _build(registry, lambda n: n, VARIANT_LABELS, PAIR_LABELS)
    if not slices:
        return whole
    extra = (LABEL_SLICE, LABEL_SLICE_VALUE)
    return replace(whole, sliced=_build(registry, sliced, (*VARIANT_LABELS, *extra), (*PAIR_LABELS, *extra)))


def _build(
    registry: CollectorRegistry, nm: Callable[[str], str], v: tuple[str, ...], p: tuple[str, ...]
) -> EvalMetrics:
    vu, pu = (*v, LABEL_UNIT), (*p, LABEL_UNIT)
    return EvalMetrics(
        requests=_counter(nm(REQUESTS), v, registry),
        failures=_counter(nm(FAILURES), (*v, LABEL_REASON), registry),
        utterances=_counter(nm(UTTERANCES), v, registry),
        errors=_counter(nm(ERRORS), vu, registry),
        ref_len=_counter(nm(REF_LEN), vu, registry),
        errors_sq=_counter(nm(ERRORS_SQ), vu, registry),
        ref_len_sq=_counter(nm(REF_LEN_SQ), vu, registry),
        errors_x_ref=_counter(nm(ERRORS_X_REF), vu, registry),
        pairs=_counter(nm(PAIRS), pu, registry),
        pair_ref_len=_counter(nm(PAIR_REF_LEN), pu, registry),
        pair_ref_len_sq=_counter(nm(PAIR_REF_LEN_SQ), pu, registry),
        pair_cand_errors=_counter(nm(PAIR_CAND_ERRORS), pu, registry),
        pair_base_errors=_counter(nm(PAIR_BASE_ERRORS), pu, registry),
        pair_diff_sq=_counter(nm(PAIR_DIFF_SQ), pu, registry),
        pair_cand_errors_sq=_counter(nm(PAIR_CAND_ERRORS_SQ), pu, registry),
        pair_base_errors_sq=_counter(nm(PAIR_BASE_ERRORS_SQ), pu, registry),
        pair_cand_errors_x_ref=_counter(nm(PAIR_CAND_ERRORS_X_REF), pu, registry),
        pair_base_errors_x_ref=_counter(nm(PAIR_BASE_ERRORS_X_REF), pu, registry),
        pair_worse=_counter(nm(PAIR_WORSE), pu, registry),
        pair_better=_counter(nm(PAIR_BETTER), pu, registry),
        confidence=_counter(nm(CONFIDENCE), v, registry),
        confidence_sq=_counter(nm(CONFIDENCE_SQ), v, registry),
        confidence_count=_counter(nm(CONFIDENCE_COUNT), v, registry),
        processing_seconds=_counter(nm(PROCESSING_SECONDS), v, registry),
        audio_seconds=_counter(nm(AUDIO_SECONDS), v, registry),
        processing_seconds_sq=_counter(nm(PROCESSING_SECONDS_SQ), v, registry),
        audio_seconds_sq=_counter(nm(AUDIO_SECONDS_SQ), v, registry),
        processing_x_audio=_counter(nm(PROCESSING_X_AUDIO), v, registry),
        latency=Histogram(
            nm(LATENCY), _help(nm(LATENCY)), labelnames=v, buckets=LATENCY_BUCKETS, registry=registry
        ),
        variant_labels=v,
        pair_labels=p,
    )
