"""FP32 vs quantized throughput and WER of the project's ONNX CTC speech model on this machine.

    python bench/quantization/bench_quantization.py \
        [--model operator/stt_operator/speech/assets/model.onnx] [--evalset DIR | --utterances 200] \
        [--variants dynamic-int8 dynamic-int8:/frontend/* static-int8:/frontend/*] [--threads 1 2] \
        [--out bench/quantization/results.json]

A variant is `mode[:node-glob,node-glob...]`; the globs name nodes left in float (for this
model `/frontend/*`, the STFT-as-MatMul front end). Everything goes through the code the
quantization Job runs: the `artifacts.quantize` converters, the contract-driven runner of the
performance step and the same accuracy gate (`--max-wer-increase`, default 0.005 absolute).

Per model it reports WER/CER (jiwer, project normaliser) on the held-out utterances, the mean
per-utterance latency end to end (features in-graph + ORT + CTC decoding, batch 1, after
warm-up), the inference-only time (`session.run` alone, fastest of `--repeats` passes, float
and quantized passes alternating) and the
throughput that implies. Without `--evalset` a labelled set is synthesised with espeak-ng
(`speech.evalset.generate_evalset`, fixed seed) — the same generator, but a different seed
from the one the model was trained on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from stt_operator.artifacts.contract import IOContract
from stt_operator.artifacts.performance import ContractRunner, Sample, load_samples, make_session, measure
from stt_operator.artifacts.quantize import (
    accuracy_gate,
    compare_speed,
    convert_fp16,
    quantize_dynamic_int8,
    quantize_static_int8,
    run_quantization,
    split_samples,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "operator" / "stt_operator" / "speech" / "assets" / "model.onnx"
CONTRACT = IOContract.from_spec(
    {
        "io": {
            "inputs": [{"name": "audio", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}],
            "outputs": [{"name": "logits", "dataType": "TYPE_FP32", "dims": [-1, -1], "role": "logits"}],
        },
        "triton": {"maxBatchSize": 8},
    }
)


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg1": os.getloadavg()[0],
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
    }


def accuracy(model: Path, samples: list[Sample], threads: int) -> tuple[dict[str, Any], Any]:
    """WER/CER and end-to-end latency (feeds + ORT + CTC decoding), batch 1, after warm-up."""
    session = make_session(model, ["CPUExecutionProvider"], threads=threads)
    runner = ContractRunner.create(session, CONTRACT, model)
    measurement = measure(runner.transcribe, samples, warmup=min(5, len(samples)))
    metrics = measurement.metrics()
    result = {
        "wer": metrics.wer,
        "cer": metrics.cer,
        "latencyMeanMs": float(np.mean(measurement.latencies_ms)),
        "latencyP95Ms": metrics.latency_p95_ms,
        "sizeBytes": model.stat().st_size,
    }
    return result, runner


def evaluate_pair(
    float_model: Path, quantized: Path, samples: list[Sample], threads: int, repeats: int
) -> tuple:
    base, base_runner = accuracy(float_model, samples, threads)
    quant, quant_runner = accuracy(quantized, samples, threads)
    audio_s = sum(s.duration_s for s in samples)
    for result, timing in zip(
        (base, quant), compare_speed([base_runner, quant_runner], samples, repeats), strict=True
    ):
        result["inferenceMsPerUtt"] = timing.ms_per_item
        result["inferenceCpuMsPerUtt"] = timing.cpu_ms_per_item
        result["uttPerS"] = len(samples) / timing.wall_s
        result["uttPerCpuS"] = len(samples) / timing.cpu_s
        result["audioSecondsPerCpuS"] = audio_s / timing.cpu_s
    return base, quant


def convert(mode: str, src: Path, dst: Path, calibration: list[Sample], exclude_nodes: list[str]) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "dynamic-int8":
        return quantize_dynamic_int8(src, dst, ["Conv"], exclude_nodes)
    if mode == "static-int8":
        probe = ContractRunner.create(make_session(src, ["CPUExecutionProvider"]), CONTRACT, src)
        return quantize_static_int8(src, dst, [probe.feeds(s) for s in calibration], ["Conv"], exclude_nodes)
    if mode == "fp16":
        return convert_fp16(src, dst)
    raise SystemExit(f"unknown mode {mode!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument(
        "--evalset", type=Path, help="labelled set (speech.evalset layout); default: synthesise one"
    )
    ap.add_argument("--utterances", type=int, default=200, help="size of the synthesised set")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["dynamic-int8", "dynamic-int8:/frontend/*", "static-int8:/frontend/*"],
    )
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calibration-samples", type=int, default=32)
    ap.add_argument("--max-wer-increase", type=float, default=0.005)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    ap.add_argument(
        "--job-default",
        action="store_true",
        help="also run what the quantization Job does with the API defaults (dynamic-int8, Conv excluded, "
        "gate fallback)",
    )
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        evalset = args.evalset
        if evalset is None:
            from stt_operator.speech.evalset import generate_evalset

            evalset = generate_evalset(Path(tmp) / "evalset", args.utterances, seed=args.seed)
        samples = load_samples(evalset)
        for variant in args.variants:
            mode, _, globs = variant.partition(":")
            exclude_nodes = [g for g in globs.split(",") if g]
            calibration, held_out = split_samples(samples, mode, args.calibration_samples)
            quantized = convert(
                mode,
                args.model,
                Path(tmp) / variant.replace("/", "_") / "model.onnx",
                calibration,
                exclude_nodes,
            )
            for threads in args.threads:
                base, quant = evaluate_pair(args.model, quantized, held_out, threads, args.repeats)
                accepted, message = accuracy_gate(base["wer"], quant["wer"], args.max_wer_increase)
                row = {
                    "variant": variant,
                    "threads": threads,
                    "heldOut": len(held_out),
                    "float": base,
                    "quantized": quant,
                    "werDelta": quant["wer"] - base["wer"],
                    "speedupEndToEnd": base["latencyMeanMs"] / quant["latencyMeanMs"],
                    "speedupInference": quant["uttPerS"] / base["uttPerS"],
                    "speedupInferenceCpu": quant["uttPerCpuS"] / base["uttPerCpuS"],
                    "accepted": accepted,
                    "gate": message,
                }
                rows.append(row)
                print(
                    f"{variant:26} t={threads} WER {base['wer']:.4f} -> {quant['wer']:.4f} "
                    f"({row['werDelta']:+.4f}) | inference {base['inferenceMsPerUtt']:.2f} -> "
                    f"{quant['inferenceMsPerUtt']:.2f} ms/utt (x{row['speedupInference']:.2f}) | CPU "
                    f"{base['inferenceCpuMsPerUtt']:.2f} -> {quant['inferenceCpuMsPerUtt']:.2f} ms/utt "
                    f"(x{row['speedupInferenceCpu']:.2f}) | end-to-end "
                    f"x{row['speedupEndToEnd']:.2f} | {base['sizeBytes']} -> {quant['sizeBytes']} B | "
                    f"{'accepted' if accepted else 'REJECTED'}",
                    flush=True,
                )
        job = None
        if args.job_default:
            report = run_quantization(
                args.model,
                Path(tmp) / "job" / "model.onnx",
                "dynamic-int8",
                CONTRACT,
                samples,
                max_wer_increase=args.max_wer_increase,
                threads=args.threads[0],
                speed_repeats=args.repeats,
            )
            job = report.dump()
            print(report.summary_text())
            print(
                f"  attempts: {report.details['attempts']}; CPU speed-up x{report.details['speedupCpu']:.2f}"
            )
    summary = {
        "model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model),
        "utterances": len(samples),
        "audioSeconds": round(sum(s.duration_s for s in samples), 2),
        "seed": args.seed,
        "machine": machine(),
        "results": rows,
        "jobDefault": job,
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
