"""Evaluator benchmark: overhead relative to Triton compute time, and throughput.

    python bench/evaluator/bench_evaluator.py --utterances 100 --concurrency 4 --batch-sizes 1,8 \
        [--onnx] [--json out.json]

1. Replays a synthesised command set (espeak-ng) against a real local tritonserver serving the
   pocketsphinx baseline and degraded models, paired, once per batch size (utterances per
   request), and compares the evaluator process's CPU time (gRPC client, serialisation,
   scoring, metric updates) with the compute time Triton itself reports
   (`nv_inference_compute_infer_duration_us`). Goal: overhead <= 1 %.
2. With --onnx, the same against the project's own ONNX CTC model (onnxruntime in the Python
   backend), a much cheaper model per request.
3. Replays the same utterances through the evaluator with an instant in-process transcriber to
   find the evaluator's own ceiling (scored requests per second, CPU per request) with
   Triton out of the picture.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from stt_harness.triton import (
    BASELINE_MODEL,
    DEGRADED_MODEL,
    build_onnx_repository,
    local_sphinx_triton,
    metric_by_model,
    start_triton,
)
from stt_operator import evalmetrics as em
from stt_operator.evaluator.allocator import keep_large_buffers
from stt_operator.evaluator.model_io import Target
from stt_operator.evaluator.replay import ReplayConfig, Replayer, TritonTranscriber
from stt_operator.evaluator.targets import model_io_from_spec
from stt_operator.models.catalog import sphinx_io
from stt_operator.speech.evalset import generate_evalset, load_evalset


def triton_totals(metrics_url: str) -> dict[str, float]:
    names = (
        "nv_inference_compute_infer_duration_us",
        "nv_inference_request_duration_us",
        "nv_inference_count",  # inferences: a batch of 8 counts 8
        "nv_inference_request_success",  # requests
    )
    return {name: sum(metric_by_model(metrics_url, name).values()) for name in names}


def cpu_seconds() -> float:
    """User + system CPU of this process (all threads: asyncio loop and gRPC's own)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def replay(
    targets: list[Target], transcriber: Any, utts: list, concurrency: int, batch_size: int = 1
) -> dict[str, Any]:
    reg = CollectorRegistry()
    replayer = Replayer(
        targets,
        transcriber,
        endpoint="bench",
        config=ReplayConfig(concurrency=concurrency, batch_size=batch_size),
        metrics=em.build_eval_metrics(reg),
    )
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    obs = await replayer.run_round(utts)
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": cpu_seconds() - cpu0,
        "observations": len(obs),
        "summaries": {v: s.as_dict() for v, s in replayer.state.summaries.items()},
    }


async def measure(
    metrics_url: str, targets: list[Target], utts: list, concurrency: int, batch_size: int = 1
) -> dict[str, Any]:
    """Evaluator CPU vs Triton compute for one paired round (after a short warm-up)."""
    transcriber = TritonTranscriber()
    try:
        warm = utts[: min(max(10, 2 * batch_size), len(utts))]
        await replay(targets, transcriber, warm, concurrency, batch_size)
        before = triton_totals(metrics_url)
        live = await replay(targets, transcriber, utts, concurrency, batch_size)
        after = triton_totals(metrics_url)
    finally:
        await transcriber.close()
    compute_s = (
        after["nv_inference_compute_infer_duration_us"] - before["nv_inference_compute_infer_duration_us"]
    ) / 1e6
    server_s = (after["nv_inference_request_duration_us"] - before["nv_inference_request_duration_us"]) / 1e6
    inferences = int(after["nv_inference_count"] - before["nv_inference_count"])
    requests = int(after["nv_inference_request_success"] - before["nv_inference_request_success"])
    audio_s = sum(u.duration_s for u in utts) * len(targets)
    return {
        "batch_size": batch_size,
        "requests": requests,
        "utterance_transcriptions": inferences,
        "wall_s": round(live["wall_s"], 3),
        "evaluator_cpu_s": round(live["cpu_s"], 4),
        "triton_compute_s": round(compute_s, 4),
        "triton_request_s": round(server_s, 4),
        "overhead_vs_compute": round(live["cpu_s"] / compute_s, 5) if compute_s else None,
        "evaluator_cpu_ms_per_request": round(1000 * live["cpu_s"] / max(requests, 1), 3),
        "evaluator_cpu_ms_per_utterance": round(1000 * live["cpu_s"] / max(inferences, 1), 3),
        "triton_compute_ms_per_utterance": round(1000 * compute_s / max(inferences, 1), 3),
        "requests_per_s": round(requests / live["wall_s"], 2),
        "utterances_per_s": round(inferences / live["wall_s"], 2),
        "audio_s_per_s": round(audio_s / live["wall_s"], 2),
        "wer": {v: s["wer"] for v, s in live["summaries"].items()},
    }


def onnx_target_io() -> tuple[Any, Any, Any]:
    """The project's own ONNX CTC model: its file, I/O contract and Triton spec."""
    from stt_operator.speech.ctc import Vocabulary
    from stt_operator.speech.onnx_stt import DEFAULT_MODEL, DEFAULT_VOCAB
    from stt_operator.triton.spec import InstanceGroup, IOSpec, TensorSpec, TritonSpec

    vocab = Vocabulary.load(DEFAULT_VOCAB)
    io = IOSpec(
        inputs=[TensorSpec("audio", "TYPE_FP32", [-1], "audio")],
        outputs=[TensorSpec("logits", "TYPE_FP32", [-1, vocab.size], "logits")],
        vocabulary=list(vocab.tokens),
    )
    return DEFAULT_MODEL, io, TritonSpec(max_batch_size=8, instance_group=InstanceGroup(kind="KIND_CPU"))


async def main_async(a: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        evalset = (
            Path(a.evalset) if a.evalset else generate_evalset(Path(tmp) / "set", a.utterances, seed=a.seed)
        )
        utts = load_evalset(evalset)[: a.utterances]
        audio_s = sum(u.duration_s for u in utts)
        with local_sphinx_triton(Path(tmp) / "triton") as server:
            targets = [
                Target("stable", BASELINE_MODEL, server.grpc_url),
                Target("canary", DEGRADED_MODEL, server.grpc_url),
            ]
            # Targets as the operator writes them for these models: with the audio-length input.
            io = model_io_from_spec(sphinx_io())
            targets = [replace(t, io=io) for t in targets]
            live = [
                await measure(server.metrics_url, targets, utts, a.concurrency, int(b))
                for b in a.batch_sizes.split(",")
            ]
        onnx = None
        if a.onnx:
            model, io, triton = onnx_target_io()
            repo = build_onnx_repository(Path(tmp) / "onnx" / "models", "onnx-ctc", model, triton, io)
            server = start_triton(repo, Path(tmp) / "onnx", models=["onnx-ctc"])
            try:
                target = Target("onnx", "onnx-ctc", server.grpc_url, io=model_io_from_spec(io))
                onnx = await measure(server.metrics_url, [target], utts, a.concurrency)
            finally:
                server.stop()

        async def instant(target: Target, audio: np.ndarray) -> tuple[str, float | None]:
            return "turn on the kitchen lights", 0.5  # scored against each reference: real scoring work

        instant_runs = [await replay(targets, instant, utts, a.concurrency) for _ in range(a.instant_rounds)]
        inst_cpu = sum(r["cpu_s"] for r in instant_runs)
        inst_wall = sum(r["wall_s"] for r in instant_runs)
        inst_requests = sum(r["observations"] for r in instant_runs)

    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "utterances": len(utts),
        "audio_seconds": round(audio_s, 2),
        "concurrency": a.concurrency,
        "live": live,
        "live_onnx": onnx,
        "evaluator_only": {
            "rounds": a.instant_rounds,
            "requests": inst_requests,
            "requests_per_s": round(inst_requests / inst_wall, 1),
            "cpu_us_per_request": round(1e6 * inst_cpu / inst_requests, 1),
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=100)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--batch-sizes", default="1,8,16", help="utterances per request, one run each")
    ap.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's malloc thresholds as they are (`stt-operator evaluate` raises them)",
    )
    ap.add_argument("--instant-rounds", type=int, default=5)
    ap.add_argument("--onnx", action="store_true", help="also measure the project's own ONNX CTC model")
    ap.add_argument("--evalset", help="use an existing evaluation set instead of generating one")
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args()
    # As `stt-operator evaluate` does at start-up (evaluator/allocator.py).
    tuned = False if a.default_allocator else keep_large_buffers()
    result = asyncio.run(main_async(a))
    result["allocator_tuned"] = tuned
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
