"""The STTModel planner (catalog/planner.py) without a cluster: each path from the parsed model,
its status and the Jobs found to the new typed status, conditions, Events and manifests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from stt_harness import samples
from stt_operator.api.common import Condition
from stt_operator.api.sttmodel import QuantizationStatus, STTModel, STTModelStatus
from stt_operator.artifacts import jobs
from stt_operator.artifacts.report import Metrics, QuantizationReport, StepResult, ValidationReport
from stt_operator.builders.modelconfig import triton_model_name
from stt_operator.builders.placement import Placement
from stt_operator.catalog import planner
from stt_operator.catalog.planner import (
    JobSettings,
    ObservedJob,
    STTModelInput,
    plan_invalid_spec,
    plan_sttmodel,
    stage_jobs,
)
from stt_operator.controllers.status import status_changes
from stt_operator.rollout.plan import ConditionUpdate, EventUpdate
from stt_operator.triton.config import render_for_model

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SETTINGS = JobSettings(
    image="jobs:1",
    triton_image="triton:1",
    required_steps=("format",),
    cpu="2",
    memory="4Gi",
    placement=Placement(nodeSelector={"pool": "jobs"}),
)
QUANTIZE = {"enabled": True, "mode": "dynamic-int8", "outputUri": "s3://models/asr-int8.onnx"}


def spec(**overrides: Any) -> dict[str, Any]:
    overrides.setdefault("validation", {"evaluationSet": {"uri": "s3://eval/set"}})
    return samples.ctc_spec("s3://models/asr.onnx", "a" * 64, **overrides)


def make(
    spec_: dict[str, Any],
    conditions: list[dict[str, Any]] | None = None,
    generation: int = 1,
    **status: Any,
) -> STTModelInput:
    body = {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "STTModel",
        "metadata": {"name": "asr", "namespace": "speech", "uid": "u1", "generation": generation},
        "spec": spec_,
    }
    parsed, ignored = STTModelStatus.parse_lenient({"conditions": conditions or [], **status})
    assert ignored == []
    model = STTModel.from_body(body)
    config = render_for_model(triton_model_name("asr"), model.spec)
    return STTModelInput(model, spec_, parsed, NOW, SETTINGS, 30.0, config_text=config)


def cond(type_: str, status: str, reason: str, generation: int = 1) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "",
        "observedGeneration": generation,
    }


def observed(inp: STTModelInput, **by_kind: ObservedJob) -> STTModelInput:
    names = {kind: m["metadata"]["name"] for kind, m in stage_jobs(inp).items()}
    return replace(inp, jobs={names[kind]: seen for kind, seen in by_kind.items()})


def latest(plan: planner.STTModelPlan) -> dict[str, tuple[str, str]]:
    return {u.type: (u.status, u.reason) for u in plan.conditions}


def finished_job(name: str, message: str, ok: bool = True) -> ObservedJob:
    kind = "Complete" if ok else "Failed"
    job = {"metadata": {"name": name}, "status": {"conditions": [{"type": kind, "status": "True"}]}}
    pod = {
        "metadata": {"name": f"{name}-x", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"containerStatuses": [{"name": "c", "state": {"terminated": {"message": message}}}]},
    }
    return ObservedJob(job, (pod,))


def report(passed: bool = True) -> str:
    step = StepResult.passed("format", "ok") if passed else StepResult.failed("format", "not ONNX")
    return ValidationReport(
        model="asr", format="onnx", steps=[step], metrics=Metrics(wer=0.1), required_steps=["format"]
    ).termination_message()


def quantized(accepted: bool = True) -> str:
    return QuantizationReport(
        model="asr",
        mode="dynamic-int8",
        accepted=accepted,
        message="accepted" if accepted else "WER rose too far",
        float_wer=0.1,
        quantized_wer=0.101,
        max_wer_increase=0.01,
        output_uri=QUANTIZE["outputUri"],
        output_digest="9" * 64,
    ).termination_message()


def test_an_invalid_spec_fails_once_and_runs_nothing() -> None:
    plan = plan_invalid_spec(STTModelStatus(), "invalid STTModel asr: spec.io: required")
    assert plan.status.phase == "Failed" and plan.apply == [] and plan.requeue_after is None
    assert plan.conditions == [ConditionUpdate("Ready", "False", "InvalidSpec", plan.events[0].message)]
    assert [e.reason for e in plan.events] == ["InvalidSpec"]
    again = STTModelStatus.model_validate({"conditions": [cond("Ready", "False", "InvalidSpec")]})
    assert plan_invalid_spec(again, "still").events == []  # no transition, no Event


def test_a_render_failure_stops_before_any_job() -> None:
    refused = replace(make(spec()), config_text="", config_error="no such backend")
    plan = plan_sttmodel(refused)  # no Job observed: none is looked at
    assert plan.apply == [] and plan.status.phase == "Failed" and plan.requeue_after is None
    assert plan.conditions == [
        ConditionUpdate("Rendered", "False", "RenderFailed", "no such backend"),
        ConditionUpdate("Ready", "False", "RenderFailed", "Triton configuration: no such backend"),
    ]
    assert plan.events == [EventUpdate("Warning", "RenderFailed", "no such backend")]
    # A Job stage left running by an earlier reconcile still asks for the backstop look.
    stale = plan_sttmodel(
        replace(
            make(spec(), [cond("Validated", "Unknown", "ValidationStarted")]), config_error="no such backend"
        )
    )
    assert stale.requeue_after == 30.0


def test_validation_disabled_is_ready_without_a_job() -> None:
    inp = make(spec(validation={"enabled": False}))
    assert stage_jobs(inp) == {}
    plan = plan_sttmodel(inp)
    assert [o["kind"] for o in plan.apply] == ["ConfigMap"]
    assert latest(plan) == {
        "Rendered": ("True", "ConfigRendered"),
        "Validated": ("True", "ValidationDisabled"),
        "Ready": ("True", "ModelReady"),
    }
    # Rendered and Ready in one reconcile: one Event saying both.
    assert [(e.reason, e.message) for e in plan.events] == [
        (
            "ModelReady",
            "model asr is ready to deploy; rendered Triton config.pbtxt in ConfigMap asr-triton-config",
        )
    ]
    assert plan.requeue_after is None
    assert status_changes(inp.status, plan.status) == {
        "phase": "Ready",
        "observedGeneration": 1,
        "tritonConfigMap": "asr-triton-config",
    }


def test_an_absent_job_is_created_placed_and_announced() -> None:
    inp = make(spec())
    (manifest,) = stage_jobs(inp).values()
    name = manifest["metadata"]["name"]
    assert name == jobs.job_name("asr", "validate", spec())
    assert manifest["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "jobs"}
    plan = plan_sttmodel(observed(inp, validate=ObservedJob(None)))
    assert [o["metadata"]["name"] for o in plan.apply] == ["asr-triton-config", name]
    assert plan.apply[1] == manifest
    assert latest(plan)["Validated"] == ("Unknown", "ValidationStarted")
    assert latest(plan)["Ready"] == ("False", "ValidationPending")
    assert plan.status.phase == "Validating" and plan.requeue_after == 30.0
    assert plan.events[-1] == EventUpdate("Normal", "ValidationStarted", f"started Job {name}")


def test_a_running_job_is_waited_for_without_an_event() -> None:
    inp = make(spec(), [cond("Rendered", "True", "ConfigRendered"), cond("Validated", "Unknown", "x")])
    name = jobs.job_name("asr", "validate", spec())
    plan = plan_sttmodel(observed(inp, validate=ObservedJob({"metadata": {"name": name}, "status": {}})))
    assert [o["kind"] for o in plan.apply] == ["ConfigMap"]
    assert (
        ConditionUpdate("Validated", "Unknown", "ValidationStarted", f"Job {name} is running")
        in plan.conditions
    )
    assert plan.events == [] and plan.requeue_after == 30.0


def test_a_passed_job_becomes_typed_status_and_makes_the_model_ready() -> None:
    inp = make(spec())
    name = jobs.job_name("asr", "validate", spec())
    plan = plan_sttmodel(observed(inp, validate=finished_job(name, report())))
    validation = plan.status.validation
    assert validation is not None and validation.job_name == name and validation.wer == 0.1
    assert validation.completed_at == "2026-12-04T12:00:00Z"
    assert latest(plan)["Validated"] == ("True", "ValidationPassed")
    assert latest(plan)["Ready"] == ("True", "ModelReady")
    assert [e.reason for e in plan.events] == ["ValidationPassed", "ModelReady"]  # ModelReady says rendered
    assert plan.status.phase == "Ready" and plan.requeue_after is None
    changes = status_changes(inp.status, plan.status)
    assert changes["validation"]["jobName"] == name and changes["validation"]["completedAt"]


def test_a_failed_job_fails_the_model_with_its_reason() -> None:
    inp = make(spec())
    name = jobs.job_name("asr", "validate", spec())
    plan = plan_sttmodel(observed(inp, validate=finished_job(name, report(passed=False), ok=False)))
    assert latest(plan)["Validated"] == ("False", "ValidationFailed")
    assert plan.conditions[-1] == ConditionUpdate("Ready", "False", "ValidationFailed", "format: not ONNX")
    assert plan.status.phase == "Failed" and plan.requeue_after is None
    assert plan.events[-1] == EventUpdate("Warning", "ValidationFailed", "format: not ONNX")


def test_a_verdict_for_this_generation_is_final() -> None:
    passed = [cond("Rendered", "True", "ConfigRendered"), cond("Validated", "True", "ValidationPassed")]
    inp = make(spec(), passed)
    assert stage_jobs(inp) == {}  # nothing to look for: the Job may be gone
    plan = plan_sttmodel(inp)
    assert latest(plan) == {"Rendered": ("True", "ConfigRendered"), "Ready": ("True", "ModelReady")}
    assert plan.events == [EventUpdate("Normal", "ModelReady", "model asr is ready to deploy")]
    # The same verdict for an older generation: the edited spec is validated again.
    older = make(spec(), passed, generation=2)
    assert list(stage_jobs(older)) == ["validate"]


def test_a_job_that_was_not_looked_for_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="was not looked for"):
        plan_sttmodel(make(spec()))


def test_quantization_without_an_output_uri_is_refused_quietly() -> None:
    s = spec(quantization={"enabled": True})
    inp = make(s, [cond("Validated", "True", "ValidationPassed")])
    assert stage_jobs(inp) == {}
    plan = plan_sttmodel(inp)
    assert latest(plan)["Quantized"] == ("False", "InvalidSpec")
    assert "InvalidSpec" not in [e.reason for e in plan.events]
    assert [o["kind"] for o in plan.apply] == ["ConfigMap"]


def test_quantization_runs_only_once_validated() -> None:
    s = spec(quantization=QUANTIZE)
    inp = make(s)
    assert list(stage_jobs(inp)) == ["validate", "quantize"]
    plan = plan_sttmodel(observed(inp, validate=ObservedJob(None), quantize=ObservedJob(None)))
    assert [o["kind"] for o in plan.apply] == ["ConfigMap", "Job"]  # the validate Job only
    assert "Quantized" not in latest(plan)


def test_an_accepted_quantization_creates_the_derived_model_once() -> None:
    s = spec(quantization=QUANTIZE)
    inp = make(s, [cond("Validated", "True", "ValidationPassed")])
    name = jobs.job_name("asr", "quantize", s)
    plan = plan_sttmodel(observed(inp, quantize=finished_job(name, quantized())))
    quantization = plan.status.quantization
    assert quantization is not None and quantization.job_name == name
    assert quantization.output_digest == "9" * 64
    derived = plan.apply[-1]
    assert derived["kind"] == "STTModel" and derived["metadata"]["name"] == "asr-int8"
    assert derived["spec"]["source"] == {"uri": QUANTIZE["outputUri"], "sha256": "9" * 64}
    assert plan.status.quantized_model == "asr-int8"
    assert [e.reason for e in plan.events][-2:] == ["QuantizationPassed", "QuantizedModelCreated"]
    assert plan.events[-1].message == "created STTModel asr-int8 (dynamic-int8)"
    assert plan.requeue_after is None

    # Settled: the verdict is in, the derived model is re-applied without a new Event.
    settled = make(
        s,
        [cond("Validated", "True", "ValidationPassed"), cond("Quantized", "True", "QuantizationPassed")],
        quantization=QuantizationStatus(output_digest="9" * 64, job_name=name).to_dict(),
        quantizedModel="asr-int8",
    )
    again = plan_sttmodel(settled)
    assert [o["kind"] for o in again.apply] == ["ConfigMap", "STTModel"]
    assert "QuantizedModelCreated" not in [e.reason for e in again.events]
    assert "quantizedModel" not in status_changes(settled.status, again.status)


def test_a_rejected_quantization_creates_no_model() -> None:
    s = spec(quantization=QUANTIZE)
    inp = make(s, [cond("Validated", "True", "ValidationPassed")])
    name = jobs.job_name("asr", "quantize", s)
    plan = plan_sttmodel(observed(inp, quantize=finished_job(name, quantized(accepted=False))))
    assert latest(plan)["Quantized"] == ("False", "QuantizationFailed")
    assert [o["kind"] for o in plan.apply] == ["ConfigMap"] and plan.status.quantized_model is None
    assert plan.events[-1].type == "Warning"
    assert latest(plan)["Ready"] == ("True", "ModelReady")  # the float model still serves


def test_an_old_condition_list_is_what_transitions_are_read_against() -> None:
    old = [Condition(type="Rendered", status="True", reason="ConfigRendered")]
    inp = make(spec(validation={"enabled": False}), [c.model_dump(by_alias=True) for c in old])
    plan = plan_sttmodel(inp)
    assert "ConfigRendered" not in [e.reason for e in plan.events]
