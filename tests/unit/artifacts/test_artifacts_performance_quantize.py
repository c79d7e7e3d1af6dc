from pathlib import Path

import numpy as np
import onnx
import pytest

from stt_harness import samples
from stt_operator.artifacts.contract import IOContract
from stt_operator.artifacts.performance import load_samples, performance_step, threshold_violations
from stt_operator.artifacts.quantize import (
    accuracy_gate,
    op_types_to_quantize,
    run_quantization,
    split_samples,
)
from stt_operator.artifacts.report import Metrics

CONTRACT = IOContract.from_spec(samples.ctc_spec("file:///m.onnx"))


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "model" / "model.onnx"
    model.parent.mkdir()
    onnx.save(samples.keyed_ctc_model(), str(model))
    return model, samples.write_keyed_evalset(tmp_path / "evalset")


def test_performance_measures_a_correct_model(keyed: tuple[Path, Path]) -> None:
    model, evalset = keyed
    result, metrics = performance_step("onnx", model, CONTRACT, load_samples(evalset), {"maxWer": 0.0})
    assert result.result == "passed", result.message
    assert metrics.wer == 0.0 and metrics.cer == 0.0
    assert metrics.utterances == 4
    assert 0 < metrics.latency_p50_ms <= metrics.latency_p95_ms
    assert 0 < metrics.real_time_factor < 1
    assert metrics.peak_memory_mib > 10


def test_performance_thresholds_fail_with_value_and_limit(toy_model: Path, toy_evalset: Path) -> None:
    result, metrics = performance_step(
        "onnx", toy_model, CONTRACT, load_samples(toy_evalset), {"maxWer": 0.2, "maxPeakMemoryMiB": 1}
    )
    assert result.result == "failed"
    assert f"WER {metrics.wer:.4g} exceeds validation.thresholds.maxWer 0.2" in result.message
    assert "peak memory (MiB)" in result.message


def test_performance_is_skipped_when_blocked_or_without_evalset(toy_model: Path) -> None:
    blocked, _ = performance_step("onnx", toy_model, CONTRACT, None, None, blocked_by="security failed")
    assert (blocked.result, blocked.message) == ("skipped", "not run: security failed")
    none, _ = performance_step("onnx", toy_model, CONTRACT, None, None)
    assert none.result == "skipped" and "evaluationSet" in none.message


def test_model_that_cannot_be_run_as_declared(toy_model: Path, toy_evalset: Path) -> None:
    spec = samples.ctc_spec("file:///m.onnx")
    spec["io"]["inputs"][0]["name"] = "wave"
    bad, _ = performance_step("onnx", toy_model, IOContract.from_spec(spec), load_samples(toy_evalset), None)
    assert bad.result == "failed"
    assert bad.message.startswith("running the model failed:")


def test_threshold_violations_pure() -> None:
    metrics = Metrics(wer=0.1, cer=0.05, latency_p95_ms=50, real_time_factor=0.5, peak_memory_mib=100)
    assert threshold_violations(metrics, {"maxWer": 0.1, "maxCer": 0.1}) == []
    assert threshold_violations(metrics, {"maxLatencyP95Ms": 40, "maxRealTimeFactor": 0.4}) == [
        "latency p95 (ms) 50 exceeds validation.thresholds.maxLatencyP95Ms 40",
        "real-time factor 0.5 exceeds validation.thresholds.maxRealTimeFactor 0.4",
    ]


def test_accuracy_gate_reports_both_numbers() -> None:
    ok, message = accuracy_gate(0.100, 0.104, 0.005)
    assert ok and message == "WER 0.1000 -> 0.1040 (+0.0040) within the budget +0.005"
    rejected, message = accuracy_gate(0.100, 0.120, 0.005)
    assert not rejected
    assert message == (
        "WER rose from 0.1000 to 0.1200 (+0.0200), over the budget quantization.maxWerIncrease 0.005"
    )


def test_op_types_and_split() -> None:
    assert op_types_to_quantize(["Conv"]) == ["MatMul", "Gemm", "LSTM", "GRU", "Attention"]
    assert "Conv" in op_types_to_quantize([])
    items = list(range(10))
    assert split_samples(items, "dynamic-int8", None) == ([], items)
    assert split_samples(items, "static-int8", 3) == ([0, 1, 2], [3, 4, 5, 6, 7, 8, 9])


@pytest.mark.parametrize("mode", ["dynamic-int8", "static-int8", "fp16"])
def test_quantization_modes_keep_a_correct_model_correct(
    keyed: tuple[Path, Path], tmp_path: Path, mode: str
) -> None:
    model, evalset = keyed
    out = tmp_path / "out" / "model.onnx"
    report = run_quantization(
        model,
        out,
        mode,
        CONTRACT,
        load_samples(evalset),
        max_wer_increase=0.0,
        exclude_op_types=["Conv"],
        calibration_samples=2,
        threads=1,
    )
    assert report.accepted, report.message
    assert report.float_wer == 0.0 and report.quantized_wer == 0.0
    assert report.speedup and report.speedup > 0
    assert out.exists()
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    if mode == "dynamic-int8":
        assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops or "DynamicQuantizeLinear" in ops
    elif mode == "static-int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert report.details["calibration"] == 2 and report.details["heldOut"] == 2
    else:
        assert onnx.load(str(out)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(str(out)).graph.initializer)


def test_rejected_quantization_removes_the_artifact(
    toy_model: Path, toy_evalset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "q" / "model.onnx"
    # A negative budget can never be met: the gate must reject and delete the file.
    report = run_quantization(
        toy_model, out, "dynamic-int8", CONTRACT, load_samples(toy_evalset), max_wer_increase=-1
    )
    assert not report.accepted
    assert "over the budget" in report.message
    assert not out.exists()


def test_gate_rejection_falls_back_to_keeping_the_sensitive_node_in_float(tmp_path: Path) -> None:
    """Quiet speech plus one loud click: INT8's per-utterance activation scale rounds the
    speech to zero (every word deleted); the retry keeps the MatMul in float and passes."""
    import json

    from stt_operator.speech.evalset import write_wav

    model = tmp_path / "model.onnx"
    onnx.save(samples.keyed_ctc_model(gain=100.0), str(model))
    root = tmp_path / "evalset"
    (root / "audio").mkdir(parents=True)
    lines = []
    for i, text in enumerate(["lights on", "fan off", "lights off"]):
        click = np.zeros(samples.HOP, np.float32)
        click[0] = -1.0
        audio = np.concatenate([click, samples.keyed_audio(text, noise=0.0) * 0.002])
        write_wav(root / "audio" / f"u{i}.wav", np.round(audio * 32767).astype(np.int16))
        lines.append(
            {
                "id": f"u{i}",
                "audio": f"audio/u{i}.wav",
                "text": text,
                "speaker": "s",
                "language": "en-US",
                "slice": "clean",
            }
        )
    (root / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "q" / "model.onnx"
    report = run_quantization(model, out, "dynamic-int8", CONTRACT, load_samples(root), max_wer_increase=0.0)
    attempts = report.details["attempts"]
    assert attempts[0] == {"keptFloat": [], "wer": 1.0, "accepted": False}
    assert attempts[1] == {"keptFloat": ["/proj/MatMul"], "wer": 0.0, "accepted": True}
    assert report.accepted and report.quantized_wer == 0.0
    assert "after 2 attempts (kept in float: /proj/MatMul)" in report.message
    without_fallback = run_quantization(
        model,
        tmp_path / "q2" / "model.onnx",
        "dynamic-int8",
        CONTRACT,
        load_samples(root),
        max_wer_increase=0.0,
        fallback_attempts=0,
    )
    assert not without_fallback.accepted
    assert without_fallback.message.startswith("WER rose from 0.0000 to 1.0000")


def test_int8_saturation_is_detected_from_cpu_flags(tmp_path: Path) -> None:
    from stt_operator.artifacts.quantize import cpu_saturates_int8

    def cpu(flags: str) -> Path:
        path = tmp_path / f"cpuinfo-{len(list(tmp_path.iterdir()))}"
        path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
        return path

    assert cpu_saturates_int8(cpu("avx avx2 fma"))
    assert not cpu_saturates_int8(cpu("avx2 avx512f avx512_vnni"))
    assert not cpu_saturates_int8(cpu("avx2 avx_vnni"))
    assert not cpu_saturates_int8(cpu("asimd"))  # not x86: no such kernels
    assert not cpu_saturates_int8(tmp_path / "missing")
