"""Quantization with an accuracy gate: ONNX Runtime dynamic INT8, static INT8 (QDQ) and FP16.

- dynamic-int8: `quantize_dynamic`, weights INT8, activations quantized at run time. Default op
  types MatMul/Gemm (and recurrent/attention blocks); `Conv` is excluded by default because
  the convolutional front-end of a speech model is where INT8 costs WER.
- static-int8: `quantize_static` in QDQ format, symmetric INT8 activations and weights (what
  TensorRT consumes), calibrated with MinMax on utterances of the evaluation set fed through
  the same contract-driven feeds the performance step uses; those utterances are then held
  out of the accuracy comparison.
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
class Comparison:
    float_metrics: Metrics
    quantized_metrics: Metrics
    float_mean_ms: float
    quantized_mean_ms: float

    @property
    def speedup(self) -> float:
        return self.float_mean_ms / self.quantized_mean_ms if self.quantized_mean_ms else 0.0


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


def _evaluate(
    model: Path,
    contract: IOContract,
    samples: Sequence[Sample],
    providers: Sequence[str] | None,
    threads: int | None,
) -> tuple[Metrics, float]:
    session = make_session(model, providers, threads=threads)
    runner = ContractRunner.create(session, contract, model)
    measurement = measure(runner.transcribe, samples, warmup=min(3, len(samples)))
    metrics = measurement.metrics()
    mean_ms = sum(measurement.latencies_ms) / len(measurement.latencies_ms)
    return metrics, mean_ms


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
) -> QuantizationReport:
    """Convert `src` into `dst`, gate it on WER and measure the speed-up; `dst` is removed
    when the gate rejects it so a rejected artifact can never be published by mistake."""
    if mode not in MODES:
        raise ValueError(f"quantization.mode {mode!r}: expected one of {MODES}")
    if not samples:
        raise ValueError(
            "quantization needs an evaluation set (validation.evaluationSet) for its accuracy gate"
        )
    calibration, held_out = split_samples(samples, mode, calibration_samples)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "dynamic-int8":
        quantize_dynamic_int8(src, dst, exclude_op_types, exclude_nodes)
    elif mode == "static-int8":
        probe = ContractRunner.create(make_session(src, providers), contract, src)
        quantize_static_int8(src, dst, [probe.feeds(s) for s in calibration], exclude_op_types, exclude_nodes)
    else:
        convert_fp16(src, dst)
    # A vocabulary file beside the model travels with it (metadata survives conversion).
    for name in ("vocabulary.json", "vocab.json"):
        if (src.parent / name).is_file() and src.parent != dst.parent:
            shutil.copy2(src.parent / name, dst.parent / name)
    float_metrics, float_ms = _evaluate(src, contract, held_out, providers, threads)
    quant_metrics, quant_ms = _evaluate(dst, contract, held_out, providers, threads)
    comparison = Comparison(float_metrics, quant_metrics, float_ms, quant_ms)
    accepted, message = accuracy_gate(float_metrics.wer or 0.0, quant_metrics.wer or 0.0, max_wer_increase)
    report = QuantizationReport(
        model=model_name,
        mode=mode,
        accepted=accepted,
        message=message,
        float_wer=float_metrics.wer,
        quantized_wer=quant_metrics.wer,
        max_wer_increase=max_wer_increase,
        float_latency_ms=float_ms,
        quantized_latency_ms=quant_ms,
        speedup=comparison.speedup,
        float_size_bytes=src.stat().st_size,
        quantized_size_bytes=dst.stat().st_size,
        details={
            "heldOut": len(held_out),
            "calibration": len(calibration),
            "excludeOpTypes": list(exclude_op_types),
            "excludeNodes": list(exclude_nodes),
            "opTypes": op_types_to_quantize(exclude_op_types) if mode != "fp16" else [],
            "floatCer": float_metrics.cer,
            "quantizedCer": quant_metrics.cer,
        },
    )
    if not accepted:
        dst.unlink(missing_ok=True)
    return report
