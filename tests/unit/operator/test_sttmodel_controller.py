"""The STTModel controller end to end against a fake cluster: what it applies, the status it
writes and the Events it posts, from a fresh model through validation and quantization."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from stt_harness import samples
from stt_operator.artifacts import jobs
from stt_operator.artifacts.report import (
    ArtifactInfo,
    FileDigest,
    Metrics,
    QuantizationReport,
    StepResult,
    ValidationReport,
)
from stt_operator.controllers import sttmodel as controller
from stt_operator.controllers.context import OperatorContext
from stt_operator.settings import OperatorSettings

NAME, NS = "asr", "speech"
SETTINGS = OperatorSettings(validation_required_steps=["format"])


class FakeKube:
    """Objects by (kind, name); records every apply and every read."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.objects = dict(objects or {})
        self.applied: list[dict[str, Any]] = []
        self.reads: list[tuple[str, str]] = []

    def get(self, api: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        self.reads.append((kind, name))
        return self.objects.get((kind, name))

    def list(self, api: str, kind: str, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        self.reads.append((kind, labels.get("job-name", "")))
        return [
            o for (k, _), o in self.objects.items() if k == kind and o.get("_job") == labels.get("job-name")
        ]

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(obj)
        return obj


def spec(**overrides: Any) -> dict[str, Any]:
    overrides.setdefault("validation", {"evaluationSet": {"uri": "s3://eval/set"}})
    return samples.ctc_spec("s3://models/asr.onnx", "a" * 64, **overrides)


QUANTIZE = {"enabled": True, "mode": "dynamic-int8", "outputUri": "s3://models/asr-int8.onnx"}


def body(spec_: dict[str, Any], status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "STTModel",
        "metadata": {"name": NAME, "namespace": NS, "uid": "u1", "generation": generation},
        "spec": spec_,
        "status": status or {},
    }


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    posted: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        kopf, "event", lambda _b, type, reason, message: posted.append((type, reason, message))
    )
    return posted


def run(b: dict[str, Any], kube: FakeKube) -> tuple[dict[str, Any], float | None]:
    patch = kopf.Patch()
    requeue = controller.reconcile(b, patch, OperatorContext(settings=SETTINGS, kube=kube))  # type: ignore[arg-type]
    return dict(patch.status), requeue


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def job_name(kind: str, spec_: dict[str, Any]) -> str:
    return jobs.job_name(NAME, kind, spec_)


def finished(name: str, message: str) -> tuple[dict[str, Any], dict[str, Any]]:
    job = {"metadata": {"name": name}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    pod = {
        "_job": name,
        "metadata": {"name": f"{name}-x", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "containerStatuses": [{"name": "validate", "state": {"terminated": {"message": message}}}]
        },
    }
    return job, pod


def validation_report() -> str:
    return ValidationReport(
        model=NAME,
        format="onnx",
        artifact=ArtifactInfo(
            digest="e" * 64, size_bytes=12, files=[FileDigest(path="m.onnx", sha256="f" * 64)]
        ),
        steps=[StepResult.passed("format", "ok")],
        metrics=Metrics(wer=0.1, utterances=4),
        required_steps=["format"],
    ).termination_message()


def quantization_report() -> str:
    return QuantizationReport(
        model=NAME,
        mode="dynamic-int8",
        accepted=True,
        message="accepted",
        float_wer=0.1,
        quantized_wer=0.101,
        max_wer_increase=0.01,
        output_uri=QUANTIZE["outputUri"],
        output_digest="9" * 64,
    ).termination_message()


def test_an_invalid_spec_fails_the_model_and_runs_nothing(events: list[tuple[str, str, str]]) -> None:
    kube = FakeKube()
    status, requeue = run(body({"format": "onnx"}), kube)
    assert requeue is None and kube.applied == []
    assert status["phase"] == "Failed" and conditions(status) == {"Ready": ("False", "InvalidSpec")}
    assert [e[:2] for e in events] == [("Warning", "InvalidSpec")]


def test_a_fresh_model_renders_and_starts_its_validation_job(events: list[tuple[str, str, str]]) -> None:
    kube = FakeKube()
    status, requeue = run(body(spec()), kube)
    name = job_name("validate", spec())
    assert [(o["kind"], o["metadata"]["name"]) for o in kube.applied] == [
        ("ConfigMap", "asr-triton-config"),
        ("Job", name),
    ]
    assert requeue == SETTINGS.reconcile_interval_s * 3
    assert status["phase"] == "Validating" and status["tritonConfigMap"] == "asr-triton-config"
    assert status["observedGeneration"] == 1
    assert conditions(status) == {
        "Rendered": ("True", "ConfigRendered"),
        "Validated": ("Unknown", "ValidationStarted"),
        "Ready": ("False", "ValidationPending"),
    }
    assert events == [
        ("Normal", "ConfigRendered", "rendered Triton config.pbtxt in ConfigMap asr-triton-config"),
        ("Normal", "ValidationStarted", f"started Job {name}"),
    ]


def test_a_running_job_is_waited_for_quietly(events: list[tuple[str, str, str]]) -> None:
    kube = FakeKube()
    first, _ = run(body(spec()), kube)
    name = job_name("validate", spec())
    kube = FakeKube({("Job", name): {"metadata": {"name": name}, "status": {}}})
    events.clear()
    status, requeue = run(body(spec(), first), kube)
    assert kube.applied[1:] == [] and events == []
    assert ("Pod", name) not in kube.reads  # pods are read only for a finished Job
    assert requeue == SETTINGS.reconcile_interval_s * 3
    assert set(status) <= {"conditions"}  # only the running message may change


def test_validation_then_quantization_then_the_derived_model(events: list[tuple[str, str, str]]) -> None:
    s = spec(quantization=QUANTIZE)
    validate, quantize = job_name("validate", s), job_name("quantize", s)
    kube = FakeKube()
    status, _ = run(body(s), kube)
    job, pod = finished(validate, validation_report())
    kube = FakeKube({("Job", validate): job, ("Pod", pod["metadata"]["name"]): pod})
    events.clear()
    new, requeue = run(body(s, status), kube)
    status = {**status, **new}
    assert status["phase"] == "Ready"
    assert status["validation"]["jobName"] == validate and status["validation"]["wer"] == 0.1
    assert "completedAt" in status["validation"]
    assert status["artifact"]["digest"] == "sha256:" + "e" * 64
    assert conditions(status)["Validated"] == ("True", "ValidationPassed")
    assert conditions(status)["Quantized"] == ("Unknown", "QuantizationStarted")
    assert conditions(status)["Ready"] == ("True", "ModelReady")
    assert [e[1] for e in events] == ["ValidationPassed", "ModelReady", "QuantizationStarted"]
    assert [o["metadata"]["name"] for o in kube.applied] == ["asr-triton-config", quantize]
    assert requeue == SETTINGS.reconcile_interval_s * 3

    job, pod = finished(quantize, quantization_report())
    kube = FakeKube({("Job", quantize): job, ("Pod", pod["metadata"]["name"]): pod})
    events.clear()
    new, requeue = run(body(s, status), kube)
    status = {**status, **new}
    assert ("Job", validate) not in kube.reads  # its verdict for this generation is in
    assert requeue is None
    assert status["quantization"]["jobName"] == quantize
    assert status["quantization"]["outputDigest"] == "9" * 64
    assert status["quantizedModel"] == "asr-int8"
    assert conditions(status)["Quantized"] == ("True", "QuantizationPassed")
    derived = kube.applied[-1]
    assert derived["kind"] == "STTModel" and derived["spec"]["source"]["sha256"] == "9" * 64
    assert [e[1] for e in events] == ["QuantizationPassed", "QuantizedModelCreated"]
    assert events[-1][2] == "created STTModel asr-int8 (dynamic-int8)"

    # Settled: the derived model is re-applied, nothing is announced again.
    kube = FakeKube()
    events.clear()
    new, requeue = run(body(s, status), kube)
    assert events == [] and requeue is None
    assert kube.reads == []
    assert [o["kind"] for o in kube.applied] == ["ConfigMap", "STTModel"]
    assert "quantizedModel" not in new and "validation" not in new


def test_quantization_without_an_output_uri_is_refused(events: list[tuple[str, str, str]]) -> None:
    s = spec(quantization={"enabled": True})
    validate = job_name("validate", s)
    job, pod = finished(validate, validation_report())
    kube = FakeKube({("Job", validate): job, ("Pod", pod["metadata"]["name"]): pod})
    status, requeue = run(body(s), kube)
    assert requeue is None and [o["kind"] for o in kube.applied] == ["ConfigMap"]
    assert conditions(status)["Quantized"] == ("False", "InvalidSpec")
    assert conditions(status)["Ready"] == ("True", "ModelReady")
    assert "InvalidSpec" not in [e[1] for e in events]  # no Event for it, as before


def test_validation_disabled_makes_the_model_ready_without_a_job(events: list[tuple[str, str, str]]) -> None:
    s = spec(validation={"enabled": False})
    kube = FakeKube()
    status, requeue = run(body(s), kube)
    assert requeue is None and [o["kind"] for o in kube.applied] == ["ConfigMap"]
    assert conditions(status) == {
        "Rendered": ("True", "ConfigRendered"),
        "Validated": ("True", "ValidationDisabled"),
        "Ready": ("True", "ModelReady"),
    }
    assert status["phase"] == "Ready"
    assert [e[1] for e in events] == ["ModelReady"]  # rendered and ready at once: one Event
    assert "rendered Triton config.pbtxt in ConfigMap asr-triton-config" in events[0][2]


def test_a_failed_validation_fails_the_model(events: list[tuple[str, str, str]]) -> None:
    s = spec()
    name = job_name("validate", s)
    job = {"metadata": {"name": name}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    status, requeue = run(body(s), FakeKube({("Job", name): job}))
    assert requeue is None and status["phase"] == "Failed"
    assert conditions(status)["Validated"] == ("False", "JobFailed")
    assert conditions(status)["Ready"] == ("False", "JobFailed")
    assert ("Warning", "JobFailed", f"Job {name} failed (Failed) without a result") in events


def test_a_status_value_the_api_rejects_is_ignored_not_a_spec_error(
    events: list[tuple[str, str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    s = spec(validation={"enabled": False})
    status, _ = run(body(s, {"phase": "Bogus"}), FakeKube())
    assert "status.phase" in caplog.text
    assert status["phase"] == "Ready" and conditions(status)["Ready"] == ("True", "ModelReady")


def test_a_new_verdict_replaces_the_old_validation_section(events: list[tuple[str, str, str]]) -> None:
    s = spec()
    name = job_name("validate", s)
    job, pod = finished(name, validation_report())
    kube = FakeKube({("Job", name): job, ("Pod", pod["metadata"]["name"]): pod})
    old = {"validation": {"jobName": "asr-validate-old", "cer": 0.2, "wer": 0.3}}
    status, _ = run(body(s, old, generation=2), kube)
    assert status["validation"]["jobName"] == name and status["validation"]["wer"] == 0.1
    assert status["validation"]["cer"] is None  # the merge patch removes what the new verdict lacks
