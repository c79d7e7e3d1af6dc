import pickle
import zipfile
from pathlib import Path

import pytest

from stt_harness import samples
from stt_operator.artifacts.formats import detect, format_step


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def test_onnx_is_recognised_by_content_even_without_its_suffix(tmp_path: Path) -> None:
    model = samples.write_ctc_model(tmp_path / "m" / "weights.bin")
    detected = detect(model.parent)
    assert (detected.format, detected.path) == ("onnx", model)


def test_torchscript_vs_pytorch_zip(tmp_path: Path) -> None:
    ts = tmp_path / "ts" / "model.pt"
    ts.parent.mkdir()
    with zipfile.ZipFile(ts, "w") as zf:
        zf.writestr("model/constants.pkl", pickle.dumps(()))
        zf.writestr("model/code/__torch__.py", "def forward(self): ...")
        zf.writestr("model/data.pkl", pickle.dumps({}))
    pt = tmp_path / "pt" / "model.bin"
    pt.parent.mkdir()
    with zipfile.ZipFile(pt, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({}))
    assert detect(ts.parent).format == "torchscript"
    assert detect(pt.parent).format == "pytorch"
    assert (
        detect(_write(tmp_path / "legacy" / "m.pth", pickle.dumps({}, protocol=2)).parent).format == "pytorch"
    )


def test_savedmodel_plan_and_python_model(tmp_path: Path) -> None:
    saved = _write(tmp_path / "sm" / "1" / "model.savedmodel" / "saved_model.pb", b"\x12\x00")
    assert detect(tmp_path / "sm").format == "tensorflow-savedmodel"
    assert detect(tmp_path / "sm").path == saved.parent
    plan = _write(tmp_path / "trt" / "model.plan", b"ftrt" + bytes(60))
    assert detect(plan.parent).format == "tensorrt-plan"
    py = _write(
        tmp_path / "py" / "1" / "model.py",
        "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n",
    )
    result, detected = format_step(tmp_path / "py", "python")
    assert detected.path == py
    assert result.result == "passed", result.message


def test_python_model_without_the_class_fails(tmp_path: Path) -> None:
    _write(tmp_path / "py" / "model.py", "def execute():\n    pass\n")
    result, _ = format_step(tmp_path / "py", "python")
    assert result.result == "failed"
    assert result.message == "model.py: no class TritonPythonModel"


def test_truncated_onnx_fails_with_a_precise_message(tmp_path: Path) -> None:
    model = samples.write_ctc_model(tmp_path / "m" / "model.onnx", hidden=64)
    model.write_bytes(model.read_bytes()[:1000])
    result, _ = format_step(model.parent, "onnx")
    assert result.result == "failed"
    assert result.message.startswith("model.onnx: not a valid ONNX protobuf (truncated or corrupt)")


def test_declared_format_must_match_the_content(tmp_path: Path) -> None:
    samples.write_ctc_model(tmp_path / "m" / "model.pt")
    result, _ = format_step(tmp_path / "m", "torchscript")
    assert result.result == "failed"
    assert result.message == "spec.format is 'torchscript' but the content of model.pt is 'onnx'"


@pytest.mark.parametrize("content", [b"", b"hello world", b"\x00" * 100])
def test_nothing_recognisable(tmp_path: Path, content: bytes) -> None:
    _write(tmp_path / "m" / "model.bin", content)
    result, _ = format_step(tmp_path / "m", "onnx")
    assert result.result == "failed"
    assert "no recognisable model file in m" in result.message
