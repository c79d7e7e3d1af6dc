"""STTModel reconciler: a catalogue entry. It renders the Triton model configuration into a
ConfigMap, runs the validation Job (and the quantization Job when asked), reports the results
in status, and never runs serving pods.

Each Job's name carries a hash of the spec, so an edited spec gets a new Job and an unchanged
one is never validated twice; a result is final for the generation its condition records.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from stt_operator.api import STTModel
from stt_operator.api.common import SpecError, get_condition, iso, utcnow
from stt_operator.api.sttmodel import PHASE_FAILED, PHASE_READY, PHASE_VALIDATING
from stt_operator.artifacts import jobs
from stt_operator.builders.metadata import owner_reference
from stt_operator.builders.modelconfig import model_config_map, model_config_map_name, triton_model_name
from stt_operator.builders.placement import place
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.looks import model_analytics
from stt_operator.controllers.status import StatusWriter
from stt_operator.observability import track_reconcile
from stt_operator.triton.config import render_for_model

log = logging.getLogger(__name__)

STTMODEL_API = "stt.dev/v1alpha1"
_EVENT = {"validate": ("ValidationStarted", "Validating"), "quantize": ("QuantizationStarted", "Quantizing")}


def reconcile(body: Mapping[str, Any], patch: kopf.Patch, ctx: OperatorContext) -> float | None:
    """Returns when to look again: a running Job reports through watch events, this is only a
    backstop; a settled model waits for a change."""
    writer = StatusWriter(body)
    with track_reconcile("STTModel"):
        try:
            model = STTModel.from_body(body)
        except SpecError as exc:
            writer.condition("Ready", "False", "InvalidSpec", str(exc))
            writer.set(phase=PHASE_FAILED)
            if writer.changed("Ready"):
                writer.event("Warning", "InvalidSpec", str(exc))
            writer.commit(patch)
            return None
        if _render(body, model, writer, ctx):
            _validate_and_quantize(body, model, writer, ctx)
        writer.commit(patch)
    running = any(
        c.get("status") == "Unknown" for c in writer.conditions if c.get("type") in ("Validated", "Quantized")
    )
    return ctx.settings.reconcile_interval_s * 3 if running else None


def _render(body: Mapping[str, Any], model: STTModel, writer: StatusWriter, ctx: OperatorContext) -> bool:
    meta = body["metadata"]
    try:
        config_text = render_for_model(triton_model_name(meta["name"]), model.spec)
    except ValueError as exc:
        writer.condition("Rendered", "False", "RenderFailed", str(exc))
        writer.condition("Ready", "False", "RenderFailed", f"Triton configuration: {exc}")
        writer.set(phase=PHASE_FAILED)
        if writer.changed("Rendered"):
            writer.event("Warning", "RenderFailed", str(exc))
        return False
    config_map = model_config_map(
        meta["name"],
        meta["namespace"],
        config_text,
        triton_model_name=triton_model_name(meta["name"]),
        owner=owner_reference(body),
    )
    ctx.kube.apply(config_map)
    writer.set(tritonConfigMap=model_config_map_name(meta["name"]))
    where = f"config.pbtxt in ConfigMap {config_map['metadata']['name']}"
    writer.condition("Rendered", "True", "ConfigRendered", where)
    if writer.changed("Rendered"):
        writer.event("Normal", "ConfigRendered", f"rendered Triton {where}")
    return True


def _validate_and_quantize(
    body: Mapping[str, Any], model: STTModel, writer: StatusWriter, ctx: OperatorContext
) -> None:
    spec = body.get("spec") or {}
    validation = model.spec.validation
    if validation is not None and not validation.enabled:
        writer.condition(
            "Validated", "True", "ValidationDisabled", "validation disabled in spec.validation.enabled"
        )
    else:
        _run_job_stage(body, "validate", writer, ctx)

    validated = get_condition(writer.conditions, "Validated") or {}
    if validated.get("status") == "True":
        writer.condition("Ready", "True", "ModelReady", "rendered and validated; ready to deploy")
        writer.set(phase=PHASE_READY)
        if writer.changed("Ready"):
            writer.event("Normal", "ModelReady", f"model {body['metadata']['name']} is ready to deploy")
        quantization = model.spec.quantization
        if quantization is not None and quantization.enabled:
            if not quantization.output_uri:
                message = "spec.quantization.outputUri is required to keep the quantized artifact"
                writer.condition("Quantized", "False", "InvalidSpec", message)
            else:
                _run_job_stage(body, "quantize", writer, ctx)
                _ensure_derived_model(body, spec, writer, ctx)
    elif validated.get("status") == "False":
        writer.condition(
            "Ready", "False", validated.get("reason", "ValidationFailed"), validated.get("message", "")
        )
        writer.set(phase=PHASE_FAILED)
    else:
        writer.condition("Ready", "False", "ValidationPending", validated.get("message", ""))
        writer.set(phase=PHASE_VALIDATING)


def _run_job_stage(body: Mapping[str, Any], kind: str, writer: StatusWriter, ctx: OperatorContext) -> None:
    """Ensure this generation's Job exists; once it finished, turn its result into status."""
    meta = body["metadata"]
    condition_type = jobs.CONDITION[kind]
    current = get_condition(writer.conditions, condition_type) or {}
    if current.get("status") in ("True", "False") and current.get("observedGeneration") == writer.generation:
        return  # this generation's verdict is in; Jobs may since have been garbage-collected
    manifest = jobs.validation_job(
        meta["name"],
        meta["namespace"],
        body.get("spec") or {},
        ctx.settings.jobs_image,
        owner_reference(body),
        kind=kind,
        triton_image=ctx.settings.triton_image if kind == "validate" else None,
        required=ctx.settings.validation_required_steps,
        cpu=ctx.settings.job_cpu,
        memory=ctx.settings.job_memory,
    )
    name = manifest["metadata"]["name"]
    job = ctx.kube.get("batch/v1", "Job", name, meta["namespace"])
    if job is None:
        ctx.kube.apply(place(manifest, ctx.settings.jobs_placement))
        reason, _ = _EVENT[kind]
        writer.condition(condition_type, "Unknown", reason, f"Job {name} is running")
        writer.event("Normal", reason, f"started Job {name}")
        return
    finished, _, _ = jobs.job_finished(job)
    pods = ctx.kube.list("v1", "Pod", meta["namespace"], {"job-name": name}) if finished else []
    result = jobs.job_verdict(job, pods, kind, body.get("spec") or {}, ctx.settings.validation_required_steps)
    if result is None:
        writer.condition(condition_type, "Unknown", _EVENT[kind][0], f"Job {name} is running")
        return
    status_key = "validation" if kind == "validate" else "quantization"
    section = dict(result.status.get(status_key) or {})
    if kind == "validate":
        section.update(jobName=name, completedAt=iso(utcnow()))
        if "artifact" in result.status:
            writer.set(artifact=result.status["artifact"])
    else:
        section.update(jobName=name)
    writer.set(**{status_key: section})
    writer.condition(condition_type, "True" if result.ok else "False", result.reason, result.message)
    if writer.changed(condition_type):
        writer.event("Normal" if result.ok else "Warning", result.reason, result.message)


def _ensure_derived_model(
    body: Mapping[str, Any], spec: Mapping[str, Any], writer: StatusWriter, ctx: OperatorContext
) -> None:
    """An accepted quantized artifact becomes its own STTModel, owned by the float model."""
    quantized = get_condition(writer.conditions, "Quantized") or {}
    section = writer.fields.get("quantization") or writer.old.get("quantization") or {}
    digest = section.get("outputDigest")
    if quantized.get("status") != "True" or not digest:
        return
    derived = jobs.derived_model_object(body, digest)
    name = derived["metadata"]["name"]
    ctx.kube.apply(derived)
    writer.set(quantizedModel=name)
    if writer.old.get("quantizedModel") != name:
        mode = (spec.get("quantization") or {}).get("mode", "dynamic-int8")
        writer.event("Normal", "QuantizedModelCreated", f"created STTModel {name} ({mode})")


def refresh_analytics(body: Mapping[str, Any], patch: kopf.Patch, ctx: OperatorContext) -> None:
    """Summarise the model's live performance from Prometheus into `status.analytics`; no answer
    leaves the last summary in place (an outage must not erase what was known)."""
    analytics = model_analytics(ctx, body)
    if analytics and analytics != (body.get("status") or {}).get("analytics"):
        patch.status["analytics"] = analytics
