"""Carry out what the ModelDeployment planners decided: on the cluster, in the object's patch
and in its status writer (controllers/modeldeployment.py observes and plans).

The order on the cluster is what keeps the endpoint serving: a revision's objects exist and
are scaled before the route names them, and nothing is deleted until the route has left it
(rollout/objects.py: EndpointObjects).
"""

from __future__ import annotations

from collections.abc import Iterable

import kopf

from stt_operator.analysis.model import AnalysisResult
from stt_operator.api.modeldeployment import ModelDeploymentStatus
from stt_operator.controllers.looks import analysis_availability
from stt_operator.controllers.status import StatusWriter, status_changes
from stt_operator.evaluator.manifests import evaluator_name
from stt_operator.observability import record_route
from stt_operator.rollout.evaluation import EvaluatorChange
from stt_operator.rollout.history import ANNOTATION_UNDO, HistoryPlan
from stt_operator.rollout.objects import EndpointObjects
from stt_operator.rollout.plan import EndpointPlan, EventUpdate
from stt_operator.rollout.selection import ModelBlocker, waiting
from stt_operator.services.kube import Kube


def apply_objects(kube: Kube, name: str, namespace: str, objects: EndpointObjects) -> None:
    """Serving objects, replica changes, the route (and its weights as metrics), deletions."""
    kube.apply_all(objects.serving)  # each revision's Deployment and Service: independent
    for deployment_name, replicas in objects.scale.items():
        kube.scale(deployment_name, namespace, replicas)
    for manifest in objects.routing:
        kube.apply(manifest)
    if objects.weights is not None:
        record_route(namespace, name, objects.weights)
    for object_name in objects.delete:
        kube.delete("apps/v1", "Deployment", object_name, namespace)
        kube.delete("v1", "Service", object_name, namespace)


def apply_evaluator(kube: Kube, name: str, namespace: str, change: EvaluatorChange) -> None:
    for obj in change.apply:
        kube.apply(obj)
    if change.remove:
        for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap")):
            kube.delete(api_version, kind, evaluator_name(name), namespace)


def apply_history(
    patch: kopf.Patch, writer: StatusWriter, status: ModelDeploymentStatus, plan: HistoryPlan
) -> ModelDeploymentStatus:
    """Retry / undo as rollout/history.py planned it; returns the status the rest of the
    reconcile plans from (a copy of `status` with the edited history)."""
    edited = status.model_copy(deep=True)
    clear_annotations(patch, plan.consumed)
    write_events(writer, plan.events)
    if plan.model is not None:
        patch.spec["model"] = {"name": plan.model}
    if plan.revisions is not None:
        edited.revisions = plan.revisions
        writer.set(**status_changes(status, edited))
    return edited


def apply_plan(
    patch: kopf.Patch,
    writer: StatusWriter,
    status: ModelDeploymentStatus,
    plan: EndpointPlan,
    looked: AnalysisResult | None,
    address: str | None,
) -> None:
    """A rollout plan's annotations, conditions, status (the difference from `status`, as read)
    and Events; `looked`: this reconcile's analysis look, `address`: status.endpoint when the
    route was written."""
    clear_annotations(patch, plan.consumed)
    if plan.undo_to_revision is not None:  # monitoring's rollback: the same path as `kubectl stt undo`
        patch.metadata.annotations[ANNOTATION_UNDO] = str(plan.undo_to_revision)
    if address is not None:
        writer.set(endpoint=address)
    writer.apply_conditions(plan.conditions)
    meta = writer.body["metadata"]
    analysis_availability(writer, meta["namespace"], meta["name"], looked)
    writer.set(**status_changes(status, plan.status))
    write_events(writer, plan.events)


def clear_annotations(patch: kopf.Patch, annotations: Iterable[str]) -> None:
    """A person's request is acted on once: its annotation goes."""
    for annotation in annotations:
        patch.metadata.annotations[annotation] = None


def write_events(writer: StatusWriter, events: Iterable[EventUpdate]) -> None:
    for event in events:
        writer.event(event.type, event.reason, event.message)


def apply_waiting(writer: StatusWriter, blocker: ModelBlocker) -> None:
    """Invalid spec, no model selected, a model not servable yet: one outcome (rollout/selection.py)."""
    outcome = waiting(blocker, writer.old_condition("Ready"))
    writer.apply_conditions(outcome.conditions)
    writer.set(phase=outcome.phase)
    write_events(writer, outcome.events)
