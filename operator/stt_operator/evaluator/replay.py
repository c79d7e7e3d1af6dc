"""Replay an evaluation set against every target variant, paired, at a bounded rate.

Each utterance goes to every variant (paired design: DESIGN.md section 4). Requests are sent
at most `rate` utterances per second with at most `concurrency` requests in flight. A failed
request is counted (requests + failures{reason}) and retried with capped exponential backoff
and jitter, so a Triton outage slows the evaluator down instead of losing utterances; only
after `max_retries` does the variant skip that utterance (and it is then not paired).

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
from typing import Any, Protocol

import numpy as np

from stt_operator import evalmetrics as em
from stt_operator.evaluator.scoring import Observation, VariantSummary, score_utterance
from stt_operator.speech.normalise import DEFAULT_VERSION

log = logging.getLogger("stt_operator.evaluator")

AUDIO_INPUT, TRANSCRIPT_OUTPUT, CONFIDENCE_OUTPUT = "AUDIO", "TRANSCRIPT", "CONFIDENCE"


@dataclass(frozen=True)
class ModelIO:
    """Which tensors of a model carry what (from the STTModel `io` roles).

    Either `transcript` (a string output) or `logits` plus a CTC `vocabulary` (decoded here).
    """

    audio: str = AUDIO_INPUT
    audio_length: str | None = None
    transcript: str | None = TRANSCRIPT_OUTPUT
    confidence: str | None = CONFIDENCE_OUTPUT
    logits: str | None = None
    vocabulary: Any = None  # stt_operator.speech.ctc.Vocabulary

    def __post_init__(self) -> None:
        if not self.audio:
            raise ValueError("io: an audio input name is required")
        if not self.transcript and not (self.logits and self.vocabulary is not None):
            raise ValueError("io: need a transcript output, or a logits output with a vocabulary")


@dataclass(frozen=True)
class Target:
    """One variant to evaluate: a Triton model behind a gRPC address."""

    variant: str  # metric label `variant` (ABTest variant or stable/canary/preview)
    triton_model: str  # model name in Triton's repository
    url: str  # host:port of Triton's gRPC endpoint
    model: str = ""  # metric label `model` (the STTModel name); defaults to triton_model
    io: ModelIO = ModelIO()

    @property
    def model_label(self) -> str:
        return self.model or self.triton_model


@dataclass(frozen=True)
class ReplayConfig:
    rate: float = 0.0  # utterances per second (each goes to every variant); 0 = no limit
    concurrency: int = 4  # requests in flight, all variants together
    timeout_s: float = 30.0
    max_retries: int = 5
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
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("backoff: need 0 < backoff_initial_s <= backoff_max_s")


class TranscriptionError(Exception):
    """A failed request, classified with one of evalmetrics.FAILURE_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in em.FAILURE_REASONS:
            raise ValueError(f"reason {reason!r} is not one of {em.FAILURE_REASONS}")
        super().__init__(message)
        self.reason = reason


class Transcriber(Protocol):
    def __call__(self, target: Target, audio: np.ndarray) -> Awaitable[tuple[str, float | None]]: ...


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

    async def _transcribe(self, target: Target, utt: Any, audio: np.ndarray) -> Observation | None:
        for attempt in range(self.config.max_retries + 1):
            async with self._requests:
                started = time.perf_counter()
                try:
                    # asyncio.timeout rather than wait_for: no extra task per request.
                    async with asyncio.timeout(self.config.timeout_s):
                        text, confidence = await self.transcriber(target, audio)
                    error: BaseException | None = None
                except Exception as exc:  # classified and retried below
                    error = exc
                latency = time.perf_counter() - started
            if error is None:
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
                )
            reason = classify_exception(error)
            self._count_request(target, utt.language, reason)
            self.state.last_error, self.state.last_error_at = f"{target.variant}: {error}", time.time()
            if attempt == self.config.max_retries:
                log.error(
                    "giving up on utterance",
                    extra={"fields": {"variant": target.variant, "utterance": utt.id, "reason": reason}},
                )
                return None
            delay = backoff_delay(
                attempt, self.config.backoff_initial_s, self.config.backoff_max_s, self._rng
            )
            log.warning(
                "request failed, backing off",
                extra={
                    "fields": {
                        "variant": target.variant,
                        "utterance": utt.id,
                        "reason": reason,
                        "attempt": attempt + 1,
                        "delay_s": round(delay, 3),
                        "error": str(error)[:300],
                    }
                },
            )
            await self._sleep(delay)
        return None  # pragma: no cover - the loop always returns

    def _record(self, utt: Any, results: dict[str, Observation]) -> None:
        for target in self.targets:
            obs = results.get(target.variant)
            if obs is None:
                continue
            self.state.summaries[target.variant].add(obs)
            if self.metrics is not None:
                self.metrics.record_utterance(
                    self._labels(target, utt.language),
                    word_errors=obs.score.word_errors,
                    ref_words=obs.score.ref_words,
                    char_errors=obs.score.char_errors,
                    ref_chars=obs.score.ref_chars,
                    latency_seconds=obs.latency_s,
                    audio_seconds=obs.audio_s,
                    confidence=obs.confidence,
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
                self.metrics.record_pair(labels, unit=unit, candidate_errors=c, baseline_errors=b, ref_len=n)

    async def _utterance(self, utt: Any, slots: asyncio.Semaphore) -> list[Observation]:
        try:
            # Stored PCM as is (int16 for generated sets); the transcriber converts to the
            # model's declared input type.
            raw = utt.audio if utt.audio.dtype == np.int16 else utt.audio_float()
            audio = np.asarray(raw).reshape(1, -1)
            found = await asyncio.gather(*(self._transcribe(t, utt, audio) for t in self.targets))
            results = {o.variant: o for o in found if o is not None}
            self._record(utt, results)
            return list(results.values())
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

    async def run_round(self, utterances: Sequence[Any]) -> list[Observation]:
        """Send every utterance to every target once; returns the scored observations."""
        self.init_series(sorted({u.language for u in utterances}))
        offsets = start_offsets(len(utterances), self.config.rate)
        # Enough utterances in flight to keep `concurrency` requests busy, no more.
        slots = asyncio.Semaphore(max(1, math.ceil(self.config.concurrency / len(self.targets))))
        started = time.monotonic()
        tasks = []
        for utt, offset in zip(utterances, offsets, strict=True):
            wait = started + offset - time.monotonic()
            if wait > 0:
                await self._sleep(wait)
            await slots.acquire()
            self.state.utterances_sent += 1
            tasks.append(asyncio.create_task(self._utterance(utt, slots)))
        observations = [o for batch in await asyncio.gather(*tasks) for o in batch]
        self.state.rounds_completed += 1
        return observations


class TritonTranscriber:
    """Sends audio to Triton with tritonclient's asyncio gRPC client (one client per address).

    Tensor names come from the target's I/O contract (`ModelIO`); datatypes from Triton's model
    metadata, read once per target. A model that returns CTC logits instead of a transcript is
    decoded here, greedily, with the vocabulary from its contract.
    """

    def __init__(self, timeout_s: float = 30.0, cache_size: int = 64) -> None:
        self.timeout_s = timeout_s
        self._clients: dict[str, Any] = {}
        # Paired replay sends the same array to every variant: serialise it once. The cache
        # holds the array itself, so an id() cannot be reused while its entry lives.
        self._inputs: OrderedDict[tuple[int, str, str], tuple[np.ndarray, Any]] = OrderedDict()
        self._datatypes: dict[tuple[str, str], dict[str, str]] = {}
        self._cache_size = cache_size

    async def _input_types(self, target: Target) -> dict[str, str]:
        """Datatypes of the audio (INT16 / FP32) and audio-length inputs, from model metadata."""
        key = (target.url, target.triton_model)
        if key not in self._datatypes:
            meta = await self._client(target.url).get_model_metadata(target.triton_model)
            self._datatypes[key] = check_input_types(target, {i.name: i.datatype for i in meta.inputs})
        return self._datatypes[key]

    def _audio_input(self, audio: np.ndarray, name: str, datatype: str) -> Any:
        import tritonclient.grpc.aio as grpcclient

        key = (id(audio), name, datatype)
        hit = self._inputs.get(key)
        if hit is not None and hit[0] is audio:
            self._inputs.move_to_end(key)
            return hit[1]
        data = to_datatype(audio, datatype)
        inp = grpcclient.InferInput(name, list(data.shape), datatype)
        inp.set_data_from_numpy(data)
        self._inputs[key] = (audio, inp)
        if len(self._inputs) > self._cache_size:
            self._inputs.popitem(last=False)
        return inp

    def _client(self, url: str) -> Any:
        if url not in self._clients:
            import tritonclient.grpc.aio as grpcclient

            self._clients[url] = grpcclient.InferenceServerClient(url)
        return self._clients[url]

    async def __call__(self, target: Target, audio: np.ndarray) -> tuple[str, float | None]:
        import tritonclient.grpc.aio as grpcclient

        io = target.io
        types = await self._input_types(target)
        inputs = [self._audio_input(audio, io.audio, types[io.audio])]
        if io.audio_length:
            dtype = types[io.audio_length]
            length = np.array([[audio.shape[-1]]], dtype=np.int64 if dtype == "INT64" else np.int32)
            inp = grpcclient.InferInput(io.audio_length, list(length.shape), dtype)
            inp.set_data_from_numpy(length)
            inputs.append(inp)
        names = [n for n in (io.transcript, io.logits, io.confidence) if n]
        result = await self._client(target.url).infer(
            target.triton_model,
            inputs,
            outputs=[grpcclient.InferRequestedOutput(n) for n in names],
            client_timeout=self.timeout_s,
        )
        confidence = result.as_numpy(io.confidence) if io.confidence else None
        if io.transcript:
            return decode_result(result.as_numpy(io.transcript), confidence, io.transcript)
        assert io.logits is not None and io.vocabulary is not None  # ModelIO guarantees it
        return decode_logits(result.as_numpy(io.logits), io.vocabulary, io.logits)

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
