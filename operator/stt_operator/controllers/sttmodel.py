"""STTModel reconciler: a catalogue entry. It renders the Triton model configuration into a
ConfigMap, runs the validation Job (and the quantization Job when asked), reports the results
in status, and never runs serving pods.

Parse, observe (the Jobs `catalog/planner.py: stage_jobs` names, and the pods of a finished
one), plan (`plan_sttmodel`, pure), apply (the manifests in order, then status and Events).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import kopf

from stt_operator.api import STTModel
from stt_operator.api.common import SpecError
from stt_operator.api.sttmodel import STTModelStatus
from stt_operator.artifacts import jobs
from stt_operator.builders.modelconfig import triton_model_name
from stt_operator.catalog.planner import (
    JobSettings,
    ObservedJob,
    STTModelInput,
    STTModelPlan,
    plan_invalid_spec,
    plan_sttmodel,
    stage_jobs,
)
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.looks import model_analytics
from stt_operator.controllers.status import StatusWriter, status_changes
from stt_operator.observability import track_reconcile
from stt_operator.triton.config import render_for_model

log = logging.getLogger(__name__)


def reconcile(body: Mapping[str, Any], patch: kopf.Patch, ctx: OperatorContext) -> float | None:
    """Returns when to look again: a running Job reports through watch events, this is only a
    backstop; a settled model waits for a change."""
    writer = StatusWriter(body)
    meta = body["metadata"]
    with track_reconcile("STTModel"):
        # Only the spec can be invalid: a status value an older operator wrote is left out.
        status, ignored = STTModelStatus.parse_lenient(body.get("status"))
        if ignored:
            log.warning("%s/%s: ignoring status the API rejects: %s", *_where(meta), ", ".join(ignored))
        try:
            model = STTModel.from_body({**body, "status": None})
        except SpecError as exc:
            _write(writer, status, plan_invalid_spec(status, str(exc)), patch)
            return None
        settings = ctx.settings
        try:
            config_text, config_error = render_for_model(triton_model_name(model.name), model.spec), None
        except ValueError as exc:
            config_text, config_error = "", str(exc)
        inp = STTModelInput(
            model=model,
            spec=body.get("spec") or {},
            status=status,
            now=writer.now,
            settings=JobSettings(
                image=settings.jobs_image,
                triton_image=settings.triton_image,
                required_steps=tuple(settings.validation_required_steps),
                cpu=settings.job_cpu,
                memory=settings.job_memory,
                placement=settings.jobs_placement,
            ),
            running_requeue_s=settings.reconcile_interval_s * 3,
            config_text=config_text,
            config_error=config_error,
        )
        plan = plan_sttmodel(replace(inp, jobs=_observe(ctx, inp)))
        for manifest in plan.apply:
            ctx.kube.apply(manifest)
        _write(writer, status, plan, patch)
    return plan.requeue_after


def _where(meta: Mapping[str, Any]) -> tuple[str, str]:
    return meta.get("namespace", ""), meta.get("name", "")


def _observe(ctx: OperatorContext, inp: STTModelInput) -> dict[str, ObservedJob]:
    """Each stage's Job by its expected name; a finished one's pods carry its verdict."""
    namespace, observed = inp.model.namespace, {}
    for manifest in stage_jobs(inp).values():
        name = manifest["metadata"]["name"]
        job = ctx.kube.get("batch/v1", "Job", name, namespace)
        finished = job is not None and jobs.job_finished(job)[0]
        pods = ctx.kube.list("v1", "Pod", namespace, {"job-name": name}) if finished else []
        observed[name] = ObservedJob(job, tuple(pods))
    return observed


def _write(writer: StatusWriter, old: STTModelStatus, plan: STTModelPlan, patch: kopf.Patch) -> None:
    writer.apply_conditions(plan.conditions)
    writer.set(**status_changes(old, plan.status))
    for event in plan.events:
        writer.event(event.type, event.reason, event.message)
    writer.commit(patch)


def refresh_analytics(body: Mapping[str, Any], patch: kopf.Patch, ctx: OperatorContext) -> None:
    """Summarise the model's live performance from Prometheus into `status.analytics`; no answer
    leaves the last summary in place (an outage must not erase what was known)."""
    analytics = model_analytics(ctx, body)
    if analytics and analytics != (body.get("status") or {}).get("analytics"):
        patch.status["analytics"] = analytics
