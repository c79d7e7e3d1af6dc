"""Skipped is not passed: the report, the Job and the operator's reading of its result all
hold that a required step that did not run fails the model, and that a missing digest pin is
a named waiver, not a silent pass."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import yaml

from stt_harness import samples
from stt_operator.api.sttmodel import STTModelSpec, ValidationStatus
from stt_operator.artifacts.integrity import sha256_file
from stt_operator.artifacts.jobs import parse_termination_message, validation_job
from stt_operator.artifacts.report import StepResult, ValidationReport
from stt_operator.cli import main as cli
from stt_operator.settings import OperatorSettings

OWNER = {"apiVersion": "stt.dev/v1alpha1", "kind": "STTModel", "name": "asr", "uid": "u", "controller": True}


def _steps(**results: str) -> list[StepResult]:
    out = []
    for name in ("format", "architecture", "dependencies", "security", "integrity", "performance"):
        result = results.get(name, "passed")
        out.append(StepResult(name=name, result=result, message=f"{name} {result}"))  # type: ignore[arg-type]
    return out


def test_a_skipped_required_step_fails_the_report() -> None:
    report = ValidationReport(steps=_steps(integrity="skipped", performance="skipped"))
    assert report.skipped == ["integrity", "performance"]
    assert report.missing_required == ["integrity"]
    assert not report.passed
    body = json.loads(report.to_json())
    assert body["passed"] is False and body["missingRequired"] == ["integrity"]
    # Performance is not required by default: skipped, listed, and not a failure.
    assert ValidationReport(steps=_steps(performance="skipped")).passed


def test_operator_rejects_a_passed_verdict_with_required_steps_skipped() -> None:
    """An old validator image (or a tampered message) that says passed with integrity skipped
    is not taken at its word."""
    message = json.dumps(
        {
            "kind": "validation",
            "passed": True,
            "steps": [
                {"name": s.name, "result": s.result, "message": s.message}
                for s in _steps(integrity="skipped", architecture="skipped")
            ],
        }
    )
    result = parse_termination_message(message)
    assert not result.ok and result.reason == "RequiredStepSkipped"
    assert result.message.startswith(
        "required step(s) integrity did not run (skipped: integrity: integrity skipped)"
    )
    status = ValidationStatus.model_validate(result.status["validation"])
    assert status.skipped == ["architecture", "integrity"]
    assert status.required_steps == ["security", "integrity"]
    # The same message with performance required by the spec, performance skipped:
    ok = json.dumps(
        {
            "kind": "validation",
            "passed": True,
            "steps": [s.model_dump() for s in _steps(performance="skipped")],
        }
    )
    assert parse_termination_message(ok).ok
    strict = parse_termination_message(ok, required=["security", "integrity", "performance"])
    assert not strict.ok and strict.reason == "RequiredStepSkipped"
    assert "performance did not run" in strict.message


def test_truncated_message_keeps_skipped_steps() -> None:
    report = ValidationReport(steps=_steps(performance="skipped"))
    report.steps[0].message = "x" * 5000
    text = report.termination_message(limit=200)
    assert json.loads(text)["skipped"] == ["performance"]
    result = parse_termination_message(text)
    assert result.ok and result.status["validation"]["skipped"] == ["performance"]
    assert not parse_termination_message(text, required=["performance"]).ok


def run(tmp_path: Path, spec: dict, *extra: str) -> tuple[int, dict, str]:
    spec_file = tmp_path / "sttmodel.yaml"
    spec_file.write_text(yaml.safe_dump({"metadata": {"name": "asr"}, "spec": spec}))
    report, term = tmp_path / "report.json", tmp_path / "termination-log"
    files = ["--spec", str(spec_file), "--report", str(report), "--termination-log", str(term)]
    code = cli(["validate", *files, "--work-dir", str(tmp_path / "work"), *extra])
    return code, json.loads(report.read_text()), term.read_text()


def _model(tmp_path: Path) -> Path:
    model = tmp_path / "src" / "model.onnx"
    model.parent.mkdir()
    onnx.save(samples.keyed_ctc_model(), str(model))
    return model


def test_unpinned_digest_passes_with_a_visible_waiver(tmp_path: Path) -> None:
    model = _model(tmp_path)
    code, body, term = run(tmp_path, samples.ctc_spec(f"file://{model}", None))
    assert code == 0, body
    assert body["waivers"] == ["DigestNotPinned"]
    assert body["skipped"] == ["performance"]
    result = parse_termination_message(term)
    assert result.ok and result.reason == "ValidationPassedWithWaivers"
    assert "waived: DigestNotPinned" in result.message
    assert "skipped (not required): performance" in result.message
    assert result.status["validation"]["waivers"] == ["DigestNotPinned"]


def test_spec_required_steps_turn_a_skip_or_a_waiver_into_a_failure(tmp_path: Path) -> None:
    model = _model(tmp_path)
    spec = samples.ctc_spec(
        f"file://{model}", sha256_file(model), validation={"requiredSteps": ["performance"]}
    )
    STTModelSpec.model_validate(spec)
    code, body, term = run(tmp_path, spec)
    assert code == 1
    assert body["missingRequired"] == ["performance"]
    assert all(s["result"] != "failed" for s in body["steps"])
    result = parse_termination_message(term, required=["security", "integrity", "performance"])
    assert result.reason == "RequiredStepSkipped"
    assert "performance did not run" in result.message and "evaluationSet" in result.message

    spec = samples.ctc_spec(f"file://{model}", None, validation={"requiredSteps": ["digest"]})
    code, body, term = run(tmp_path, spec)
    assert code == 1 and body["missingRequired"] == ["digest"]
    assert parse_termination_message(term, required=["security", "integrity", "digest"]).reason == (
        "RequiredStepSkipped"
    )


def test_operator_floor_cannot_be_lowered_by_the_spec(tmp_path: Path) -> None:
    model = _model(tmp_path)
    spec = samples.ctc_spec(f"file://{model}", sha256_file(model), validation={"requiredSteps": ["format"]})
    code, body, _ = run(tmp_path, spec, "--required-steps", "security,integrity,architecture")
    assert code == 0, body
    assert body["requiredSteps"] == ["security", "integrity", "architecture", "format"]


def test_job_carries_required_steps_and_its_own_limits() -> None:
    spec = samples.ctc_spec("s3://m/asr.onnx", "a" * 64, validation={"requiredSteps": ["performance"]})
    spec["source"]["maxSizeBytes"] = 5 * 1024**3
    settings = OperatorSettings.load(validation_required_steps=["security", "integrity", "digest"])
    job = validation_job(
        "asr", "ns", spec, "img", OWNER, memory="3Gi", required=settings.validation_required_steps
    )
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--required-steps") + 1] == "security,integrity,digest,performance"
    assert args[args.index("--memory-bytes") + 1] == str(3 * 1024**3)
    scratch = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "work")
    assert scratch["emptyDir"]["sizeLimit"] == "16Gi"
    assert args[args.index("--scratch-bytes") + 1] == str(16 * 1024**3)


def test_settings_default_and_environment(monkeypatch) -> None:
    assert OperatorSettings.load().validation_required_steps == ["security", "integrity"]
    monkeypatch.setenv("STT_OPERATOR_VALIDATION_REQUIRED_STEPS", "security,integrity,performance")
    assert OperatorSettings.load().validation_required_steps == ["security", "integrity", "performance"]
