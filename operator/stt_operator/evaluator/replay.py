"""Replay an evaluation set against every target variant, paired, at a bounded rate.

Each utterance goes to every variant (paired design: docs/statistics.md). Requests are sent
at most `rate` utterances per second with at most `concurrency` requests in flight. A failed
request is counted (requests + failures{reason}) and retried with capped exponential backoff
and jitter, so a Triton outage slows the evaluator down instead of losing utterances; only
after `max_retries` does the variant skip that utterance (and it is then not paired).

With `batch_size` > 1, up to that many consecutive utterances travel in one request per
variant (zero-padded [batch, samples] audio plus each row's length), for models that declare
an audio-length input, return a transcript and batch in Triton (`max_batch_size`); others get
one request per utterance as before. Batching divides the evaluator's per-request cost (the
gRPC call and its wake-up, ~1 ms of CPU) by the batch size. Counting stays per utterance: every
utterance is one transcription request in `requests` / `failures`; its latency observation is
the time its transcript took (its request's latency), and its real-time-factor share is the
request's time split over the batch by audio duration.

The engine takes any async `Transcriber`; `TritonTranscriber` is the real one (tritonclient's
asyncio gRPC client).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stt_operator import evalmetrics as em
from stt_operator.evaluator.model_io import TRANSCRIPT_OUTPUT, ModelIO, Target
from stt_operator.evaluator.scoring import Observation, VariantSummary, score_utterance
from stt_operator.speech.normalise import DEFAULT_VERSION

log = logging.getLogger("stt_operator.evaluator")

MAX_BATCH_SIZE = 256


@dataclass(frozen=True)
class ReplayConfig:
    rate: float = 0.0  # utterances per second (each goes to every variant); 0 = no limit
    concurrency: int = 4  # requests in flight, all variants together
    timeout_s: float = 30.0
    max_retries: int = 5
    batch_size: int = 1  # utterances per request, where the model can take a batch
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    seed: int = 0  # jitter

    def __post_init__(self) -> None:
        if self.rate < 0 or not math.isfinite(self.rate):
            raise ValueError(f"rate: must be a finite number >= 0 (0 = unlimited), got {self.rate}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency: must be >= 1, got {self.concurrency}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries: must be >= 0, got {self.max_retries}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size: must be between 1 and {MAX_BATCH_SIZE}, got {self.batch_size}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("backoff: need 0 < backoff_initial_s <= backoff_max_s")


class TranscriptionError(Exception):
    """A failed request, classified with one of evalmetrics.FAILURE_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in em.FAILURE_REASONS:
            raise ValueError(f"reason {reason!r} is not one of {em.FAILURE_REASONS}")
        super().__init__(message)
        self.reason = reason


Answer = tuple[str, float | None]  # (transcript, confidence)


class Transcriber(Protocol):
    def __call__(self, target: Target, audio: np.ndarray) -> Awaitable[Answer]: ...


@runtime_checkable
class BatchTranscriber(Transcriber, Protocol):
    """A transcriber that can also send several utterances in one request."""

    async def batch_limit(self, target: Target) -> int:
        """How many utterances one request to `target` may carry (1 = no batching)."""
        ...

    def transcribe_batch(self, target: Target, audios: Sequence[np.ndarray]) -> Awaitable[list[Answer]]: ...


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Capped exponential backoff with "equal jitter": in [d/2, d], d = min(max, initial·2^attempt)."""
    d = min(maximum, initial * (2**attempt))
    return d / 2 + rng.random() * d / 2


def start_offsets(n: int, rate: float) -> list[float]:
    """Seconds after the round starts at which each of `n` utterances may be sent."""
    return [0.0] * n if rate <= 0 else [i / rate for i in range(n)]


def classify_exception(exc: BaseException) -> str:
    """Failure reason for an exception raised by a tritonclient call."""
    if isinstance(exc, TranscriptionError):
        return exc.reason
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    status = str(getattr(exc, "status", lambda: "")() or "") if hasattr(exc, "status") else ""
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in str(exc):
        return "timeout"
    try:
        from tritonclient.utils import InferenceServerException
    except ImportError:  # pragma: no cover - tritonclient is a hard dependency
        return "other"
    if isinstance(exc, InferenceServerException):
        return "http"  # a transport or server error, whatever the protocol
    return "other"


@dataclass
class ReplayState:
    """What the health endpoint and the summary report about a running replay."""

    rounds_completed: int = 0
    utterances_sent: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    summaries: dict[str, VariantSummary] = field(default_factory=dict)


def utterance_slices(utt: Any) -> dict[str, str]:
    """An evaluation-set utterance's slice values: noise (its `slice` field), speaker, language,
    and languagePair when its manifest line has a `language_pair` field."""
    fields = {em.SLICE_NOISE: "slice", em.SLICE_SPEAKER: "speaker", em.SLICE_LANGUAGE: "language"}
    out = {key: str(v) for key, attr in fields.items() if (v := getattr(utt, attr, ""))}
    pair = getattr(utt, "language_pair", "") or (getattr(utt, "extra", None) or {}).get("language_pair")
    if pair:
        out[em.SLICE_LANGUAGE_PAIR] = str(pair)
    return out


class Replayer:
    def __init__(
        self,
        targets: Sequence[Target],
        transcriber: Transcriber,
        *,
        endpoint: str,
        baseline: str | None = None,
        config: ReplayConfig | None = None,
        metrics: em.EvalMetrics | None = None,
        normaliser_version: str = DEFAULT_VERSION,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not targets:
            raise ValueError("targets: at least one target variant is required")
        names = [t.variant for t in targets]
        if len(set(names)) != len(names):
            raise ValueError(f"targets: variant names must be unique, got {names}")
        if baseline is not None and baseline not in names:
            raise ValueError(f"baseline: {baseline!r} is not one of the target variants {names}")
        self.targets = list(targets)
        self.baseline = baseline or names[0]
        self.transcriber = transcriber
        self.endpoint = endpoint
        self.config = config or ReplayConfig()
        self.metrics = metrics
        self.normaliser_version = normaliser_version
        self.state = ReplayState(summaries={t.variant: VariantSummary(t.variant) for t in targets})
        self._sleep = sleep
        self._rng = random.Random(self.config.seed)
        self._requests = asyncio.Semaphore(self.config.concurrency)
        self._batch_limits: dict[str, int] = {}

    def _labels(self, target: Target, language: str) -> dict[str, str]:
        return {
            em.LABEL_ENDPOINT: self.endpoint,
            em.LABEL_VARIANT: target.variant,
            em.LABEL_MODEL: target.model_label,
            em.LABEL_LANGUAGE: language,
        }

    def _count_request(self, target: Target, language: str, reason: str | None) -> None:
        summary = self.state.summaries[target.variant]
        summary.requests += 1
        if reason is not None:
            summary.failures[reason] = summary.failures.get(reason, 0) + 1
        if self.metrics is not None:
            self.metrics.record_request(self._labels(target, language), reason)

    async def _batch_limit(self, target: Target) -> int:
        """Utterances per request for `target`: the configured batch size, capped by what the
        model takes. Asked of the transcriber once per target; a failed question (Triton not up
        yet) means one utterance per request this time and asking again next time."""
        if self.config.batch_size <= 1 or not isinstance(self.transcriber, BatchTranscriber):
            return 1
        if target.variant not in self._batch_limits:
            try:
                limit = await self.transcriber.batch_limit(target)
            except Exception as exc:  # counted as request failures by the per-utterance path
                log.warning(
                    "could not read the model's batch limit; sending one utterance per request",
                    extra={"fields": {"variant": target.variant, "error": str(exc)[:300]}},
                )
                return 1
            self._batch_limits[target.variant] = max(1, min(self.config.batch_size, int(limit)))
        return self._batch_limits[target.variant]

    async def _ask(self, target: Target, audios: Sequence[np.ndarray]) -> list[Answer]:
        if len(audios) == 1:
            return [await self.transcriber(target, audios[0])]
        assert isinstance(self.transcriber, BatchTranscriber)  # _batch_limit checked it
        answers = list(await self.transcriber.transcribe_batch(target, audios))
        if len(answers) != len(audios):
            raise TranscriptionError(
                "decode", f"{len(answers)} transcripts came back for {len(audios)} utterances"
            )
        return answers

    async def _transcribe(
        self, target: Target, utts: Sequence[Any], audios: Sequence[np.ndarray]
    ) -> list[Observation | None]:
        """One request carrying `utts` (one or a batch), retried with backoff as a whole."""
        for attempt in range(self.config.max_retries + 1):
            async with self._requests:
                started = time.perf_counter()
                try:
                    # asyncio.timeout rather than wait_for: no extra task per request.
                    async with asyncio.timeout(self.config.timeout_s):
                        answers = await self._ask(target, audios)
                    error: BaseException | None = None
                except Exception as exc:  # classified and retried below
                    error = exc
                latency = time.perf_counter() - started
            if error is None:
                audio_total = sum(u.duration_s for u in utts)
                return [
                    self._observe(
                        target,
                        utt,
                        answer,
                        latency,
                        latency * utt.duration_s / audio_total if audio_total > 0 else latency / len(utts),
                    )
                    for utt, answer in zip(utts, answers, strict=True)
                ]
            reason = classify_exception(error)
            for utt in utts:
                self._count_request(target, utt.language, reason)
            self.state.last_error, self.state.last_error_at = f"{target.variant}: {error}", time.time()
            ids = [u.id for u in utts]
            if attempt == self.config.max_retries:
                log.error(
                    "giving up on utterances",
                    extra={"fields": {"variant": target.variant, "utterances": ids, "reason": reason}},
                )
                return [None] * len(utts)
            delay = backoff_delay(
                attempt, self.config.backoff_initial_s, self.config.backoff_max_s, self._rng
            )
            log.warning(
                "request failed, backing off",
                extra={
                    "fields": {
                        "variant": target.variant,
                        "utterances": ids,
                        "reason": reason,
                        "attempt": attempt + 1,
                        "delay_s": round(delay, 3),
                        "error": str(error)[:300],
                    }
                },
            )
            await self._sleep(delay)
        return [None] * len(utts)  # pragma: no cover - the loop always returns

    def _observe(
        self, target: Target, utt: Any, answer: Answer, latency: float, processing: float
    ) -> Observation:
        text, confidence = answer
        score = score_utterance(utt.text, text, self.normaliser_version)
        # An empty transcript is a real answer (all deletions): count it, score it.
        self._count_request(target, utt.language, "empty" if not score.hypothesis else None)
        if confidence is not None:
            confidence = min(max(float(confidence), 0.0), 1.0)
        return Observation(
            utt.id,
            target.variant,
            score,
            latency,
            utt.duration_s,
            confidence,
            slice=getattr(utt, "slice", ""),
            speaker=getattr(utt, "speaker", ""),
            processing_s=processing,
        )

    async def _variant_chunk(
        self, target: Target, utts: Sequence[Any], audios: Sequence[np.ndarray]
    ) -> list[Observation | None]:
        """Every utterance of a chunk sent to one variant, in batches as large as it takes."""
        size = await self._batch_limit(target)
        groups = [range(i, min(i + size, len(utts))) for i in range(0, len(utts), size)]
        found = await asyncio.gather(
            *(self._transcribe(target, [utts[i] for i in g], [audios[i] for i in g]) for g in groups)
        )
        return [obs for group in found for obs in group]

    def _record(self, utt: Any, results: dict[str, Observation]) -> None:
        for target in self.targets:
            obs = results.get(target.variant)
            if obs is None:
                continue
            self.state.summaries[target.variant].add(obs)
            if self.metrics is not None:
                labels = self._labels(target, utt.language)
                for family, lv in self._families(labels, utt):
                    family.record_utterance(
                        lv,
                        word_errors=obs.score.word_errors,
                        ref_words=obs.score.ref_words,
                        char_errors=obs.score.char_errors,
                        ref_chars=obs.score.ref_chars,
                        latency_seconds=obs.latency_s,
                        audio_seconds=obs.audio_s,
                        confidence=obs.confidence,
                        processing_seconds=obs.processing_seconds,
                    )
        base = results.get(self.baseline)
        if base is None or self.metrics is None:
            return
        for target in self.targets:
            cand = results.get(target.variant)
            if target.variant == self.baseline or cand is None:
                continue
            labels = {
                em.LABEL_ENDPOINT: self.endpoint,
                em.LABEL_VARIANT: target.variant,
                em.LABEL_BASELINE: self.baseline,
                em.LABEL_LANGUAGE: utt.language,
            }
            for unit, c, b, n in (
                (em.UNIT_WORD, cand.score.word_errors, base.score.word_errors, cand.score.ref_words),
                (em.UNIT_CHAR, cand.score.char_errors, base.score.char_errors, cand.score.ref_chars),
            ):
                for family, lp in self._families(labels, utt):
                    family.record_pair(lp, unit=unit, candidate_errors=c, baseline_errors=b, ref_len=n)

    def _families(self, labels: dict[str, str], utt: Any) -> list[tuple[em.EvalMetrics, dict[str, str]]]:
        """The whole-set series, then one per slice dimension the utterance has a value for (the
        analysis judges a guardrail per slice value from these; docs/analysis.md)."""
        assert self.metrics is not None
        out = [(self.metrics, labels)]
        part = self.metrics.sliced
        if part is not None:
            for key, value in utterance_slices(utt).items():
                out.append((part, {**labels, em.LABEL_SLICE: key, em.LABEL_SLICE_VALUE: value}))
        return out

    async def _chunk(self, utts: Sequence[Any], slots: asyncio.Semaphore) -> list[Observation]:
        """Consecutive utterances (one, or a batch) sent to every variant, then recorded paired."""
        try:
            # Stored PCM as is (int16 for generated sets); the transcriber converts to the
            # model's declared input type.
            audios = [
                np.asarray(u.audio if u.audio.dtype == np.int16 else u.audio_float()).reshape(1, -1)
                for u in utts
            ]
            per_target = await asyncio.gather(*(self._variant_chunk(t, utts, audios) for t in self.targets))
            observations = []
            for i, utt in enumerate(utts):
                results = {obs.variant: obs for found in per_target if (obs := found[i]) is not None}
                self._record(utt, results)
                observations.extend(results.values())
            return observations
        finally:
            slots.release()

    def init_series(self, languages: Sequence[str]) -> None:
        """Create every variant's and pair's series at zero before the first utterance, so the
        first scrape sees zeros and `increase()` since an analysis start counts from there."""
        if self.metrics is None:
            return
        for language in languages:
            for target in self.targets:
                self.metrics.init_variant(self._labels(target, language))
                if target.variant != self.baseline:
                    self.metrics.init_pair(
                        {
                            em.LABEL_ENDPOINT: self.endpoint,
                            em.LABEL_VARIANT: target.variant,
                            em.LABEL_BASELINE: self.baseline,
                            em.LABEL_LANGUAGE: language,
                        }
                    )

    def init_slices(self, utterances: Sequence[Any]) -> None:
        """Create the per-slice series of every slice value in `utterances` at zero (as
        `init_series` does for the whole set)."""
        part = self.metrics.sliced if self.metrics is not None else None
        if part is None:
            return
        seen = {(u.language, key, value) for u in utterances for key, value in utterance_slices(u).items()}
        for language, key, value in sorted(seen):
            extra = {em.LABEL_SLICE: key, em.LABEL_SLICE_VALUE: value}
            for target in self.targets:
                part.init_variant({**self._labels(target, language), **extra})
                if target.variant != self.baseline and self.baseline is not None:
                    part.init_pair(
                        {
                            em.LABEL_ENDPOINT: self.endpoint,
                            em.LABEL_VARIANT: target.variant,
                            em.LABEL_BASELINE: self.baseline,
                            em.LABEL_LANGUAGE: language,
                            **extra,
                        }
                    )

    async def run_round(self, utterances: Sequence[Any]) -> list[Observation]:
        """Send every utterance to every target once; returns the scored observations."""
        self.init_series(sorted({u.language for u in utterances}))
        self.init_slices(utterances)
        offsets = start_offsets(len(utterances), self.config.rate)
        # Enough chunks in flight to keep `concurrency` requests busy, no more.
        slots = asyncio.Semaphore(max(1, math.ceil(self.config.concurrency / len(self.targets))))
        size = self.config.batch_size
        started = time.monotonic()
        tasks = []
        for first in range(0, len(utterances), size):
            chunk = utterances[first : first + size]
            # A chunk leaves when its last utterance is due, so the rate holds on average.
            wait = started + offsets[first + len(chunk) - 1] - time.monotonic()
            if wait > 0:
                await self._sleep(wait)
            await slots.acquire()
            self.state.utterances_sent += len(chunk)
            tasks.append(asyncio.create_task(self._chunk(chunk, slots)))
        observations = [o for batch in await asyncio.gather(*tasks) for o in batch]
        self.state.rounds_completed += 1
        return observations


class TritonTranscriber:
    """Sends audio to Triton with tritonclient's asyncio gRPC client (one client per address).

    Tensor names come from the target's I/O contract (`ModelIO`); datatypes and the batch limit
    from Triton's model metadata and config, read once per target. A model that returns CTC
    logits instead of a transcript is decoded here, greedily, with the vocabulary from its
    contract. A batch is zero-padded to its longest utterance and sent with each row's length.
    """

    def __init__(self, timeout_s: float = 30.0, cache_size: int = 64) -> None:
        self.timeout_s = timeout_s
        self._clients: dict[str, Any] = {}
        # Paired replay sends the same arrays to every variant: serialise them once. An entry
        # holds the arrays themselves, so their id()s cannot be reused while it lives.
        self._inputs: OrderedDict[tuple[Any, ...], tuple[tuple[np.ndarray, ...], list[Any]]] = OrderedDict()
        self._datatypes: dict[tuple[str, str], dict[str, str]] = {}
        self._batch_limits: dict[tuple[str, str], int] = {}
        self._cache_size = cache_size

    async def _input_types(self, target: Target) -> dict[str, str]:
        """Datatypes of the audio (INT16 / FP32) and audio-length inputs, from model metadata."""
        key = (target.url, target.triton_model)
        if key not in self._datatypes:
            meta = await self._client(target.url).get_model_metadata(target.triton_model)
            self._datatypes[key] = check_input_types(target, {i.name: i.datatype for i in meta.inputs})
        return self._datatypes[key]

    async def batch_limit(self, target: Target) -> int:
        """The model's `max_batch_size` when it can take a padded batch: it needs an audio-length
        input (to drop the padding) and a transcript output (logits of padded rows would need
        per-row frame counts the contract does not carry); otherwise 1."""
        key = (target.url, target.triton_model)
        if key not in self._batch_limits:
            limit = 1
            if target.io.audio_length and target.io.transcript:
                await self._input_types(target)  # checks the length input exists
                response = await self._client(target.url).get_model_config(target.triton_model)
                limit = max(1, int(response.config.max_batch_size))
            self._batch_limits[key] = limit
        return self._batch_limits[key]

    def _inputs_for(self, audios: Sequence[np.ndarray], types: dict[str, str], io: ModelIO) -> list[Any]:
        import tritonclient.grpc.aio as grpcclient

        key = (tuple(id(a) for a in audios), io.audio, types[io.audio], io.audio_length)
        hit = self._inputs.get(key)
        if hit is not None and all(x is y for x, y in zip(hit[0], audios, strict=True)):
            self._inputs.move_to_end(key)
            return hit[1]
        datatype = types[io.audio]
        if len(audios) == 1:
            data = to_datatype(audios[0], datatype)
            lengths = np.array([[data.shape[-1]]])
        else:
            rows = [to_datatype(a, datatype).reshape(-1) for a in audios]
            lengths = np.array([[r.size] for r in rows])
            data = np.zeros((len(rows), int(lengths.max())), dtype=rows[0].dtype)
            for i, r in enumerate(rows):
                data[i, : r.size] = r
        audio = grpcclient.InferInput(io.audio, list(data.shape), datatype)
        audio.set_data_from_numpy(data)
        inputs = [audio]
        if io.audio_length:
            length_type = types[io.audio_length]
            length = lengths.astype(np.int64 if length_type == "INT64" else np.int32)
            inp = grpcclient.InferInput(io.audio_length, list(length.shape), length_type)
            inp.set_data_from_numpy(length)
            inputs.append(inp)
        self._inputs[key] = (tuple(audios), inputs)
        if len(self._inputs) > self._cache_size:
            self._inputs.popitem(last=False)
        return inputs

    def _client(self, url: str) -> Any:
        if url not in self._clients:
            import tritonclient.grpc.aio as grpcclient

            self._clients[url] = grpcclient.InferenceServerClient(url)
        return self._clients[url]

    async def _infer(self, target: Target, audios: Sequence[np.ndarray]) -> Any:
        import tritonclient.grpc.aio as grpcclient

        io = target.io
        inputs = self._inputs_for(audios, await self._input_types(target), io)
        names = [n for n in (io.transcript, io.logits, io.confidence) if n]
        return await self._client(target.url).infer(
            target.triton_model,
            inputs,
            outputs=[grpcclient.InferRequestedOutput(n) for n in names],
            client_timeout=self.timeout_s,
        )

    async def __call__(self, target: Target, audio: np.ndarray) -> Answer:
        io = target.io
        result = await self._infer(target, [audio])
        confidence = result.as_numpy(io.confidence) if io.confidence else None
        if io.transcript:
            return decode_result(result.as_numpy(io.transcript), confidence, io.transcript)
        assert io.logits is not None and io.vocabulary is not None  # ModelIO guarantees it
        return decode_logits(result.as_numpy(io.logits), io.vocabulary, io.logits)

    async def transcribe_batch(self, target: Target, audios: Sequence[np.ndarray]) -> list[Answer]:
        io = target.io
        if not io.transcript:
            raise TranscriptionError("other", f"{target.triton_model}: only transcript models are batched")
        result = await self._infer(target, audios)
        return decode_batch(
            result.as_numpy(io.transcript),
            result.as_numpy(io.confidence) if io.confidence else None,
            len(audios),
            io.transcript,
        )

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def check_input_types(target: Target, types: dict[str, str]) -> dict[str, str]:
    """The model must have the contract's audio input (INT16 / FP32) and length input (INT32/64)."""
    io = target.io
    if io.audio not in types:
        raise TranscriptionError("other", f"model {target.triton_model} has no input {io.audio!r}: {types}")
    if types[io.audio] not in ("INT16", "FP32"):
        raise TranscriptionError("other", f"input {io.audio!r} is {types[io.audio]}, not INT16 or FP32")
    if io.audio_length and types.get(io.audio_length) not in ("INT32", "INT64"):
        raise TranscriptionError(
            "other",
            f"audio-length input {io.audio_length!r} is {types.get(io.audio_length)}, not INT32/INT64",
        )
    return types


def decode_logits(logits: Any, vocabulary: Any, name: str = "logits") -> tuple[str, float | None]:
    """Greedy CTC decoding of one request's [frames, vocab] (or [1, frames, vocab]) logits."""
    from stt_operator.speech.ctc import greedy_decode

    if logits is None:
        raise TranscriptionError("decode", f"response has no {name} output")
    arr = np.asarray(logits, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    try:
        decoded = greedy_decode(arr, vocabulary)
    except ValueError as exc:
        raise TranscriptionError("decode", f"{name}: {exc}") from exc
    return decoded.text, decoded.confidence


def to_datatype(audio: np.ndarray, datatype: str) -> np.ndarray:
    """Audio as the model's input type: INT16 PCM or FP32 in [-1, 1] (from either)."""
    a = np.asarray(audio)
    if datatype == "INT16":
        if a.dtype == np.int16:
            return a
        return np.clip(np.round(a.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    if a.dtype == np.int16:
        return a.astype(np.float32) / np.float32(32768.0)
    return a.astype(np.float32, copy=False)


def decode_result(
    transcript: Any, confidence: Any, name: str = TRANSCRIPT_OUTPUT
) -> tuple[str, float | None]:
    """(text, confidence) from the transcript / confidence output arrays of one request."""
    if transcript is None or np.asarray(transcript).size == 0:
        raise TranscriptionError("decode", f"response has no {name} output")
    value = np.asarray(transcript).reshape(-1)[0]
    try:
        text = value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)
    except UnicodeDecodeError as exc:
        raise TranscriptionError("decode", f"{name} is not UTF-8: {exc}") from exc
    conf = None
    if confidence is not None and np.asarray(confidence).size:
        c = float(np.asarray(confidence).reshape(-1)[0])
        conf = c if math.isfinite(c) else None
    return text, conf


def decode_batch(
    transcripts: Any, confidences: Any, rows: int, name: str = TRANSCRIPT_OUTPUT
) -> list[Answer]:
    """(text, confidence) per row from a batched response's [rows, 1] transcript / confidence."""
    if transcripts is None or np.asarray(transcripts).shape[:1] != (rows,):
        shape = None if transcripts is None else np.asarray(transcripts).shape
        raise TranscriptionError(
            "decode", f"{name}: expected {rows} rows for a batch of {rows}, got shape {shape}"
        )
    conf = None if confidences is None else np.asarray(confidences)
    if conf is not None and conf.size and conf.shape[:1] != (rows,):
        raise TranscriptionError("decode", f"confidence: expected {rows} rows, got shape {conf.shape}")
    t = np.asarray(transcripts)
    return [
        decode_result(t[i], None if conf is None or not conf.size else conf[i], name) for i in range(rows)
    ]
