"""ModelDeployment reconciler: the serving side of one endpoint.

Reads the world (the referenced STTModel, the revisions' Deployments, the route), asks the
pure planner what to do, does it in a safe order (objects, then route, then deletions), and
records everything in status.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from stt_operator.api import ModelDeployment
from stt_operator.api.common import SpecError, parse_duration
from stt_operator.builders.common import LABEL_DEPLOYMENT, LABEL_MODEL, LABEL_REVISION, owner_reference
from stt_operator.builders.revision import serving_params
from stt_operator.builders.routing import Backend, http_route
from stt_operator.builders.serving import (
    Revision,
    deployment_available,
    revision_object_name,
    triton_deployment,
    triton_service,
)
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.status import StatusWriter
from stt_operator.observability import PROMOTIONS, ROLLOUTS_IN_FLIGHT, track_reconcile
from stt_operator.rollout.immediate import plan_immediate
from stt_operator.rollout.plan import ObservedRevision

log = logging.getLogger(__name__)

STTMODEL_API = "stt.dev/v1alpha1"
SUPPORTED_STRATEGIES = ("Immediate",)


def model_digest(model_body: Mapping[str, Any]) -> str:
    """What identifies a servable revision: the artifact digest and the serving spec.

    Any edit of the STTModel's spec makes a new revision (Triton must reload its config)."""
    spec = model_body.get("spec") or {}
    artifact = ((model_body.get("status") or {}).get("artifact") or {}).get("digest", "")
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":")) + artifact
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return condition
    return {}


def _observed_revisions(ctx: OperatorContext, name: str, namespace: str) -> dict[str, ObservedRevision]:
    observed: dict[str, ObservedRevision] = {}
    for deployment in ctx.kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: name}):
        labels = deployment["metadata"].get("labels") or {}
        revision_id = labels.get(LABEL_REVISION)
        if revision_id:
            observed[revision_id] = ObservedRevision(
                revision_id, labels.get(LABEL_MODEL, ""), deployment_available(deployment)
            )
    return observed


def _wait(writer: StatusWriter, reason: str, message: str, phase: str, warning: bool = False) -> None:
    writer.condition("Ready", "False", reason, message)
    writer.condition("Progressing", "False", reason, message)
    writer.set(phase=phase)
    if writer.changed("Ready"):
        writer.event("Warning" if warning else "Normal", reason, message)


def reconcile(body: Mapping[str, Any], patch: kopf.Patch, ctx: OperatorContext) -> None:
    writer = StatusWriter(body)
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    with track_reconcile("ModelDeployment"):
        try:
            md = ModelDeployment.from_body(body)
        except SpecError as exc:
            _wait(writer, "InvalidSpec", str(exc), "Failed", warning=True)
            writer.commit(patch)
            return
        _reconcile_valid(md, body, writer, ctx, name, namespace)
        in_flight = writer.fields.get("phase") == "Progressing"
        ROLLOUTS_IN_FLIGHT.labels(namespace, name).set(1 if in_flight else 0)
        if any(e.reason == "Promoted" for e in writer.events):
            PROMOTIONS.labels(namespace, name).inc()
        writer.commit(patch)


def _reconcile_valid(
    md: ModelDeployment,
    body: Mapping[str, Any],
    writer: StatusWriter,
    ctx: OperatorContext,
    name: str,
    namespace: str,
) -> None:
    spec = md.spec
    if spec.model is None:
        _wait(
            writer,
            "SelectorNotSupported",
            "spec.selector (automatic model selection) is not enabled yet",
            "Pending",
        )
        return
    model_name = spec.model.name
    model = ctx.kube.get(STTMODEL_API, "STTModel", model_name, namespace)
    if model is None:
        _wait(writer, "ModelNotFound", f"STTModel {model_name} not found in namespace {namespace}", "Pending")
        return
    if _condition(model, "Validated").get("status") == "False":
        message = (
            f"STTModel {model_name} failed validation: {_condition(model, 'Validated').get('message', '')}"
        )
        _wait(writer, "ModelFailedValidation", message, "Failed", warning=True)
        return
    if _condition(model, "Ready").get("status") != "True":
        reason = _condition(model, "Ready").get("message") or "not reconciled yet"
        _wait(writer, "ModelNotReady", f"STTModel {model_name} is not Ready: {reason}", "Pending")
        return
    if spec.strategy.type not in SUPPORTED_STRATEGIES:
        message = f"spec.strategy.type {spec.strategy.type} is not available in this version; use Immediate"
        _wait(writer, "StrategyNotSupported", message, "Failed", warning=True)
        return

    desired = Revision(model_name, model_digest(model))
    status = body.get("status") or {}
    observed = _observed_revisions(ctx, name, namespace)
    plan = plan_immediate(
        desired,
        status,
        observed,
        datetime.now(UTC),
        scale_down_delay_s=parse_duration(spec.scale_down_delay),
        history_limit=spec.rollback.revision_history_limit,
    )

    owner = owner_reference(body)
    resources = spec.resources.to_dict() if spec.resources else None
    for revision, role in plan.ensure:
        params = serving_params(
            deployment_name=name,
            namespace=namespace,
            revision=revision,
            role=role,
            model=model,
            replicas=spec.replicas,
            resources_override=resources,
            triton_image=ctx.settings.triton_image,
            operator_image=ctx.settings.operator_image,
            owner=owner,
        )
        ctx.kube.apply(triton_deployment(params))
        ctx.kube.apply(triton_service(params))

    models_by_revision = {rid: o.model for rid, o in observed.items()} | {desired.id: desired.model}
    if plan.route is not None:
        backends = [
            Backend(revision_object_name(name, models_by_revision[rid], rid), weight)
            for rid, weight in plan.route.items()
        ]
        endpoint = spec.endpoint
        parents = []
        if endpoint and endpoint.gateway_ref:
            parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway"}
            parent["name"] = endpoint.gateway_ref.name
            if endpoint.gateway_ref.namespace:
                parent["namespace"] = endpoint.gateway_ref.namespace
            if endpoint.gateway_ref.section_name:
                parent["sectionName"] = endpoint.gateway_ref.section_name
            parents.append(parent)
        route = http_route(
            name,
            namespace,
            backends,
            parent_refs=parents,
            hostnames=endpoint.hostnames if endpoint else (),
            path=endpoint.path if endpoint else "/",
            owner=owner,
        )
        ctx.kube.apply(route)
        writer.set(endpoint=name)

    for revision_id in plan.delete:
        object_name = revision_object_name(name, models_by_revision[revision_id], revision_id)
        ctx.kube.delete("apps/v1", "Deployment", object_name, namespace)
        ctx.kube.delete("v1", "Service", object_name, namespace)

    writer.apply_conditions(plan.conditions)
    writer.set(**plan.status)
    for event in plan.events:
        writer.event(event.type, event.reason, event.message)
