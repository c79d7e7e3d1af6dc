"""The STTModel reconcile as a pure plan: render the Triton configuration into a ConfigMap, run
the validation Job (and the quantization Job when asked), turn a finished Job's verdict into
status, and create the quantized model's own STTModel.

Each Job's name carries a hash of the spec as written, so an edited spec gets a new Job and an
unchanged one is never validated twice; a result is final for the generation its condition
records. The controller (controllers/sttmodel.py) asks `stage_jobs` which Jobs to look for,
gets them (and the pods of a finished one), calls `plan_sttmodel`, and applies the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stt_operator.api.common import Condition, condition_moved, iso
from stt_operator.api.sttmodel import (
    PHASE_FAILED,
    PHASE_READY,
    PHASE_VALIDATING,
    REASON_CONFIG_RENDERED,
    REASON_INVALID_SPEC,
    REASON_MODEL_READY,
    REASON_QUANTIZATION_STARTED,
    REASON_RENDER_FAILED,
    REASON_VALIDATION_FAILED,
    REASON_VALIDATION_STARTED,
    ArtifactStatus,
    QuantizationStatus,
    STTModel,
    STTModelStatus,
    ValidationStatus,
)
from stt_operator.artifacts import jobs
from stt_operator.builders.derived import derived_model_object
from stt_operator.builders.metadata import owner_reference
from stt_operator.builders.modelconfig import model_config_map, model_config_map_name, triton_model_name
from stt_operator.builders.placement import Placement, place
from stt_operator.rollout.plan import ConditionUpdate, EventUpdate

STAGES = ("validate", "quantize")  # in the order they run
STARTED = {"validate": REASON_VALIDATION_STARTED, "quantize": REASON_QUANTIZATION_STARTED}
JOB_CONDITIONS = tuple(jobs.CONDITION[kind] for kind in STAGES)


@dataclass(frozen=True)
class JobSettings:
    """The operator settings the Jobs are built from (plain values: no settings import here)."""

    image: str
    triton_image: str  # the validate Job's Triton load check
    required_steps: tuple[str, ...]
    cpu: str
    memory: str
    placement: Placement


@dataclass(frozen=True)
class ObservedJob:
    """A stage's Job as found under its expected name (None: there is none)."""

    job: Mapping[str, Any] | None
    pods: tuple[Mapping[str, Any], ...] = ()  # listed only once the Job finished


@dataclass(frozen=True)
class STTModelInput:
    model: STTModel  # the parsed spec; its status is `status`
    spec: Mapping[str, Any]  # the spec as written: its hash names the Jobs
    status: STTModelStatus  # parsed leniently
    now: datetime
    settings: JobSettings
    running_requeue_s: float  # when to look again while a Job runs
    # config.pbtxt as the controller rendered it (triton/config.py: render_for_model), or why
    # it could not be: rendering uses Triton's protobuf schema, which ships in tritonclient, a
    # package this pure module must not import.
    config_text: str = ""
    config_error: str | None = None
    jobs: Mapping[str, ObservedJob] = field(default_factory=dict)  # by Job name (see stage_jobs)


@dataclass
class STTModelPlan:
    status: STTModelStatus  # the whole new status (conditions: see `conditions`)
    conditions: list[ConditionUpdate] = field(default_factory=list)
    events: list[EventUpdate] = field(default_factory=list)
    apply: list[dict[str, Any]] = field(default_factory=list)  # finished manifests, in order
    requeue_after: float | None = None


class _Conditions:
    """This reconcile's condition updates over the old conditions; `set` says whether the
    status or reason moved against the old one (only a transition posts an Event)."""

    def __init__(self, old: Sequence[Condition]) -> None:
        self.old = {c.type: c for c in old}
        self.updates: list[ConditionUpdate] = []

    def set(self, type_: str, status: str, reason: str, message: str) -> bool:
        self.updates.append(ConditionUpdate(type_, status, reason, message))
        return condition_moved(self.old.get(type_), status, reason)

    def get(self, type_: str) -> ConditionUpdate | None:
        latest = next((u for u in reversed(self.updates) if u.type == type_), None)
        before = self.old.get(type_)
        if latest is None and before is not None:
            return ConditionUpdate(before.type, before.status, before.reason, before.message)
        return latest


def _body(inp: STTModelInput) -> dict[str, Any]:
    """The object as the builders take it (owner references, the derived model)."""
    model = inp.model
    return {
        "apiVersion": model.api_version,
        "kind": model.kind or STTModel.KIND,
        "metadata": model.metadata,
        "spec": dict(inp.spec),
    }


def _verdict_in(status: STTModelStatus, kind: str, generation: int) -> bool:
    cond = next((c for c in status.conditions if c.type == jobs.CONDITION[kind]), None)
    return cond is not None and cond.status in ("True", "False") and cond.observed_generation == generation


def stage_jobs(inp: STTModelInput) -> dict[str, dict[str, Any]]:
    """The Job manifest (placed) of each stage that may run this reconcile, by stage: enabled
    and without a verdict for this generation (Jobs may since have been garbage-collected).
    The controller gets each by name before planning."""
    spec, body, settings = inp.model.spec, _body(inp), inp.settings
    wanted = []
    if spec.validation is None or spec.validation.enabled:
        wanted.append("validate")
    if spec.quantization is not None and spec.quantization.enabled and spec.quantization.output_uri:
        wanted.append("quantize")
    out: dict[str, dict[str, Any]] = {}
    for kind in wanted:
        if _verdict_in(inp.status, kind, inp.model.generation):
            continue
        manifest = jobs.validation_job(
            inp.model.name,
            inp.model.namespace,
            inp.spec,
            settings.image,
            owner_reference(body),
            kind=kind,
            triton_image=settings.triton_image if kind == "validate" else None,
            required=settings.required_steps,
            cpu=settings.cpu,
            memory=settings.memory,
        )
        out[kind] = place(manifest, settings.placement)
    return out


def plan_invalid_spec(status: STTModelStatus, message: str) -> STTModelPlan:
    """A spec the API refuses: the model fails, nothing runs, nothing is looked at again."""
    plan = STTModelPlan(status.model_copy(deep=True))
    conditions = _Conditions(status.conditions)
    plan.status.phase = PHASE_FAILED
    if conditions.set("Ready", "False", REASON_INVALID_SPEC, message):
        plan.events.append(EventUpdate("Warning", REASON_INVALID_SPEC, message))
    plan.conditions = conditions.updates
    return plan


def plan_sttmodel(inp: STTModelInput) -> STTModelPlan:
    plan = STTModelPlan(inp.status.model_copy(deep=True))
    plan.status.observed_generation = inp.model.generation
    conditions = _Conditions(inp.status.conditions)
    if _render(inp, plan, conditions):
        _validate_and_quantize(inp, plan, conditions)
    plan.conditions = conditions.updates
    running = any((c := conditions.get(t)) is not None and c.status == "Unknown" for t in JOB_CONDITIONS)
    # A running Job reports through watch events; this is only a backstop.
    plan.requeue_after = inp.running_requeue_s if running else None
    return plan


def _render(inp: STTModelInput, plan: STTModelPlan, conditions: _Conditions) -> bool:
    name, error = inp.model.name, inp.config_error
    if error is not None:
        changed = conditions.set("Rendered", "False", REASON_RENDER_FAILED, error)
        conditions.set("Ready", "False", REASON_RENDER_FAILED, f"Triton configuration: {error}")
        plan.status.phase = PHASE_FAILED
        if changed:
            plan.events.append(EventUpdate("Warning", REASON_RENDER_FAILED, error))
        return False
    config_map = model_config_map(
        name,
        inp.model.namespace,
        inp.config_text,
        triton_model_name=triton_model_name(name),
        owner=owner_reference(_body(inp)),
    )
    plan.apply.append(config_map)
    plan.status.triton_config_map = model_config_map_name(name)
    where = f"config.pbtxt in ConfigMap {config_map['metadata']['name']}"
    if conditions.set("Rendered", "True", REASON_CONFIG_RENDERED, where):
        plan.events.append(EventUpdate("Normal", REASON_CONFIG_RENDERED, f"rendered Triton {where}"))
    return True


def _validate_and_quantize(inp: STTModelInput, plan: STTModelPlan, conditions: _Conditions) -> None:
    spec = inp.model.spec
    manifests = stage_jobs(inp)
    if spec.validation is not None and not spec.validation.enabled:
        message = "validation disabled in spec.validation.enabled"
        conditions.set("Validated", "True", "ValidationDisabled", message)
    else:
        _run_job_stage(inp, "validate", manifests.get("validate"), plan, conditions)

    validated = conditions.get("Validated")
    if validated is not None and validated.status == "True":
        plan.status.phase = PHASE_READY
        if conditions.set("Ready", "True", REASON_MODEL_READY, "rendered and validated; ready to deploy"):
            message = f"model {inp.model.name} is ready to deploy"
            # Rendered and Ready in one reconcile (validation off, or a result already there):
            # one Event that says both, not two writes for one change.
            rendered = [e for e in plan.events if e.reason == REASON_CONFIG_RENDERED]
            if rendered:
                plan.events.remove(rendered[0])
                message = f"{message}; {rendered[0].message}"
            plan.events.append(EventUpdate("Normal", REASON_MODEL_READY, message))
        quantization = spec.quantization
        if quantization is not None and quantization.enabled:
            if not quantization.output_uri:
                message = "spec.quantization.outputUri is required to keep the quantized artifact"
                conditions.set("Quantized", "False", REASON_INVALID_SPEC, message)
            else:
                _run_job_stage(inp, "quantize", manifests.get("quantize"), plan, conditions)
                _ensure_derived_model(inp, plan, conditions)
    elif validated is not None and validated.status == "False":
        plan.status.phase = PHASE_FAILED
        conditions.set("Ready", "False", validated.reason or REASON_VALIDATION_FAILED, validated.message)
    else:
        plan.status.phase = PHASE_VALIDATING
        conditions.set("Ready", "False", "ValidationPending", validated.message if validated else "")


def _run_job_stage(
    inp: STTModelInput,
    kind: str,
    manifest: Mapping[str, Any] | None,
    plan: STTModelPlan,
    conditions: _Conditions,
) -> None:
    """Create this generation's Job if missing; once it finished, turn its result into status."""
    if manifest is None:
        return  # this generation's verdict is in
    condition_type, started = jobs.CONDITION[kind], STARTED[kind]
    name = manifest["metadata"]["name"]
    observed = inp.jobs.get(name)
    if observed is None:
        raise ValueError(f"Job {name} was not looked for: observe every Job stage_jobs names")
    if observed.job is None:
        plan.apply.append(dict(manifest))
        conditions.set(condition_type, "Unknown", started, f"Job {name} is running")
        plan.events.append(EventUpdate("Normal", started, f"started Job {name}"))
        return
    result = jobs.job_verdict(observed.job, observed.pods, kind, inp.spec, inp.settings.required_steps)
    if result is None:
        conditions.set(condition_type, "Unknown", started, f"Job {name} is running")
        return
    if kind == "validate":
        section = {**(result.status.get("validation") or {}), "jobName": name, "completedAt": iso(inp.now)}
        plan.status.validation = ValidationStatus.parse_lenient(section)[0]
        if "artifact" in result.status:
            plan.status.artifact = ArtifactStatus.parse_lenient(result.status["artifact"])[0]
    else:
        section = {**(result.status.get("quantization") or {}), "jobName": name}
        plan.status.quantization = QuantizationStatus.parse_lenient(section)[0]
    if conditions.set(condition_type, "True" if result.ok else "False", result.reason, result.message):
        plan.events.append(EventUpdate("Normal" if result.ok else "Warning", result.reason, result.message))


def _ensure_derived_model(inp: STTModelInput, plan: STTModelPlan, conditions: _Conditions) -> None:
    """An accepted quantized artifact becomes its own STTModel, owned by the float model."""
    quantized = conditions.get("Quantized")
    digest = plan.status.quantization.output_digest if plan.status.quantization else None
    if quantized is None or quantized.status != "True" or not digest:
        return
    derived = derived_model_object(_body(inp), digest)
    name = derived["metadata"]["name"]
    plan.apply.append(derived)
    plan.status.quantized_model = name
    if inp.status.quantized_model != name:
        mode = (inp.spec.get("quantization") or {}).get("mode", "dynamic-int8")
        message = f"created STTModel {name} ({mode})"
        plan.events.append(EventUpdate("Normal", "QuantizedModelCreated", message))
