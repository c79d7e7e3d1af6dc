"""STTModel validation and quantization Jobs end to end on the real control plane.

The operator creates real Jobs; kwok schedules their pods; the stand-in kubelet
(`stt_harness.jobpods`) runs each pod's exact container command locally and kwok
completes the pod with its exit code and termination message, which the operator reads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stt_harness.kubewait import condition, event_reasons, wait_for
from stt_harness.samples import ctc_spec, keyed_ctc_model, write_keyed_evalset
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.services.kube import Kube

pytestmark = pytest.mark.integration


@pytest.fixture
def namespace(operator_namespace: str) -> str:
    """Every test here runs in a namespace the session's operator watches."""
    return operator_namespace


API = "stt.dev/v1alpha1"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, str]:
    import onnx

    root = tmp_path_factory.mktemp("artifacts")
    model_path = root / "keyed" / "model.onnx"
    model_path.parent.mkdir()
    onnx.save(keyed_ctc_model(), str(model_path))
    evalset = write_keyed_evalset(root / "evalset")
    (root / "out").mkdir()
    return {
        "uri": model_path.as_uri(),
        "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "evalset": Path(evalset).as_uri(),
        "out": (root / "out").as_uri(),
    }


def stt_model(name: str, namespace: str, spec: dict) -> dict:
    return {
        "apiVersion": API,
        "kind": "STTModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def validated(kube: Kube, namespace: str, name: str, timeout: float = 180):
    return wait_for(
        lambda: (
            (m := kube.get(API, "STTModel", name, namespace))
            and condition(m, "Validated").get("status") in ("True", "False")
            and m
        ),
        timeout=timeout,
        what=f"STTModel {name} validation verdict",
    )


def test_validation_job_passes_and_model_becomes_ready(operator, job_kubelet, kube, namespace, artifacts):
    spec = ctc_spec(
        artifacts["uri"],
        artifacts["sha256"],
        validation={"evaluationSet": {"uri": artifacts["evalset"]}, "thresholds": {"maxWer": 0.1}},
    )
    kube.apply(stt_model("keyed", namespace, spec))
    model = validated(kube, namespace, "keyed")
    assert condition(model, "Validated")["status"] == "True", condition(model, "Validated")
    status = model["status"]
    assert status["phase"] == "Ready"
    assert status["artifact"]["digest"] == f"sha256:{artifacts['sha256']}"
    assert status["validation"]["wer"] == 0.0
    steps = {s["name"]: s["result"] for s in status["validation"]["steps"]}
    assert (
        steps["integrity"] == "passed" and steps["security"] == "passed" and steps["performance"] == "passed"
    )
    job = kube.get("batch/v1", "Job", status["validation"]["jobName"], namespace)
    assert job["metadata"]["ownerReferences"][0]["name"] == "keyed"
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert [r.exit_code for r in job_kubelet.runs if r.job == job["metadata"]["name"]] == [0]
    assert {"ValidationStarted", "ValidationPassed"} <= set(event_reasons(kube, namespace, "keyed"))
    # A second look changes nothing: no new Job, same verdict.
    jobs_before = {j["metadata"]["name"] for j in kube.list("batch/v1", "Job", namespace)}
    wait_for(lambda: True, timeout=1)
    assert {j["metadata"]["name"] for j in kube.list("batch/v1", "Job", namespace)} == jobs_before


def test_tampered_artifact_fails_validation_and_is_never_served(
    operator, job_kubelet, kube, namespace, artifacts
):
    spec = ctc_spec(artifacts["uri"], "0" * 64)
    kube.apply(stt_model("tampered", namespace, spec))
    model = validated(kube, namespace, "tampered")
    verdict = condition(model, "Validated")
    assert verdict["status"] == "False"
    assert "integrity" in verdict["message"] and "0000000000" in verdict["message"], verdict
    assert model["status"]["phase"] == "Failed"
    assert condition(model, "Ready")["status"] == "False"

    kube.apply(
        {
            "apiVersion": API,
            "kind": "ModelDeployment",
            "metadata": {"name": "asr", "namespace": namespace},
            "spec": {"model": {"name": "tampered"}, "strategy": {"type": "Immediate"}},
        }
    )
    md = wait_for(
        lambda: (
            (m := kube.get(API, "ModelDeployment", "asr", namespace))
            and condition(m, "Ready").get("reason") == "ModelFailedValidation"
            and m
        ),
        what="ModelDeployment refusing a model that failed validation",
    )
    assert "integrity" in condition(md, "Ready")["message"]
    assert kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: "asr"}) == []


def test_quantization_job_creates_an_owned_derived_model(operator, job_kubelet, kube, namespace, artifacts):
    out = f"{artifacts['out']}/keyed-int8.onnx"
    spec = ctc_spec(
        artifacts["uri"],
        artifacts["sha256"],
        validation={"evaluationSet": {"uri": artifacts["evalset"]}},
        quantization={"enabled": True, "mode": "dynamic-int8", "outputUri": out, "maxWerIncrease": 0.05},
    )
    kube.apply(stt_model("keyed-q", namespace, spec))
    model = wait_for(
        lambda: (
            (m := kube.get(API, "STTModel", "keyed-q", namespace))
            and condition(m, "Quantized").get("status") in ("True", "False")
            and (m["status"].get("quantizedModel") or condition(m, "Quantized")["status"] == "False")
            and m
        ),
        timeout=240,
        what="quantization verdict",
    )
    assert condition(model, "Quantized")["status"] == "True", condition(model, "Quantized")
    quant = model["status"]["quantization"]
    assert quant["result"] == "passed" and quant["werIncrease"] <= 0.05
    derived_name = model["status"]["quantizedModel"]
    assert derived_name == "keyed-q-int8"
    derived = kube.get(API, "STTModel", derived_name, namespace)
    assert derived["metadata"]["ownerReferences"][0]["name"] == "keyed-q"
    assert derived["spec"]["source"]["uri"] == out
    assert derived["spec"]["source"]["sha256"] == quant["outputDigest"].removeprefix("sha256:")
    assert "quantization" not in derived["spec"]
    # The derived model is a catalogue entry like any other: it is validated in its turn.
    derived = validated(kube, namespace, derived_name, timeout=240)
    assert condition(derived, "Validated")["status"] == "True", condition(derived, "Validated")


def test_unpinned_model_is_ready_under_a_visible_waiver_and_skips_are_listed(
    operator, job_kubelet, kube, namespace, artifacts
):
    kube.apply(stt_model("unpinned", namespace, ctc_spec(artifacts["uri"])))
    model = validated(kube, namespace, "unpinned")
    verdict = condition(model, "Validated")
    assert verdict["status"] == "True", verdict
    assert verdict["reason"] == "ValidationPassedWithWaivers"
    assert "waived: DigestNotPinned" in verdict["message"]
    validation = model["status"]["validation"]
    assert validation["waivers"] == ["DigestNotPinned"]
    assert validation["skipped"] == ["performance"]  # no evaluation set: listed, not passed
    assert validation["requiredSteps"] == ["security", "integrity"]
    assert model["status"]["phase"] == "Ready"


def test_required_step_that_was_skipped_keeps_the_model_from_ready(
    operator, job_kubelet, kube, namespace, artifacts
):
    spec = ctc_spec(artifacts["uri"], artifacts["sha256"], validation={"requiredSteps": ["performance"]})
    kube.apply(stt_model("needs-perf", namespace, spec))
    model = validated(kube, namespace, "needs-perf")
    verdict = condition(model, "Validated")
    assert verdict["status"] == "False" and verdict["reason"] == "RequiredStepSkipped", verdict
    assert "performance did not run" in verdict["message"]
    assert model["status"]["phase"] == "Failed"
    assert condition(model, "Ready")["status"] == "False"
    job = model["status"]["validation"]["jobName"]
    assert [r.exit_code for r in job_kubelet.runs if r.job == job] == [1]  # a verdict, not retried


def test_fifo_in_a_model_folder_is_a_verdict_through_the_operator(
    operator, job_kubelet, kube, namespace, tmp_path
):
    import os

    import onnx

    folder = tmp_path / "fifo-model"
    folder.mkdir()
    onnx.save(keyed_ctc_model(), str(folder / "model.onnx"))
    os.mkfifo(folder / "weights.bin")
    kube.apply(stt_model("fifo", namespace, ctc_spec(folder.as_uri())))
    model = validated(kube, namespace, "fifo")
    verdict = condition(model, "Validated")
    assert verdict["status"] == "False" and verdict["reason"] == "ValidationFailed", verdict
    assert "weights.bin: FIFO (named pipe) in the model folder" in verdict["message"]
    job = model["status"]["validation"]["jobName"]
    assert [r.exit_code for r in job_kubelet.runs if r.job == job] == [1]
