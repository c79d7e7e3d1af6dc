"""FP32 vs quantized throughput and WER of an ONNX CTC speech model on this machine.

    python bench/quantization/bench_quantization.py \
        [--model operator/stt_operator/speech/assets/model.onnx] [--evalset DIR | --utterances 200] \
        [--modes dynamic-int8 static-int8] [--threads 1 2] [--out bench/quantization/results.json]

It goes through the same code the quantization Job runs (`artifacts.quantize.run_quantization`):
the float and the quantized model transcribe the same held-out utterances one at a time
(batch 1, after warm-up); WER/CER by jiwer after the project's text normaliser; the speed-up
is the ratio of mean per-utterance latencies. Without `--evalset` a labelled set is
synthesised with espeak-ng (`speech.evalset.generate_evalset`, fixed seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

from stt_operator.artifacts.contract import IOContract
from stt_operator.artifacts.performance import load_samples
from stt_operator.artifacts.quantize import run_quantization

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "operator" / "stt_operator" / "speech" / "assets" / "model.onnx"


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
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "platform": platform.platform(),
    }


def contract_for(model: Path) -> IOContract:
    """The project's model: audio float32 [batch, samples] -> logits [batch, frames, vocab]."""
    spec = {
        "io": {
            "inputs": [{"name": "audio", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}],
            "outputs": [{"name": "logits", "dataType": "TYPE_FP32", "dims": [-1, -1], "role": "logits"}],
        },
        "triton": {"maxBatchSize": 8},
    }
    return IOContract.from_spec(spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument(
        "--evalset", type=Path, help="labelled set (speech.evalset layout); default: synthesise one"
    )
    ap.add_argument("--utterances", type=int, default=200, help="size of the synthesised set")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--noise-snr-db", type=float, default=None)
    ap.add_argument("--modes", nargs="+", default=["dynamic-int8", "static-int8"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--exclude", nargs="*", default=["Conv"], help="op types left in float")
    ap.add_argument("--exclude-nodes", nargs="*", default=[], help="node-name globs left in float")
    ap.add_argument("--calibration-samples", type=int, default=32)
    ap.add_argument("--max-wer-increase", type=float, default=0.005)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        evalset = args.evalset
        if evalset is None:
            from stt_operator.speech.evalset import generate_evalset

            started = time.perf_counter()
            evalset = generate_evalset(
                Path(tmp) / "evalset", args.utterances, seed=args.seed, noise_snr_db=args.noise_snr_db
            )
            print(f"synthesised {args.utterances} utterances in {time.perf_counter() - started:.1f}s")
        samples = load_samples(evalset)
        audio_s = sum(s.duration_s for s in samples)
        results = []
        for threads in args.threads:
            for mode in args.modes:
                out = Path(tmp) / f"{mode}-{threads}" / "model.onnx"
                report = run_quantization(
                    args.model,
                    out,
                    mode,
                    contract_for(args.model),
                    samples,
                    max_wer_increase=args.max_wer_increase,
                    exclude_op_types=args.exclude,
                    calibration_samples=args.calibration_samples,
                    providers=["CPUExecutionProvider"],
                    threads=threads,
                    exclude_nodes=args.exclude_nodes,
                )
                row = {
                    "mode": mode,
                    "threads": threads,
                    "heldOut": report.details["heldOut"],
                    "floatWer": report.float_wer,
                    "quantizedWer": report.quantized_wer,
                    "werDelta": (report.quantized_wer or 0) - (report.float_wer or 0),
                    "floatCer": report.details["floatCer"],
                    "quantizedCer": report.details["quantizedCer"],
                    "floatLatencyMs": report.float_latency_ms,
                    "quantizedLatencyMs": report.quantized_latency_ms,
                    "floatUttPerS": 1000.0 / report.float_latency_ms if report.float_latency_ms else None,
                    "quantizedUttPerS": 1000.0 / report.quantized_latency_ms
                    if report.quantized_latency_ms
                    else None,
                    "speedup": report.speedup,
                    "floatSizeBytes": report.float_size_bytes,
                    "quantizedSizeBytes": report.quantized_size_bytes,
                    "accepted": report.accepted,
                    "message": report.message,
                }
                results.append(row)
                print(
                    f"{mode:13} threads={threads} WER {row['floatWer']:.4f} -> {row['quantizedWer']:.4f} "
                    f"({row['werDelta']:+.4f}); "
                    f"{row['floatLatencyMs']:.2f} -> {row['quantizedLatencyMs']:.2f} ms/utt "
                    f"(x{row['speedup']:.2f}); {row['floatSizeBytes']} -> {row['quantizedSizeBytes']} bytes; "
                    f"{'accepted' if row['accepted'] else 'REJECTED'}"
                )
    summary = {
        "model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model),
        "utterances": len(samples),
        "audioSeconds": round(audio_s, 2),
        "seed": args.seed,
        "machine": machine(),
        "results": results,
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
