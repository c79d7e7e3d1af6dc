"""ModelDeployment reconciler: the serving side of one endpoint.

Reads the world (the referenced STTModel, the revisions' Deployments, the route), asks the
pure planner what to do, does it in a safe order (objects, then route, then deletions), and
records everything in status.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from stt_operator.api import ModelDeployment
from stt_operator.api.common import SpecError
from stt_operator.api.modeldeployment import (
    PHASE_FAILED,
    PHASE_PAUSED,
    PHASE_PENDING,
    PHASE_PROGRESSING,
    REASON_MONITORING_ROLLBACK,
    ModelDeploymentSpec,
)
from stt_operator.builders.metadata import LABEL_DEPLOYMENT, owner_reference
from stt_operator.builders.serving import (
    Revision,
    model_digest,
)
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.looks import (
    analysis_availability,
    capacity_observer,
    plan_with_looks,
)
from stt_operator.controllers.status import StatusWriter
from stt_operator.evaluator.manifests import evaluator_name
from stt_operator.observability import (
    PROMOTIONS,
    ROLLBACKS,
    ROLLOUTS_IN_FLIGHT,
    record_route,
    track_reconcile,
)
from stt_operator.rollout.evaluation import evaluator_change, evaluator_wanted
from stt_operator.rollout.history import ANNOTATION_UNDO, plan_history_requests
from stt_operator.rollout.objects import Endpoint, endpoint_objects
from stt_operator.rollout.plan import observed_revisions
from stt_operator.rollout.selection import model_blocker, select_model
from stt_operator.rollout.transitions import (
    ANNOTATION_ABORT,
    ANNOTATION_HELD_BY,
    ANNOTATION_PROMOTE,
    RolloutInput,
    needs_preflight,
)

log = logging.getLogger(__name__)

STTMODEL_API = "stt.dev/v1alpha1"


# Waiting on a model that is missing or not Ready yet: its events normally wake this endpoint,
# but a wake-up that races the first look (seen once under load in CI) must not leave it asleep
# for good, so look again at this pace until the model is there. Settled endpoints still sleep.
WAITING_REQUEUE_S = 5.0


def _wait(writer: StatusWriter, reason: str, message: str, phase: str, warning: bool = False) -> None:
    writer.condition("Ready", "False", reason, message)
    writer.condition("Progressing", "False", reason, message)
    writer.set(phase=phase)
    if writer.changed("Ready"):
        writer.event("Warning" if warning else "Normal", reason, message)


def reconcile(body: Mapping[str, Any], patch: kopf.Patch, ctx: OperatorContext) -> float | None:
    """Returns when to look again (seconds), or None when only a change elsewhere matters."""
    writer = StatusWriter(body)
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    with track_reconcile("ModelDeployment"):
        try:
            md = ModelDeployment.from_body(body)
        except SpecError as exc:
            _wait(writer, "InvalidSpec", str(exc), "Failed", warning=True)
            writer.commit(patch)
            return None
        requeue = _reconcile_valid(md, body, patch, writer, ctx, name, namespace)
        phase = writer.fields.get("phase", (body.get("status") or {}).get("phase"))
        in_flight = phase in (PHASE_PROGRESSING, PHASE_PAUSED)
        ROLLOUTS_IN_FLIGHT.labels(namespace, name).set(1 if in_flight else 0)
        # Export both counters at 0 from the first reconcile: `increase()` in the chart's alerts
        # cannot see a series whose first sample is already 1 (the first rollback would be missed).
        PROMOTIONS.labels(namespace, name)
        ROLLBACKS.labels(namespace, name)
        if any(e.reason == "Promoted" for e in writer.events):
            PROMOTIONS.labels(namespace, name).inc()
        if any(e.reason in ("RolledBack", REASON_MONITORING_ROLLBACK) for e in writer.events):
            ROLLBACKS.labels(namespace, name).inc()
        writer.commit(patch)
    return requeue


def _select(
    ctx: OperatorContext,
    spec: ModelDeploymentSpec,
    body: Mapping[str, Any],
    writer: StatusWriter,
    namespace: str,
) -> str | None:
    """`spec.selector`: the best Ready STTModel, leaving out revisions this endpoint rolled back."""
    assert spec.selector is not None
    history = (body.get("status") or {}).get("revisions") or []
    rolled_back = {h.get("revisionId") for h in history if h.get("outcome") == "RolledBack"}
    models = [
        m
        for m in ctx.kube.list(STTMODEL_API, "STTModel", namespace, spec.selector.match_labels)
        if Revision(m["metadata"]["name"], model_digest(m)).id not in rolled_back
    ]
    selection = select_model(spec.selector, models)
    if selection.best is None:
        message = f"no STTModel in {namespace} fits spec.selector: {selection.explanation}"
        _wait(writer, "NoModelSelected", message[:1000], PHASE_PENDING)
        return None
    if (body.get("status") or {}).get("selectedModel") != selection.best:
        writer.event("Normal", "ModelSelected", selection.explanation[:1000])
    writer.set(selectedModel=selection.best)
    return selection.best


def _history_requests(
    ctx: OperatorContext,
    spec: ModelDeploymentSpec,
    body: Mapping[str, Any],
    patch: kopf.Patch,
    writer: StatusWriter,
    namespace: str,
) -> Mapping[str, Any]:
    """Retry / undo annotations and revisionHistoryLimit (rollout/history.py); returns the body
    the rest of the reconcile plans from (with the edited history)."""

    def digest(model: str) -> str | None:
        found = ctx.kube.get(STTMODEL_API, "STTModel", model, namespace)
        return model_digest(found) if found is not None else None

    status = body.get("status") or {}
    plan = plan_history_requests(
        body["metadata"].get("annotations") or {},
        status,
        spec.model.name if spec.model else None,
        spec.rollback.revision_history_limit,
        digest,
    )
    for annotation in plan.consumed:
        patch.metadata.annotations[annotation] = None
    for event in plan.events:
        writer.event(event.type, event.reason, event.message)
    if plan.model is not None:
        patch.spec["model"] = {"name": plan.model}
    if plan.revisions is None:
        return body
    writer.set(revisions=plan.revisions)
    return {**body, "status": {**status, "revisions": plan.revisions}}


def _reconcile_valid(
    md: ModelDeployment,
    body: Mapping[str, Any],
    patch: kopf.Patch,
    writer: StatusWriter,
    ctx: OperatorContext,
    name: str,
    namespace: str,
) -> float | None:
    spec = md.spec
    body = _history_requests(ctx, spec, body, patch, writer, namespace)
    if spec.model is not None:
        model_name = spec.model.name
    else:
        selected = _select(ctx, spec, body, writer, namespace)
        if selected is None:
            return None  # a new or changed STTModel wakes this endpoint
        model_name = selected
    # What Git declares, next to stableModel (what serves): they differ while a rollout runs.
    writer.set(declaredModel=model_name)
    model = ctx.kube.get(STTMODEL_API, "STTModel", model_name, namespace)
    blocked = model_blocker(model_name, namespace, model, spec)
    if blocked is not None:
        _wait(writer, blocked.reason, blocked.message, blocked.phase, warning=blocked.phase == PHASE_FAILED)
        return WAITING_REQUEUE_S if blocked.phase == PHASE_PENDING else None  # Failed: a change wakes it
    assert model is not None
    desired = Revision(model_name, model_digest(model))
    annotations = body["metadata"].get("annotations") or {}
    # An ABTest takes the route with an annotation; status.heldBy shows it to people.
    held_by = annotations.get(ANNOTATION_HELD_BY) or None
    status = {k: v for k, v in (body.get("status") or {}).items() if k != "heldBy"}
    if held_by:
        status["heldBy"] = held_by
    writer.set(heldBy=held_by)
    deployments = ctx.kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: name}, cached=True)
    observed = observed_revisions(deployments)
    endpoint = Endpoint(
        name,
        namespace,
        owner_reference(body),
        spec,
        ctx.settings.images(),
    )
    capacity = None
    if ctx.settings.capacity_preflight and needs_preflight(status, desired, observed, held_by):
        capacity = capacity_observer(ctx).verdict(*endpoint.first_pods(model, desired))
    smoke = spec.smoke_test.enabled if spec.smoke_test else None
    inputs = RolloutInput(
        desired=desired,
        spec=spec,
        status=status,
        observed=observed,
        now=datetime.now(UTC),
        promote_requested=ANNOTATION_PROMOTE in annotations,
        abort_requested=ANNOTATION_ABORT in annotations,
        capacity=capacity,
        smoke_enabled=ctx.settings.smoke_test_default if smoke is None else smoke,
    )
    plan, looked = plan_with_looks(ctx, md, model, inputs)
    for annotation in plan.consumed:  # a person's request is acted on once
        patch.metadata.annotations[annotation] = None
    if plan.undo_to_revision is not None:  # monitoring's rollback: the same path as `kubectl stt undo`
        patch.metadata.annotations[ANNOTATION_UNDO] = str(plan.undo_to_revision)

    models_by_revision = {rid: o.model for rid, o in observed.items()} | {desired.id: desired.model}
    if status.get("stableRevision"):
        models_by_revision.setdefault(status["stableRevision"], status.get("stableModel") or "")
    by_ratio = spec.routing == "replica-ratio" and plan.route is not None
    pods = ctx.kube.list("v1", "Pod", namespace, {LABEL_DEPLOYMENT: name}) if by_ratio else []
    objects = endpoint_objects(endpoint, plan, model, observed, models_by_revision, pods)
    for manifest in objects.serving:
        ctx.kube.apply(manifest)
    for deployment_name, replicas in objects.scale.items():
        ctx.kube.scale(deployment_name, namespace, replicas)
    for manifest in objects.routing:
        ctx.kube.apply(manifest)
    if objects.weights is not None:
        record_route(namespace, name, objects.weights)
    if objects.address is not None:
        writer.set(endpoint=objects.address)
    for object_name in objects.delete:
        ctx.kube.delete("apps/v1", "Deployment", object_name, namespace)
        ctx.kube.delete("v1", "Service", object_name, namespace)

    writer.apply_conditions(plan.conditions)
    analysis_availability(writer, namespace, name, looked)
    writer.set(**plan.status)
    for event in plan.events:
        writer.event(event.type, event.reason, event.message)
    after = {**status, **plan.status}
    found = any(d["metadata"]["name"] == evaluator_name(name) for d in deployments)
    candidate = observed.get(after.get("canaryRevision") or "")
    serves = candidate is not None and candidate.available
    stable_model = None
    if evaluator_wanted(spec, after) and (serves or found):
        stable_model = ctx.kube.get(STTMODEL_API, "STTModel", after.get("stableModel") or "", namespace)
    change = evaluator_change(
        body,
        spec,
        after,
        candidate_model=model,
        stable_model=stable_model,
        found=found,
        candidate_serves=serves,
        images=endpoint.images,
    )
    for obj in change.apply:
        ctx.kube.apply(obj)
    if change.remove:
        for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap")):
            ctx.kube.delete(api_version, kind, evaluator_name(name), namespace)
    return plan.requeue_after
