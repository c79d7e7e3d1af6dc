"""I/O contracts of formats other than ONNX, read without running the model: a SavedModel's
serving signature (saved_model.pb through a protobuf subset schema) and a TorchScript
module's forward() (the archive's code/, located through data.pkl's first global)."""

from __future__ import annotations

import os
import pickle
import pickletools
import zipfile
from pathlib import Path

import pytest

from stt_harness import samples
from stt_operator.artifacts.contract import IOContract, architecture_step, savedmodel_signature
from stt_operator.artifacts.security import security_step


def contract(**io_overrides) -> IOContract:
    spec = samples.ctc_spec("file:///m")
    spec["io"].update(io_overrides)
    return IOContract.from_spec(spec)


# --- SavedModel --------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 -1 is ten bytes on the wire
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _tensor_info(name: str, dtype: int, dims: list[int]) -> bytes:
    """TensorInfo{name = 1, dtype = 2, tensor_shape = 3 {dim = 2 {size = 1}}} (meta_graph.proto)."""
    shape = b"".join(_len(2, _int(1, d)) for d in dims)
    return _len(1, name.encode()) + _int(2, dtype) + _len(3, shape)


def _saved_model(inputs: dict, outputs: dict, key: str = "serving_default") -> bytes:
    def entries(number: int, tensors: dict) -> bytes:
        return b"".join(
            _len(number, _len(1, k.encode()) + _len(2, _tensor_info(f"{key}_{k}:0", *v)))
            for k, v in tensors.items()
        )

    signature = entries(1, inputs) + entries(2, outputs) + _len(3, b"tensorflow/serving/predict")
    meta = _len(1, _len(4, b"serve")) + _len(2, b"") + _len(5, _len(1, key.encode()) + _len(2, signature))
    return _int(1, 1) + _len(2, meta)


DT_FLOAT, DT_INT32 = 1, 3


def _write(root: Path, data: bytes) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(data)
    return root


def test_savedmodel_serving_signature_matches_spec(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "sm", _saved_model({"audio": (DT_FLOAT, [-1, -1])}, {"logits": (DT_FLOAT, [-1, -1, 5])})
    )
    signature = savedmodel_signature(root)
    assert [t.describe() for t in signature.inputs] == ["audio (TYPE_FP32 [-1, -1])"]
    result, _ = architecture_step("tensorflow-savedmodel", root, contract())
    assert result.result == "passed", result.message
    assert result.message.startswith("serving_default inputs audio (TYPE_FP32 [-1, -1])")


def test_savedmodel_signature_contradicting_spec_fails(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "sm",
        _saved_model({"waveform": (DT_INT32, [-1, -1])}, {"logits": (DT_FLOAT, [-1, -1, 9])}),
    )
    result, _ = architecture_step("tensorflow-savedmodel", root, contract())
    assert result.result == "failed"
    assert (
        "spec input audio (TYPE_FP32 [-1]) not found in the serving_default signature; "
        "serving_default signature inputs: waveform (TYPE_INT32 [-1, -1])" in result.findings
    )
    assert any("has 9 classes but spec.io.vocabulary has 5 tokens" in f for f in result.findings)


def test_savedmodel_without_serving_signature_fails(tmp_path: Path) -> None:
    root = _write(tmp_path / "sm", _saved_model({"a": (DT_FLOAT, [1])}, {"b": (DT_FLOAT, [1])}, key="train"))
    result, _ = architecture_step("tensorflow-savedmodel", root, contract())
    assert result.result == "failed"
    assert "no 'serving_default' signature (signatures: ['train'])" in result.message


# --- TorchScript -------------------------------------------------------------------------


def _data_pkl() -> bytes:
    """What torch.jit.save writes first in data.pkl: GLOBAL '__torch__ Model', then state."""
    data = b"\x80\x02c__torch__\nModel\nq\x00)\x81}q\x01X\x08\x00\x00\x00trainingq\x02\x89sb."
    list(pickletools.genops(data))  # well formed
    return data


CODE = """class Model(Module):
  __parameters__ = []
  __buffers__ = []
  training : bool
  def forward(self: __torch__.Model,
    audio: Tensor) -> Tensor:
    _0 = torch.log_softmax(torch.unsqueeze(audio, -1), -1)
    return _0
"""


def _torchscript(path: Path, code: str = CODE, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/data.pkl", data or _data_pkl())
        zf.writestr("model/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("model/code/__torch__.py", code)
        zf.writestr("model/version", "3\n")
    return path


def test_torchscript_forward_checked_against_spec_by_arity_and_names(tmp_path: Path) -> None:
    model = _torchscript(tmp_path / "ts" / "model.pt")
    result, _ = architecture_step("torchscript", model, contract())
    assert result.result == "passed", result.message
    assert result.message.startswith("__torch__.Model.forward(audio: Tensor) -> Tensor matches spec.io")
    indexed = contract(
        inputs=[{"name": "INPUT__0", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}],
        outputs=[{"name": "OUTPUT__0", "dataType": "TYPE_FP32", "dims": [-1, 5], "role": "logits"}],
    )
    assert architecture_step("torchscript", model, indexed)[0].result == "passed"


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        (CODE.replace("audio: Tensor)", "audio: Tensor,\n    lengths: Tensor)"), "takes 2 (audio, lengths)"),
        (CODE.replace("-> Tensor:", "-> Tuple[Tensor, Tensor]:"), "forward() returns 2 (Tensor, Tensor)"),
        (CODE.replace("audio: Tensor)", "audio: str)"), "forward() argument annotated str"),
        (CODE.replace("def forward", "def not_forward"), "class Model has no forward()"),
    ],
)
def test_torchscript_forward_contradicting_spec(tmp_path: Path, code: str, needle: str) -> None:
    model = _torchscript(tmp_path / "ts" / "model.pt", code)
    result, _ = architecture_step("torchscript", model, contract())
    assert result.result == "failed"
    assert needle in result.message


def test_torchscript_class_globals_pass_security_but_python_globals_do_not(tmp_path: Path) -> None:
    model = _torchscript(tmp_path / "ts" / "model.pt")
    assert security_step(model.parent, "torchscript", model).result == "passed"

    class Touch:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    evil = _torchscript(tmp_path / "evil" / "model.pt", data=pickle.dumps(Touch(), protocol=2))
    result = security_step(evil.parent, "torchscript", evil)
    assert result.result == "failed" and "posix.system" in result.message
    assert architecture_step("torchscript", evil, contract())[0].result == "failed"
    assert not (tmp_path / "PWNED").exists()
