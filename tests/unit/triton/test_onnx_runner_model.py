"""Pure helpers of the onnxruntime runner model (the Python-backend stand-in for onnxruntime)."""

from __future__ import annotations

import importlib.util

import pytest

from stt_operator.models import model_source


def load():
    spec = importlib.util.spec_from_file_location(
        "onnx_runner_model", model_source("onnx_runner") / "model.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


m = load()


def test_tensor_names_and_parameters() -> None:
    cfg = {
        "input": [{"name": "audio"}, {"name": "length"}],
        "output": [{"name": "logits"}],
        "parameters": {"providers": {"string_value": "CUDAExecutionProvider,CPUExecutionProvider"}},
    }
    assert m.tensor_names(cfg) == (["audio", "length"], ["logits"])
    assert m.model_parameters(cfg) == {"providers": "CUDAExecutionProvider,CPUExecutionProvider"}


def test_signature_mismatch_names_the_missing_tensors() -> None:
    m.check_signature(["audio"], ["logits"], ["audio", "length"], ["logits"])
    with pytest.raises(ValueError, match=r"inputs \['AUDIO'\], outputs \['text'\]"):
        m.check_signature(["AUDIO"], ["text"], ["audio"], ["logits"])


def test_model_source_names_missing_models() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        model_source("no-such-model")
