"""The project's own ONNX speech model through `validate` and `quantize` (espeak-ng speech)."""

import json
from pathlib import Path

import pytest
import yaml

from stt_operator.artifacts.integrity import sha256_file
from stt_operator.cli import main as cli
from stt_operator.speech.evalset import generate_evalset

MODEL = Path(__file__).resolve().parents[3] / "operator" / "stt_operator" / "speech" / "assets" / "model.onnx"


@pytest.fixture(scope="module")
def evalset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_evalset(tmp_path_factory.mktemp("evalset"), 12, seed=77)


def spec(evalset: Path, **extra) -> dict:
    vocabulary = json.loads(MODEL.with_name("vocab.json").read_text())["tokens"]
    return {
        "language": "en-US",
        "format": "onnx",
        "source": {"uri": f"file://{MODEL}", "sha256": sha256_file(MODEL)},
        "io": {
            "inputs": [{"name": "audio", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}],
            "outputs": [
                {"name": "logits", "dataType": "TYPE_FP32", "dims": [-1, len(vocabulary)], "role": "logits"}
            ],
            "vocabulary": vocabulary,
        },
        "validation": {
            "evaluationSet": {"uri": f"file://{evalset}"},
            "thresholds": {"maxWer": 0.6, "maxRealTimeFactor": 0.5},
        },
        **extra,
    }


def test_project_model_passes_validation(tmp_path: Path, evalset: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec(evalset)))
    code = cli(
        [
            "validate",
            "--spec",
            str(tmp_path / "spec.yaml"),
            "--report",
            str(tmp_path / "r.json"),
            "--termination-log",
            str(tmp_path / "t"),
        ]
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0, report["steps"]
    assert report["metrics"]["utterances"] == 12
    assert report["metrics"]["wer"] < 0.6


def test_project_model_int8_with_float_front_end(tmp_path: Path, evalset: Path) -> None:
    out = tmp_path / "published" / "model-int8.onnx"
    quantization = {
        "enabled": True,
        "mode": "dynamic-int8",
        "outputUri": f"file://{out}",
        "maxWerIncrease": 0.1,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec(evalset, quantization=quantization)))
    code = cli(
        [
            "quantize",
            "--spec",
            str(tmp_path / "spec.yaml"),
            "--report",
            str(tmp_path / "r.json"),
            "--termination-log",
            str(tmp_path / "t"),
            "--exclude-nodes",
            "/frontend/*",
            "--threads",
            "1",
        ]
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0, report
    assert report["quantizedWer"] - report["floatWer"] <= 0.1
    assert report["quantizedSizeBytes"] < report["floatSizeBytes"] / 2
    assert report["details"]["excludeNodes"] == ["/frontend/*"]
    assert out.stat().st_size == report["quantizedSizeBytes"]
