from pathlib import Path

import pytest

from stt_harness import samples
from stt_operator.artifacts.contract import IOContract, architecture_step, onnx_signature


def contract(**io_overrides) -> IOContract:
    spec = samples.ctc_spec("file:///m.onnx")
    spec["io"].update(io_overrides)
    return IOContract.from_spec(spec)


def test_matching_contract_passes_and_lists_dynamic_axes(toy_model: Path) -> None:
    result, signature = architecture_step("onnx", toy_model, contract())
    assert result.result == "passed", result.message
    assert signature is not None
    assert result.details["dynamicAxes"] == {"audio": ["batch", "samples"], "logits": ["batch", "frames"]}
    assert signature.metadata["sample_rate"] == "16000"


def test_wrong_input_name_names_both_sides(toy_model: Path) -> None:
    c = contract(inputs=[{"name": "waveform", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}])
    result, _ = architecture_step("onnx", toy_model, c)
    assert result.result == "failed"
    assert (
        "spec input waveform (TYPE_FP32 [-1]) not found in the model; "
        "model inputs: audio (TYPE_FP32 [-1, -1])" in result.findings
    )
    assert "model input audio (TYPE_FP32 [-1, -1]) is not declared in spec.io.inputs" in result.findings


def test_dtype_dims_vocabulary_and_sample_rate_mismatches(toy_model: Path) -> None:
    c = contract(
        inputs=[{"name": "audio", "dataType": "TYPE_INT16", "dims": [-1], "role": "audio"}],
        outputs=[{"name": "logits", "dataType": "TYPE_FP32", "dims": [-1, 7], "role": "logits"}],
        vocabulary=["<blank>", "a", "b", "c", "d", "e", "f"],
        sampleRate=8000,
    )
    result, _ = architecture_step("onnx", toy_model, c)
    findings = result.findings
    assert "input audio: spec dataType TYPE_INT16 vs model TYPE_FP32" in findings
    assert (
        "output logits: axis 1 of logits: spec 7 vs model 5 "
        "(spec logits (TYPE_FP32 [-1, 7]) vs model logits (TYPE_FP32 [-1, -1, 5]))" in findings
    )
    assert "logits output logits: model has 5 classes but spec.io.vocabulary has 7 tokens" in findings
    assert "sample rate: spec.io.sampleRate 8000 vs model metadata sample_rate=16000" in findings


def test_rank_without_batch_axis(toy_model: Path) -> None:
    spec = samples.ctc_spec("file:///m.onnx", triton={"maxBatchSize": 0})
    result, _ = architecture_step("onnx", toy_model, IOContract.from_spec(spec))
    assert result.result == "failed"
    assert any(
        "rank differs: spec audio (TYPE_FP32 [-1]) vs model audio (TYPE_FP32 [-1, -1])" in f
        for f in result.findings
    )


def test_spec_dynamic_but_model_fixed(tmp_path: Path) -> None:
    import onnx

    model = samples.ctc_onnx_model()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 16000
    path = tmp_path / "fixed.onnx"
    onnx.save(model, str(path))
    assert onnx_signature(path).inputs[0].dims == (-1, 16000)
    result, _ = architecture_step("onnx", path, contract())
    assert any("spec declares it dynamic (-1) but the model fixes it" in f for f in result.findings)


@pytest.mark.parametrize("fmt", ["python", "tensorrt-plan"])
def test_other_formats_are_skipped_with_a_reason(fmt: str) -> None:
    result, _ = architecture_step(fmt, Path("/nonexistent"), contract())
    assert result.result == "skipped"
    assert result.message


def test_bad_role_in_spec_is_named() -> None:
    with pytest.raises(ValueError, match=r"spec\.io\.inputs\[0\]\.role 'mic'"):
        contract(inputs=[{"name": "audio", "dataType": "TYPE_FP32", "dims": [-1], "role": "mic"}])


CONFIG = """
name: "asr"
backend: "python"
max_batch_size: 8
input [ { name: "AUDIO" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "TRANSCRIPT" data_type: TYPE_STRING dims: [ 1 ] } ]
"""


def test_python_model_is_checked_through_its_config_pbtxt(tmp_path: Path) -> None:
    root = tmp_path / "asr"
    (root / "1").mkdir(parents=True)
    (root / "1" / "model.py").write_text(
        "class TritonPythonModel:\n    def execute(self, r):\n        return r\n"
    )
    (root / "config.pbtxt").write_text(CONFIG)
    io = {
        "inputs": [{"name": "AUDIO", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}],
        "outputs": [{"name": "TRANSCRIPT", "dataType": "TYPE_STRING", "dims": [1], "role": "transcript"}],
    }
    spec = {**samples.ctc_spec("file:///x"), "format": "python", "io": io}
    result, _ = architecture_step("python", root / "1" / "model.py", IOContract.from_spec(spec), root)
    assert result.result == "passed", result.message
    assert result.message == "tensors declared in config.pbtxt match spec.io"
    spec["io"]["outputs"][0]["dataType"] = "TYPE_FP32"
    spec["triton"] = {"maxBatchSize": 4}
    result, _ = architecture_step("python", root / "1" / "model.py", IOContract.from_spec(spec), root)
    assert result.result == "failed"
    assert "output TRANSCRIPT: spec dataType TYPE_FP32 vs config.pbtxt TYPE_STRING" in result.findings
    assert "triton.maxBatchSize 4 vs config.pbtxt max_batch_size 8" in result.findings
