"""The replay engine's scheduling, pairing, retry and counting logic.

The transcriber here is an in-process async function (the engine's plug-in point), so the
logic is tested without a server; the real Triton path is in tests/integration.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from stt_operator import evalmetrics as em
from stt_operator.evaluator.model_io import Target
from stt_operator.evaluator.replay import (
    ReplayConfig,
    Replayer,
    TranscriptionError,
    backoff_delay,
    classify_exception,
    decode_batch,
    decode_result,
    start_offsets,
    to_datatype,
)
from stt_operator.speech.evalset import Utterance

TEXTS = ["turn on the lights", "volume up", "what time is it"]


def utterances() -> list[Utterance]:
    return [
        Utterance(f"u{i}", np.zeros(1600, np.int16), 16000, t, "en-us", "en-US", "clean", 0.1, Path("x.wav"))
        for i, t in enumerate(TEXTS)
    ]


A = Target("stable", "sphinx-baseline", "127.0.0.1:1", "model-a")
B = Target("canary", "sphinx-degraded", "127.0.0.1:1")


class Fake:
    """Answers per variant; `fail` = variant -> number of leading failures per utterance."""

    def __init__(
        self, answers: dict[str, dict[int, str]], fail: dict[str, int] | None = None, delay: float = 0.0
    ):
        self.answers, self.fail, self.delay = answers, fail or {}, delay
        self.calls: dict[tuple[str, int], int] = {}
        self.in_flight = self.max_in_flight = 0

    async def __call__(self, target: Target, audio: np.ndarray) -> tuple[str, float | None]:
        idx = int(audio.size) // 1600 - 1
        key = (target.variant, idx)
        self.calls[key] = self.calls.get(key, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.calls[key] <= self.fail.get(target.variant, 0):
                raise InferenceServerException("unavailable", status="StatusCode.UNAVAILABLE")
            return self.answers[target.variant].get(idx, TEXTS[idx]), 0.75
        finally:
            self.in_flight -= 1


def sized_utterances() -> list[Utterance]:
    # Audio length encodes the index so the fake knows which utterance it got.
    return [
        Utterance(
            u.id,
            np.zeros(1600 * (i + 1), np.int16),
            16000,
            u.text,
            u.speaker,
            u.language,
            u.slice,
            0.1 * (i + 1),
            u.path,
        )
        for i, u in enumerate(utterances())
    ]


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    v = reg.get_sample_value(name, labels)
    return 0.0 if v is None else v


LA = {"endpoint": "ep", "variant": "stable", "model": "model-a", "language": "en-US"}
LB = {"endpoint": "ep", "variant": "canary", "model": "sphinx-degraded", "language": "en-US"}


async def run(
    fake: Fake, config: ReplayConfig | None = None, sleeps: list[float] | None = None
) -> tuple[Replayer, CollectorRegistry, list]:
    reg = CollectorRegistry()

    async def record_sleep(s: float) -> None:
        if sleeps is not None:
            sleeps.append(s)

    r = Replayer(
        [A, B],
        fake,
        endpoint="ep",
        config=config or ReplayConfig(concurrency=4),
        metrics=em.build_eval_metrics(reg),
        sleep=record_sleep,
    )
    obs = await r.run_round(sized_utterances())
    return r, reg, obs


async def test_paired_replay_scores_and_exports_consistent_counters() -> None:
    fake = Fake({"stable": {}, "canary": {0: "turn on the light", 1: "volume"}})
    r, reg, obs = await run(fake)
    assert len(obs) == 6
    assert all(fake.calls[(v, i)] == 1 for v in ("stable", "canary") for i in range(3))
    s, c = r.state.summaries["stable"], r.state.summaries["canary"]
    assert (s.word_errors, s.ref_words) == (0, 10)
    assert (c.word_errors, c.ref_words) == (2, 10)
    assert value(reg, em.ERRORS, **LB, unit="word") == 2
    assert value(reg, em.REF_LEN, **LB, unit="word") == 10
    assert value(reg, em.ERRORS_SQ, **LB, unit="word") == 2  # 1² + 1²
    assert value(reg, em.UTTERANCES, **LA) == 3
    assert value(reg, em.REQUESTS, **LA) == 3
    assert value(reg, em.LATENCY + "_count", **LA) == 3
    assert value(reg, em.AUDIO_SECONDS, **LA) == pytest.approx(0.6)
    assert value(reg, em.CONFIDENCE, **LA) == pytest.approx(2.25)
    pair = {"endpoint": "ep", "variant": "canary", "baseline": "stable", "language": "en-US", "unit": "word"}
    assert value(reg, em.PAIRS, **pair) == 3
    assert value(reg, em.PAIR_CAND_ERRORS, **pair) - value(reg, em.PAIR_BASE_ERRORS, **pair) == 2
    assert value(reg, em.PAIR_WORSE, **pair) == 2
    assert value(reg, em.PAIR_BETTER, **pair) == 0
    # The baseline is never paired with itself.
    assert reg.get_sample_value(em.PAIRS, {**pair, "variant": "stable"}) is None


async def test_failures_back_off_and_retry_without_losing_the_utterance() -> None:
    fake = Fake({"stable": {}, "canary": {}}, fail={"canary": 2})
    sleeps: list[float] = []
    cfg = ReplayConfig(concurrency=2, max_retries=3, backoff_initial_s=0.1, backoff_max_s=1.0)
    r, reg, obs = await run(fake, cfg, sleeps)
    assert len(obs) == 6  # every utterance scored on both variants in the end
    assert value(reg, em.REQUESTS, **LB) == 9  # 3 utterances x (2 failures + 1 success)
    assert value(reg, em.FAILURES, **LB, reason="http") == 6
    assert value(reg, em.UTTERANCES, **LB) == 3
    assert value(reg, em.REQUESTS, **LA) == 3
    backoffs = [s for s in sleeps if s > 0]
    assert len(backoffs) == 6
    assert all(0.05 <= s <= 0.2 for s in backoffs)
    assert r.state.last_error and "canary" in r.state.last_error


async def test_gives_up_after_max_retries_and_skips_the_pair() -> None:
    fake = Fake({"stable": {}, "canary": {}}, fail={"canary": 10})
    _r, reg, obs = await run(fake, ReplayConfig(max_retries=1, backoff_initial_s=0.01))
    assert [o.variant for o in obs] == ["stable"] * 3
    assert value(reg, em.REQUESTS, **LB) == 6
    assert value(reg, em.FAILURES, **LB, reason="http") == 6
    # The series exist at zero (created before the first utterance), they just never moved.
    assert reg.get_sample_value(em.UTTERANCES, LB) == 0
    assert reg.get_sample_value(em.FAILURES, {**LB, "reason": "timeout"}) == 0
    pair = {"endpoint": "ep", "variant": "canary", "baseline": "stable", "language": "en-US", "unit": "word"}
    assert reg.get_sample_value(em.PAIRS, pair) == 0
    assert reg.get_sample_value(em.PAIRS, {**pair, "variant": "stable"}) is None


async def test_empty_transcript_is_counted_and_scored_as_deletions() -> None:
    fake = Fake({"stable": {}, "canary": {2: ""}})
    _r, reg, _ = await run(fake)
    assert value(reg, em.FAILURES, **LB, reason="empty") == 1
    assert value(reg, em.ERRORS, **LB, unit="word") == 4  # "what time is it" all deleted
    assert value(reg, em.UTTERANCES, **LB) == 3


async def test_timeouts_are_classified() -> None:
    fake = Fake({"stable": {}, "canary": {}}, delay=0.2)
    _r, reg, obs = await run(fake, ReplayConfig(timeout_s=0.05, max_retries=0))
    assert obs == []
    assert value(reg, em.FAILURES, **LA, reason="timeout") == 3


async def test_concurrency_is_bounded() -> None:
    fake = Fake({"stable": {}, "canary": {}}, delay=0.02)
    reg = CollectorRegistry()
    r = Replayer(
        [A, B], fake, endpoint="ep", config=ReplayConfig(concurrency=2), metrics=em.build_eval_metrics(reg)
    )
    many = sized_utterances() * 4
    await r.run_round(many)
    assert fake.max_in_flight <= 2
    assert r.state.utterances_sent == 12


async def test_rate_limit_spaces_the_utterances() -> None:
    fake = Fake({"stable": {}, "canary": {}})
    r = Replayer([A, B], fake, endpoint="ep", config=ReplayConfig(rate=50.0, concurrency=8))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await r.run_round(sized_utterances())
    assert loop.time() - t0 >= 2 / 50 * 0.9


def test_schedule_backoff_and_classification() -> None:
    assert start_offsets(3, 0) == [0.0, 0.0, 0.0]
    assert start_offsets(3, 2.0) == [0.0, 0.5, 1.0]
    rng = random.Random(1)
    delays = [backoff_delay(a, 0.2, 1.0, rng) for a in range(6)]
    assert 0.1 <= delays[0] <= 0.2
    assert all(0.5 <= d <= 1.0 for d in delays[3:])  # capped
    assert classify_exception(TimeoutError()) == "timeout"
    assert (
        classify_exception(InferenceServerException("x", status="StatusCode.DEADLINE_EXCEEDED")) == "timeout"
    )
    assert classify_exception(InferenceServerException("x", status="StatusCode.UNAVAILABLE")) == "http"
    assert classify_exception(TranscriptionError("decode", "bad")) == "decode"
    assert classify_exception(KeyError("x")) == "other"


def test_to_datatype_converts_between_pcm_and_float() -> None:
    pcm = np.array([[0, 16384, -32768, 32767]], np.int16)
    assert to_datatype(pcm, "INT16") is pcm
    f = to_datatype(pcm, "FP32")
    assert f.dtype == np.float32 and f.tolist() == [[0.0, 0.5, -1.0, 32767 / 32768]]
    assert to_datatype(f, "INT16").tolist() == pcm.tolist()
    assert to_datatype(np.array([2.0, -2.0], np.float32), "INT16").tolist() == [32767, -32768]


def test_decode_result() -> None:
    assert decode_result(np.array([[b"volume up"]], dtype=object), np.array([[0.5]], np.float32)) == (
        "volume up",
        0.5,
    )
    assert decode_result(np.array([b"x"], dtype=object), None) == ("x", None)
    with pytest.raises(TranscriptionError, match="TRANSCRIPT"):
        decode_result(None, None)
    with pytest.raises(TranscriptionError, match="UTF-8"):
        decode_result(np.array([b"\xff\xfe"], dtype=object), None)


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        ReplayConfig(concurrency=0)
    with pytest.raises(ValueError, match="rate"):
        ReplayConfig(rate=-1)
    with pytest.raises(ValueError, match="unique"):
        Replayer([A, A], Fake({}), endpoint="ep")
    with pytest.raises(ValueError, match="baseline"):
        Replayer([A, B], Fake({}), endpoint="ep", baseline="nope")
    with pytest.raises(ValueError, match="targets"):
        Replayer([], Fake({}), endpoint="ep")


class BatchFake(Fake):
    """`Fake` that also takes batches: `limits` = variant -> model batch limit."""

    def __init__(self, answers: dict[str, dict[int, str]], limits: dict[str, int], **kw: object) -> None:
        super().__init__(answers, **kw)  # type: ignore[arg-type]
        self.limits = limits
        self.batches: list[tuple[str, tuple[int, ...]]] = []
        self.short_answer = False

    async def batch_limit(self, target: Target) -> int:
        return self.limits[target.variant]

    async def transcribe_batch(
        self, target: Target, audios: list[np.ndarray]
    ) -> list[tuple[str, float | None]]:
        self.batches.append((target.variant, tuple(int(a.size) // 1600 - 1 for a in audios)))
        answers = [await self(target, a) for a in audios]
        return answers[:-1] if self.short_answer else answers


async def test_batches_carry_consecutive_utterances_and_count_each_one() -> None:
    answers = {"stable": {}, "canary": {0: "turn on the light", 1: "volume"}}
    fake = BatchFake(answers, {"stable": 8, "canary": 1})
    r, reg, obs = await run(fake, ReplayConfig(concurrency=4, batch_size=2))
    # stable batches [0, 1] then [2]; canary (model limit 1) gets one request per utterance.
    assert sorted(fake.batches) == [("stable", (0, 1))]
    assert len(obs) == 6
    s, c = r.state.summaries["stable"], r.state.summaries["canary"]
    assert (s.word_errors, c.word_errors) == (0, 2)
    assert value(reg, em.REQUESTS, **LA) == 3  # transcription requests are per utterance
    assert value(reg, em.UTTERANCES, **LA) == 3
    assert value(reg, em.LATENCY + "_count", **LA) == 3
    pair = {"endpoint": "ep", "variant": "canary", "baseline": "stable", "language": "en-US", "unit": "word"}
    assert value(reg, em.PAIRS, **pair) == 3
    assert value(reg, em.PAIR_WORSE, **pair) == 2
    # A batch's time is split over its utterances by audio (0.1 s and 0.2 s): shares 1:2 of
    # the one latency both utterances observed.
    batched = sorted(
        (o for o in obs if o.variant == "stable" and o.utterance_id in ("u0", "u1")),
        key=lambda o: o.utterance_id,
    )
    assert batched[0].latency_s == batched[1].latency_s
    assert batched[1].processing_seconds == pytest.approx(2 * batched[0].processing_seconds)
    assert sum(o.processing_seconds for o in batched) == pytest.approx(batched[0].latency_s)
    assert value(reg, em.PROCESSING_SECONDS, **LA) == pytest.approx(
        sum(o.processing_seconds for o in obs if o.variant == "stable")
    )


async def test_a_failed_batch_is_retried_whole_and_counts_every_utterance() -> None:
    fake = BatchFake({"stable": {}, "canary": {}}, {"stable": 4, "canary": 4}, fail={"canary": 1})
    cfg = ReplayConfig(concurrency=2, batch_size=3, max_retries=3, backoff_initial_s=0.01)
    _r, reg, obs = await run(fake, cfg)
    assert len(obs) == 6
    # Each canary utterance fails its first call, and one failure fails the whole batch of 3:
    # attempts 1-3 fail (on utterances 0, 1, 2 in turn), the 4th succeeds.
    assert value(reg, em.FAILURES, **LB, reason="http") == 9
    assert value(reg, em.REQUESTS, **LB) == 12
    assert value(reg, em.UTTERANCES, **LB) == 3
    assert [b for b in fake.batches if b[0] == "canary"] == [("canary", (0, 1, 2))] * 4


async def test_a_batch_answer_of_the_wrong_length_is_a_decode_failure() -> None:
    fake = BatchFake({"stable": {}, "canary": {}}, {"stable": 4, "canary": 4})
    fake.short_answer = True
    _r, reg, obs = await run(fake, ReplayConfig(batch_size=3, max_retries=0))
    assert obs == []
    assert value(reg, em.FAILURES, **LA, reason="decode") == 3


async def test_transcribers_without_batches_get_one_utterance_per_request() -> None:
    fake = Fake({"stable": {}, "canary": {}})
    r, reg, obs = await run(fake, ReplayConfig(batch_size=8))
    assert len(obs) == 6
    assert value(reg, em.REQUESTS, **LA) == 3
    assert r.state.utterances_sent == 3


def test_decode_batch_rows() -> None:
    t = np.array([[b"volume up"], [b"turn on"]], dtype=object)
    c = np.array([[0.5], [0.25]], np.float32)
    assert decode_batch(t, c, 2) == [("volume up", 0.5), ("turn on", 0.25)]
    assert decode_batch(t, None, 2) == [("volume up", None), ("turn on", None)]
    with pytest.raises(TranscriptionError, match="expected 3 rows"):
        decode_batch(t, c, 3)
    with pytest.raises(TranscriptionError, match="confidence"):
        decode_batch(t, np.array([[0.5]], np.float32), 2)
    with pytest.raises(ValueError, match="batch_size"):
        ReplayConfig(batch_size=0)
