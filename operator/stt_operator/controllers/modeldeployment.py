"""ModelDeployment reconciler: the serving side of one endpoint.

Observe (the referenced or selected STTModel, the revisions' Deployments), plan with the pure
planners in rollout/ (history requests, selection, the strategy, the evaluator), apply with
controllers/apply.py in a safe order (objects, then route, then deletions) and record
everything in status.
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
    ModelDeploymentStatus,
)
from stt_operator.builders.metadata import LABEL_DEPLOYMENT, owner_reference
from stt_operator.builders.serving import Revision, model_digest
from stt_operator.controllers.apply import (
    apply_evaluator,
    apply_history,
    apply_objects,
    apply_plan,
    apply_waiting,
    write_events,
)
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.looks import capacity_observer, plan_with_looks
from stt_operator.controllers.status import StatusWriter
from stt_operator.observability import record_rollout, track_reconcile
from stt_operator.rollout.evaluation import plan_evaluator
from stt_operator.rollout.history import plan_history_requests
from stt_operator.rollout.objects import Endpoint, endpoint_objects
from stt_operator.rollout.plan import observed_revisions, revision_models
from stt_operator.rollout.selection import (
    ModelBlocker,
    model_blocker,
    model_first_look_pending,
    plan_selection,
)
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


def reconcile(body: Mapping[str, Any], patch: kopf.Patch, ctx: OperatorContext) -> float | None:
    """Returns when to look again (seconds), or None when only a change elsewhere matters."""
    writer = StatusWriter(body)
    with track_reconcile("ModelDeployment"):
        try:
            # Only the spec can be invalid: the status is read leniently below, so a value an
            # older operator wrote there does not fail an endpoint whose spec is fine.
            md = ModelDeployment.from_body({**body, "status": None})
        except SpecError as exc:
            apply_waiting(writer, ModelBlocker("InvalidSpec", str(exc), PHASE_FAILED))
            writer.commit(patch)
            return None
        md.status, ignored = ModelDeploymentStatus.parse_lenient(body.get("status"))
        if ignored:
            log.warning(
                "%s/%s: ignoring status the API rejects: %s", md.namespace, md.name, ", ".join(ignored)
            )
        requeue = _reconcile_valid(md, body, patch, writer, ctx)
        _count(md, writer)
        writer.commit(patch)
    return requeue


def _count(md: ModelDeployment, writer: StatusWriter) -> None:
    phase = writer.fields.get("phase", writer.old.get("phase"))
    reasons = {e.reason for e in writer.events}
    record_rollout(
        md.namespace,
        md.name,
        in_flight=phase in (PHASE_PROGRESSING, PHASE_PAUSED),
        promoted="Promoted" in reasons,
        rolled_back=bool(reasons & {"RolledBack", REASON_MONITORING_ROLLBACK}),
    )


def _reconcile_valid(
    md: ModelDeployment,
    body: Mapping[str, Any],
    patch: kopf.Patch,
    writer: StatusWriter,
    ctx: OperatorContext,
) -> float | None:
    spec, name, namespace = md.spec, md.name, md.namespace
    annotations = body["metadata"].get("annotations") or {}

    def get_model(model_name: str) -> dict[str, Any] | None:
        return ctx.kube.get(STTMODEL_API, "STTModel", model_name, namespace)

    def digest(model_name: str) -> str | None:
        found = get_model(model_name)
        return model_digest(found) if found is not None else None

    limit = spec.rollback.revision_history_limit
    history = plan_history_requests(
        annotations, md.status, spec.model.name if spec.model else None, limit, digest
    )
    status = apply_history(patch, writer, md.status, history)
    if spec.model is not None:
        model_name = spec.model.name
    else:
        assert spec.selector is not None
        listed = ctx.kube.list(STTMODEL_API, "STTModel", namespace, spec.selector.match_labels)
        selected = plan_selection(spec, status, listed, namespace)
        if isinstance(selected, ModelBlocker):
            apply_waiting(writer, selected)
            return None  # a new or changed STTModel wakes this endpoint
        write_events(writer, [selected.event] if selected.event else [])
        writer.set(selectedModel=selected.model)
        model_name = selected.model
    model = get_model(model_name)
    # Nothing to say yet (unless a history request above has an Event to post).
    if not body.get("status") and not writer.events and model_first_look_pending(model, writer.now):
        writer.withhold()
        return WAITING_REQUEUE_S  # a backstop: the model's first status wakes this endpoint
    # What Git declares, next to stableModel (what serves): they differ while a rollout runs.
    writer.set(declaredModel=model_name)
    blocked = model_blocker(model_name, namespace, model, spec)
    if blocked is not None:
        apply_waiting(writer, blocked)
        return WAITING_REQUEUE_S if blocked.phase == PHASE_PENDING else None  # Failed: a change wakes it
    assert model is not None

    desired = Revision(model_name, model_digest(model))
    # An ABTest takes the route with an annotation; status.heldBy shows it to people.
    status.held_by = annotations.get(ANNOTATION_HELD_BY) or None
    writer.set(heldBy=status.held_by)
    deployments = ctx.kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: name}, cached=True)
    observed = observed_revisions(deployments)
    endpoint = Endpoint(name, namespace, owner_reference(body), spec, ctx.settings.images())
    capacity = None
    if ctx.settings.capacity_preflight and needs_preflight(status, desired, observed, status.held_by):
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

    by_ratio = spec.routing == "replica-ratio" and plan.route is not None
    pods = ctx.kube.list("v1", "Pod", namespace, {LABEL_DEPLOYMENT: name}) if by_ratio else []
    objects = endpoint_objects(
        endpoint, plan, model, observed, revision_models(observed, desired, status), pods
    )
    apply_objects(ctx.kube, name, namespace, objects)
    apply_plan(patch, writer, md.status, plan, looked, objects.address)
    evaluator = plan_evaluator(body, endpoint, plan.status, deployments, observed, model, get_model)
    apply_evaluator(ctx.kube, name, namespace, evaluator)
    return plan.requeue_after
