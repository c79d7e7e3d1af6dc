"""Quantization with an accuracy gate: ONNX Runtime dynamic INT8, static INT8 (QDQ) and FP16.

- dynamic-int8: `quantize_dynamic`, weights INT8, activations quantized at run time. Default op
  types MatMul/Gemm (and recurrent/attention blocks); `Conv` is excluded by default because
  the convolutional front-end of a speech model is where INT8 costs WER.
- static-int8: `quantize_static` in QDQ format, symmetric INT8 activations and weights (what
  TensorRT consumes), calibrated with MinMax on utterances of the evaluation set fed through
  the same contract-driven feeds the performance step uses; those utterances are then held
  out of the accuracy comparison. On x86 CPUs without VNNI the int8 x int8 kernels can
  saturate their 16-bit intermediate sums, so there weights use 7 bits (`reduce_range`);
  the report says when it did.
- fp16: `onnxruntime.transformers.float16.convert_float_to_float16` with float32 I/O kept, so
  the serving contract does not change (a GPU-side optimisation; on CPU it is slower).

The gate compares WER of float vs converted model on the same held-out utterances; the
speed-up is the ratio of their mean per-utterance latencies, measured in this process.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stt_operator.artifacts.contract import IOContract
from stt_operator.artifacts.performance import ContractRunner, Sample, make_session, measure
from stt_operator.artifacts.report import Metrics, QuantizationReport

MODES = ("dynamic-int8", "static-int8", "fp16")
QUANTIZABLE_OP_TYPES = ("MatMul", "Gemm", "Conv", "LSTM", "GRU", "Attention")
DEFAULT_EXCLUDE = ("Conv",)


def cpu_saturates_int8(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True on an x86 CPU with AVX2 but no VNNI: ONNX Runtime's CPU int8 x int8 kernels then
    add pairs of products in 16-bit lanes, which saturate on full-range weights and turn a
    correct QDQ model into a wrong one (seen as WER 0 -> 1 on the keyed test model)."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    return "avx2" in flags and not ({"avx512_vnni", "avx_vnni"} & flags)


def op_types_to_quantize(exclude: Sequence[str] = DEFAULT_EXCLUDE) -> list[str]:
    return [op for op in QUANTIZABLE_OP_TYPES if op not in set(exclude)]


def nodes_matching(model_path: Path, patterns: Sequence[str]) -> list[str]:
    """Node names matching any glob pattern (e.g. a front-end's `/frontend/*`)."""
    if not patterns:
        return []
    import fnmatch

    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if any(fnmatch.fnmatchcase(n.name, p) for p in patterns)]


def quantize_dynamic_int8(
    src: Path,
    dst: Path,
    exclude_op_types: Sequence[str] = DEFAULT_EXCLUDE,
    exclude_nodes: Sequence[str] = (),
) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model_input=str(src),
        model_output=str(dst),
        op_types_to_quantize=op_types_to_quantize(exclude_op_types),
        nodes_to_exclude=nodes_matching(src, exclude_nodes),
        weight_type=QuantType.QInt8,
        per_channel=False,
    )
    return dst


class FeedsReader:
    """A `CalibrationDataReader` over precomputed input dicts (one per utterance)."""

    def __init__(self, feeds: Sequence[dict[str, Any]]) -> None:
        self._feeds = list(feeds)
        self._iter: Iterator[dict[str, Any]] = iter(self._feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._feeds)


def _as_calibration_reader(feeds: Sequence[dict[str, Any]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(FeedsReader, CalibrationDataReader):
        pass

    return _Reader(feeds)


def quantize_static_int8(
    src: Path,
    dst: Path,
    calibration_feeds: Sequence[dict[str, Any]],
    exclude_op_types: Sequence[str] = DEFAULT_EXCLUDE,
    exclude_nodes: Sequence[str] = (),
) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration_feeds:
        raise ValueError("static-int8 needs calibration data: configure validation.evaluationSet")
    with tempfile.TemporaryDirectory(prefix="stt-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference + graph optimisation first, as ORT's quantization guide advises.
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            model_input=str(prepared),
            model_output=str(dst),
            calibration_data_reader=_as_calibration_reader(calibration_feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types_to_quantize(exclude_op_types),
            nodes_to_exclude=nodes_matching(prepared, exclude_nodes),
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=cpu_saturates_int8(),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    return dst


def convert_fp16(src: Path, dst: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(dst))
    return dst


@dataclass(frozen=True)
class Timing:
    """Fastest pass of `session.run` over the held-out feeds: wall and CPU seconds."""

    wall_s: float
    cpu_s: float
    items: int

    @property
    def ms_per_item(self) -> float:
        return 1000.0 * self.wall_s / self.items

    @property
    def cpu_ms_per_item(self) -> float:
        return 1000.0 * self.cpu_s / self.items


def compare_speed(
    runners: Sequence[ContractRunner], samples: Sequence[Sample], repeats: int = 3
) -> list[Timing]:
    """Time inference only (features in-graph + ORT, no decoding), passes alternating between
    the models so that background load hits each alike; the fastest pass counts."""
    import time

    feeds = [[r.feeds(s) for s in samples] for r in runners]
    best = [(float("inf"), float("inf"))] * len(runners)
    for _ in range(max(1, repeats)):
        for i, runner in enumerate(runners):
            outputs = runner.output_names()
            wall, cpu = time.perf_counter(), time.process_time()
            for feed in feeds[i]:
                runner.session.run(outputs, feed)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu))
    return [Timing(w, c, len(samples)) for w, c in best]


def accuracy_gate(float_wer: float, quantized_wer: float, max_increase: float) -> tuple[bool, str]:
    """Accept when the quantized WER exceeds the float WER by at most `max_increase` (absolute)."""
    delta = quantized_wer - float_wer
    if delta > max_increase + 1e-12:
        return False, (
            f"WER rose from {float_wer:.4f} to {quantized_wer:.4f} (+{delta:.4f}), over the budget "
            f"quantization.maxWerIncrease {max_increase}"
        )
    return (
        True,
        f"WER {float_wer:.4f} -> {quantized_wer:.4f} ({delta:+.4f}) within the budget +{max_increase}",
    )


def split_samples(
    samples: Sequence[Sample], mode: str, calibration_samples: int | None
) -> tuple[list[Sample], list[Sample]]:
    """(calibration, held-out). Only static INT8 consumes calibration utterances."""
    samples = list(samples)
    if mode != "static-int8":
        return [], samples
    n = calibration_samples or max(1, min(32, len(samples) // 2))
    n = min(n, max(1, len(samples) - 1))
    return samples[:n], samples[n:]


def _accuracy(
    model: Path,
    contract: IOContract,
    samples: Sequence[Sample],
    providers: Sequence[str] | None,
    threads: int | None,
) -> tuple[Metrics, ContractRunner]:
    session = make_session(model, providers, threads=threads)
    runner = ContractRunner.create(session, contract, model)
    return measure(runner.transcribe, samples, warmup=min(3, len(samples))).metrics(), runner


def quantizable_nodes(model_path: Path, op_types: Sequence[str]) -> list[str]:
    """Names of the nodes the quantizer would touch, in graph (data-flow) order."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in set(op_types) and n.name]


def _convert(
    mode: str,
    src: Path,
    dst: Path,
    calibration_feeds: Sequence[dict[str, Any]],
    exclude_op_types: Sequence[str],
    exclude_nodes: Sequence[str],
) -> None:
    if mode == "dynamic-int8":
        quantize_dynamic_int8(src, dst, exclude_op_types, exclude_nodes)
    elif mode == "static-int8":
        quantize_static_int8(src, dst, calibration_feeds, exclude_op_types, exclude_nodes)
    else:
        convert_fp16(src, dst)


def run_quantization(
    src: Path,
    dst: Path,
    mode: str,
    contract: IOContract,
    samples: Sequence[Sample],
    max_wer_increase: float = 0.005,
    exclude_op_types: Sequence[str] = DEFAULT_EXCLUDE,
    calibration_samples: int | None = None,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    model_name: str | None = None,
    exclude_nodes: Sequence[str] = (),
    fallback_attempts: int = 3,
    speed_repeats: int = 3,
) -> QuantizationReport:
    """Convert `src` into `dst`, gate it on WER and measure the speed-up; `dst` is removed
    when the gate rejects it so a rejected artifact can never be published by mistake.

    `exclude_nodes` are node-name globs kept in float from the start; on a rejection up to
    `fallback_attempts` further conversions each keep one more node (the earliest quantized
    one) in float. The speed-up is inference wall time, float over quantized."""
    if mode not in MODES:
        raise ValueError(f"quantization.mode {mode!r}: expected one of {MODES}")
    if not samples:
        raise ValueError(
            "quantization needs an evaluation set (validation.evaluationSet) for its accuracy gate"
        )
    calibration, held_out = split_samples(samples, mode, calibration_samples)
    dst.parent.mkdir(parents=True, exist_ok=True)
    float_metrics, float_runner = _accuracy(src, contract, held_out, providers, threads)
    calibration_feeds = [float_runner.feeds(s) for s in calibration]
    # Accuracy preservation: when the gate rejects, keep the earliest still-quantized node in
    # float and try again (the front of a speech model - its feature extraction - is where
    # INT8 hurts), up to `fallback_attempts` more times.
    kept_float = nodes_matching(src, exclude_nodes)
    attempts: list[dict[str, Any]] = []
    while True:
        _convert(mode, src, dst, calibration_feeds, exclude_op_types, _exact(kept_float))
        quant_metrics, quant_runner = _accuracy(dst, contract, held_out, providers, threads)
        accepted, message = accuracy_gate(
            float_metrics.wer or 0.0, quant_metrics.wer or 0.0, max_wer_increase
        )
        attempts.append({"keptFloat": list(kept_float), "wer": quant_metrics.wer, "accepted": accepted})
        if accepted or mode == "fp16" or len(attempts) > fallback_attempts:
            break
        remaining = [
            n for n in quantizable_nodes(src, op_types_to_quantize(exclude_op_types)) if n not in kept_float
        ]
        if not remaining:
            break
        kept_float = [*kept_float, remaining[0]]
    # A vocabulary file beside the model travels with it (metadata survives conversion).
    for name in ("vocabulary.json", "vocab.json"):
        if (src.parent / name).is_file() and src.parent != dst.parent:
            shutil.copy2(src.parent / name, dst.parent / name)
    float_time, quant_time = compare_speed([float_runner, quant_runner], held_out, speed_repeats)
    if len(attempts) > 1:
        message += f" after {len(attempts)} attempts (kept in float: {', '.join(kept_float) or 'none'})"
    report = QuantizationReport(
        model=model_name,
        mode=mode,
        accepted=accepted,
        message=message,
        float_wer=float_metrics.wer,
        quantized_wer=quant_metrics.wer,
        max_wer_increase=max_wer_increase,
        float_latency_ms=float_time.ms_per_item,
        quantized_latency_ms=quant_time.ms_per_item,
        speedup=float_time.wall_s / quant_time.wall_s if quant_time.wall_s else None,
        float_size_bytes=src.stat().st_size,
        quantized_size_bytes=dst.stat().st_size,
        details={
            "heldOut": len(held_out),
            "calibration": len(calibration),
            "excludeOpTypes": list(exclude_op_types),
            "excludeNodes": list(exclude_nodes),
            "keptFloat": list(kept_float),
            "attempts": attempts,
            "opTypes": op_types_to_quantize(exclude_op_types) if mode != "fp16" else [],
            "reduceRange": mode == "static-int8" and cpu_saturates_int8(),
            "floatCer": float_metrics.cer,
            "quantizedCer": quant_metrics.cer,
            "floatCpuMsPerUtterance": float_time.cpu_ms_per_item,
            "quantizedCpuMsPerUtterance": quant_time.cpu_ms_per_item,
            "speedupCpu": float_time.cpu_s / quant_time.cpu_s if quant_time.cpu_s else None,
        },
    )
    if not accepted:
        dst.unlink(missing_ok=True)
    return report


def _exact(names: Sequence[str]) -> list[str]:
    """Node names as globs that match only themselves."""
    return ["".join(f"[{c}]" if c in "*?[]" else c for c in name) for name in names]
