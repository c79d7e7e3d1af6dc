"""The architecture step for TensorRT plans: engine bindings against spec.io.

TensorRT is not installable on the CPU machines (its native libraries come from NVIDIA's own
index, not the package registry) and cannot deserialize an engine without a GPU, so here the
step must be skipped with the reason, and a required architecture step must then fail the
model. The comparison itself is pure and tested on binding lists; the `gpu` test builds a
real engine and checks it where TensorRT and a GPU are present."""

from __future__ import annotations

from pathlib import Path

import pytest

from stt_harness import samples
from stt_operator.artifacts import trtplan
from stt_operator.artifacts.contract import IOContract, architecture_step
from stt_operator.artifacts.report import StepResult, ValidationReport
from stt_operator.artifacts.trtplan import (
    Binding,
    RuntimeUnavailable,
    TensorRTRuntime,
    load_runtime,
    signature_from_bindings,
    tensorrt_step,
)

VOCAB = len(samples.TOY_VOCAB)
ENGINE = [
    Binding("audio", True, "FLOAT", (-1, -1)),
    Binding("logits", False, "FLOAT", (-1, -1, VOCAB)),
]


def contract(**io: object) -> IOContract:
    spec = samples.ctc_spec("file:///m.plan", format="tensorrt-plan", triton={"maxBatchSize": 8})
    spec["io"].update(io)
    return IOContract.from_spec(spec)


def _no_runtime() -> TensorRTRuntime:
    raise RuntimeUnavailable("the tensorrt Python package is not installed in the validator image")


def _plan(tmp_path: Path) -> Path:
    path = tmp_path / "model.plan"
    path.write_bytes(b"\x00" * 64)  # never read without a runtime
    return path


def test_bindings_become_a_signature_with_triton_types() -> None:
    sig = signature_from_bindings(
        [*ENGINE, Binding("len", True, "INT32", (-1, 1)), Binding("x", False, "FP8", (4,))]
    )
    assert [(t.name, t.data_type, t.dims) for t in sig.inputs] == [
        ("audio", "TYPE_FP32", (-1, -1)),
        ("len", "TYPE_INT32", (-1, 1)),
    ]
    assert sig.outputs[0].dynamic_axes == ("axis0", "axis1")
    assert sig.outputs[1].data_type == "TRT_FP8"  # no Triton type: named, so a spec never matches it


def test_without_tensorrt_here_the_step_is_skipped_naming_the_runtime(tmp_path: Path) -> None:
    # The real environment: the tensorrt package is absent (or has no GPU) on this machine.
    with pytest.raises(RuntimeUnavailable):
        load_runtime()
    result, signature = architecture_step("tensorrt-plan", _plan(tmp_path), contract(), tmp_path)
    assert result.result == "skipped" and signature is None
    assert result.message.startswith("TensorRT plan bindings not checked:")
    assert "tensorrt" in result.message


def test_a_skipped_required_architecture_step_fails_the_model(tmp_path: Path) -> None:
    step, _ = tensorrt_step(_plan(tmp_path), contract(), loader=_no_runtime)
    report = ValidationReport(
        steps=[StepResult.passed("security", "ok"), StepResult.passed("integrity", "ok"), step],
        required_steps=["security", "integrity", "architecture"],
    )
    assert report.skipped == ["architecture"]
    assert report.missing_required == ["architecture"] and not report.passed
    report.required_steps = ["security", "integrity"]
    assert report.passed  # not required: skipped and listed, not failed


def test_engine_matching_the_contract_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trtplan, "engine_bindings", lambda rt, data: ENGINE)
    loader = lambda: TensorRTRuntime(module=None, runtime=None)  # noqa: E731
    result, signature = tensorrt_step(_plan(tmp_path), contract(), loader=loader)
    assert result.result == "passed", result.message
    assert signature is not None and result.details["inputs"] == ["audio (TYPE_FP32 [-1, -1])"]


@pytest.mark.parametrize(
    ("engine", "finding"),
    [
        (
            [Binding("waveform", True, "FLOAT", (-1, -1)), ENGINE[1]],
            "spec input audio (TYPE_FP32 [-1]) not found in the TensorRT engine",
        ),
        ([Binding("audio", True, "HALF", (-1, -1)), ENGINE[1]], "input audio: spec dataType TYPE_FP32 vs"),
        ([ENGINE[0], Binding("logits", False, "FLOAT", (-1, -1, VOCAB + 3))], "output logits"),
        ([*ENGINE, Binding("extra", True, "INT32", (-1, 1))], "TensorRT engine input extra"),
    ],
)
def test_engine_contradicting_the_contract_fails_naming_both_sides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: list[Binding], finding: str
) -> None:
    monkeypatch.setattr(trtplan, "engine_bindings", lambda rt, data: engine)
    loader = lambda: TensorRTRuntime(module=None, runtime=None)  # noqa: E731
    result, _ = tensorrt_step(_plan(tmp_path), contract(), loader=loader)
    assert result.result == "failed"
    assert any(finding in f for f in result.findings), result.findings


def test_undeserializable_plan_fails_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(rt: TensorRTRuntime, data: bytes) -> list[Binding]:
        raise ValueError("TensorRT could not deserialize the plan")

    monkeypatch.setattr(trtplan, "engine_bindings", refuse)
    result, _ = tensorrt_step(_plan(tmp_path), contract(), loader=lambda: TensorRTRuntime(None, None))
    assert result.result == "failed" and "could not deserialize" in result.message


CONFIG = """
name: "asr"
platform: "tensorrt_plan"
max_batch_size: 8
input [ { name: "audio" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ -1, %d ] } ]
"""


def test_without_a_runtime_a_shipped_config_can_fail_but_never_pass_the_step(tmp_path: Path) -> None:
    root = tmp_path / "asr"
    (root / "1").mkdir(parents=True)
    plan = root / "1" / "model.plan"
    plan.write_bytes(b"\x00" * 64)
    (root / "config.pbtxt").write_text(CONFIG % VOCAB)
    result, _ = architecture_step("tensorrt-plan", plan, contract(), root)
    assert result.result == "skipped"
    assert "config.pbtxt agrees with spec.io, but it is not the engine" in result.message
    (root / "config.pbtxt").write_text(CONFIG % (VOCAB + 1))
    result, _ = architecture_step("tensorrt-plan", plan, contract(), root)
    assert result.result == "failed" and any("output logits" in f for f in result.findings)


@pytest.mark.gpu
def test_real_engine_bindings_are_checked(tmp_path: Path) -> None:
    """Build a small engine from the toy CTC ONNX model with TensorRT, then check its plan."""
    try:
        rt = load_runtime()
    except RuntimeUnavailable as exc:
        pytest.skip(f"needs TensorRT and a GPU: {exc}")
    import onnx

    trt = rt.module
    onnx_path = tmp_path / "toy.onnx"
    onnx.save(samples.ctc_onnx_model(), str(onnx_path))
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path)), [parser.get_error(i) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("audio", (1, 1600), (4, 16000), (8, 48000))
    config.add_optimization_profile(profile)
    plan = tmp_path / "model.plan"
    plan.write_bytes(bytes(builder.build_serialized_network(network, config)))

    result, signature = architecture_step("tensorrt-plan", plan, contract(), tmp_path)
    assert result.result == "passed", result.message
    assert signature is not None and [t.name for t in signature.inputs] == ["audio"]
    wrong = contract(inputs=[{"name": "waveform", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}])
    result, _ = architecture_step("tensorrt-plan", plan, wrong, tmp_path)
    assert result.result == "failed" and any("waveform" in f for f in result.findings)
