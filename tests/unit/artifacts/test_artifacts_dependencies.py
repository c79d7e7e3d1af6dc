from pathlib import Path

import onnx
from onnx import TensorProto, helper

from stt_harness import samples
from stt_operator.artifacts.dependencies import (
    dependencies_step,
    ort_for_triton,
    parse_requirements,
    triton_version_from_image,
)


def test_supported_model_passes_for_the_installed_runtime_and_triton(toy_model: Path) -> None:
    result = dependencies_step("onnx", toy_model, {}, "25.10")
    assert result.result == "passed", result.message
    assert result.details["irVersion"] == 8
    assert result.details["opsets"] == {"": 17}
    assert "Triton 25.10" in result.message


def test_opset_too_new_for_an_older_triton(tmp_path: Path) -> None:
    path = samples.write_ctc_model(tmp_path / "m.onnx", opset=21, ir_version=10)
    result = dependencies_step("onnx", path, {}, "24.01")
    assert result.result == "failed"
    assert "opset 21 is newer than 19, the highest that onnxruntime 1.16.3 in Triton 24.01 implements" in (
        result.message
    )
    assert "IR version 10 is newer than 9" in result.message


def test_ir_version_the_installed_runtime_cannot_read(tmp_path: Path) -> None:
    path = samples.write_ctc_model(tmp_path / "m.onnx", ir_version=99)
    result = dependencies_step("onnx", path, {}, None)
    assert result.result == "failed"
    assert "rejects IR 99" in result.message
    assert "Unsupported model IR version: 99" in result.message


def test_custom_op_domain_is_flagged(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("FancyMel", ["x"], ["y"], domain="com.acme.audio")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme.audio", 1)],
        ir_version=8,
    )
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    result = dependencies_step("onnx", path, {}, None)
    assert result.result == "failed"
    assert "custom op domain 'com.acme.audio' (FancyMel) needs a custom op library" in result.message


def test_backend_that_cannot_serve_the_format(toy_model: Path) -> None:
    result = dependencies_step("onnx", toy_model, {"backend": "pytorch"}, None)
    assert result.result == "failed"
    assert "Triton backend 'pytorch' cannot serve format 'onnx'" in result.message


def test_python_model_imports_against_requirements(tmp_path: Path) -> None:
    model_py = tmp_path / "1" / "model.py"
    model_py.parent.mkdir()
    model_py.write_text(
        "import json\nimport numpy as np\nimport onnxruntime\nimport sklearn\n"
        "import triton_python_backend_utils as pb_utils\n\nclass TritonPythonModel:\n"
        "    def execute(self, requests):\n        return []\n"
    )
    (model_py.parent / "requirements.txt").write_text("onnxruntime==1.20.1  # runtime\n")
    result = dependencies_step("python", model_py, {}, None)
    assert result.result == "failed"
    assert "model.py imports sklearn which the Triton Python backend does not provide" in result.message
    (model_py.parent / "requirements.txt").write_text("onnxruntime==1.20.1\nscikit-learn>=1.4\n")
    result = dependencies_step("python", model_py, {}, None)
    assert result.result == "passed", result.message
    assert "needs onnxruntime, scikit_learn" in result.message


def test_version_tables() -> None:
    assert triton_version_from_image("nvcr.io/nvidia/tritonserver:25.10-py3") == "25.10"
    assert triton_version_from_image("tritonserver:latest") is None
    assert ort_for_triton("24.05") == "1.17.3"  # nearest older release in the table
    assert ort_for_triton("23.01") is None
    assert parse_requirements("# c\n-r other.txt\nNumPy>=1\nfoo-bar[x]==2\n") == {"numpy", "foo_bar"}
