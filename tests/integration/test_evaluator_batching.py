"""The evaluator's batched requests against a real tritonserver: several utterances in one
zero-padded request (with AUDIO_LENGTH) must score exactly as the same utterances sent one by
one, count per utterance in the evaluator's metrics, and reach Triton as fewer requests."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from stt_harness.triton import BASELINE_MODEL, DEGRADED_MODEL, LocalTriton
from stt_operator import evalmetrics as em
from stt_operator.evaluator.model_io import Target
from stt_operator.evaluator.replay import ReplayConfig, Replayer, TritonTranscriber
from stt_operator.evaluator.scoring import Observation
from stt_operator.evaluator.targets import model_io_from_spec
from stt_operator.models.catalog import sphinx_io
from stt_operator.speech.evalset import load_evalset

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def replay(
    server: LocalTriton, utts: list, batch_size: int
) -> tuple[list[Observation], CollectorRegistry]:
    io = model_io_from_spec(sphinx_io())
    targets = [
        replace(Target("stable", BASELINE_MODEL, server.grpc_url), io=io),
        replace(Target("canary", DEGRADED_MODEL, server.grpc_url), io=io),
    ]
    reg = CollectorRegistry()
    transcriber = TritonTranscriber(timeout_s=60)
    try:
        replayer = Replayer(
            targets,
            transcriber,
            endpoint="batching",
            config=ReplayConfig(concurrency=2, batch_size=batch_size),
            metrics=em.build_eval_metrics(reg),
        )
        observations = await replayer.run_round(utts)
    finally:
        await transcriber.close()
    return observations, reg


async def test_batched_requests_score_like_single_ones(
    triton_server: LocalTriton, small_evalset: Path
) -> None:
    utts = load_evalset(small_evalset)[:10]
    assert len({u.audio.size for u in utts}) > 1  # lengths differ: the batches really are padded
    models = (BASELINE_MODEL, DEGRADED_MODEL)
    start = triton_server.metric_by_model("nv_inference_count")
    single, _ = await replay(triton_server, utts, 1)
    # Triton counts a request after its response is out: let the one-by-one round's counts land
    # before taking the baseline of the batched round, and the batched round's before reading.
    triton_server.settled_metric("nv_inference_count", start, 10, models)
    before_requests = triton_server.metric_by_model("nv_inference_request_success")
    before_inferences = triton_server.metric_by_model("nv_inference_count")
    batched, reg = await replay(triton_server, utts, 4)
    after_inferences = triton_server.settled_metric("nv_inference_count", before_inferences, 10, models)
    after_requests = triton_server.settled_metric(
        "nv_inference_request_success", before_requests, math.ceil(10 / 4), models
    )

    def by_key(obs: list[Observation]) -> dict[tuple[str, str], tuple[str, int, int]]:
        return {
            (o.utterance_id, o.variant): (o.score.hypothesis, o.score.word_errors, o.score.char_errors)
            for o in obs
        }

    assert len(single) == len(batched) == 20
    assert by_key(batched) == by_key(single)
    # The degraded variant stays worse in batches (its noise depends on the unpadded audio only).
    errors = {v: sum(o.score.word_errors for o in batched if o.variant == v) for v in ("stable", "canary")}
    assert errors["canary"] > errors["stable"]

    for model in models:
        # 10 utterances in batches of 4: 3 requests to Triton, 10 inferences.
        assert after_requests[model] - before_requests[model] == math.ceil(10 / 4)
        assert after_inferences[model] - before_inferences[model] == 10
    for variant, model in (("stable", BASELINE_MODEL), ("canary", DEGRADED_MODEL)):
        labels = {"endpoint": "batching", "variant": variant, "model": model, "language": "en-US"}
        assert reg.get_sample_value(em.REQUESTS, labels) == 10  # transcription requests: per utterance
        assert reg.get_sample_value(em.UTTERANCES, labels) == 10
        assert reg.get_sample_value(em.LATENCY + "_count", labels) == 10
        # The batches' time split over their utterances: Σ shares = Σ over requests of latency,
        # which is below the per-utterance latency sum (each utterance waited its whole batch).
        processing = reg.get_sample_value(em.PROCESSING_SECONDS, labels)
        latency_sum = reg.get_sample_value(em.LATENCY + "_sum", labels)
        assert processing is not None and latency_sum is not None
        assert 0 < processing < latency_sum
