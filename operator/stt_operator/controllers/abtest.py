"""ABTest reconciler: read the world, ask the pure planner (`experiments.planner`), act in a safe
order, record everything in status.

Order of actions in one reconcile: take the hold on the ModelDeployment (optimistic, by
resourceVersion), create / keep the variants' Deployments and the evaluator, write the route
(only while holding, only naming Available variants), give the hold back (with the promotion in
the same patch), then remove the test's objects that no route names any more.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import kopf
from kubernetes.dynamic.exceptions import ConflictError, DynamicApiError, ForbiddenError, NotFoundError

from stt_operator.api import ABTest
from stt_operator.api.abtest import PHASE_FAILED
from stt_operator.api.common import SpecError, parse_duration
from stt_operator.builders.routing import GATEWAY_API_VERSION, route_name, route_weights
from stt_operator.builders.serving import deployment_available, model_digest
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.looks import LEGACY_P_STATE, measure_abtest, running_p_values
from stt_operator.controllers.status import StatusWriter
from stt_operator.experiments.objects import (
    LABEL_ABTEST,
)
from stt_operator.experiments.plan_objects import evaluator_stack, held_route, variant_stacks
from stt_operator.experiments.planner import (
    ABTestInput,
    ABTestPlan,
    EndpointInfo,
    ModelInfo,
    active_tests,
    analysis_interval_s,
    plan_abtest,
)
from stt_operator.observability import record_route, track_reconcile
from stt_operator.rollout.transitions import ANNOTATION_HELD_BY

log = logging.getLogger(__name__)

API = "stt.dev/v1alpha1"


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return {}


def _model_info(name: str, body: Mapping[str, Any] | None) -> ModelInfo:
    if body is None:
        return ModelInfo(name, exists=False, ready=False)
    validated = _condition(body, "Validated")
    failed = (validated.get("message") or "failed") if validated.get("status") == "False" else None
    ready = _condition(body, "Ready").get("status") == "True"
    return ModelInfo(name, exists=True, ready=ready, failed=failed, digest=model_digest(body))


def _endpoint_info(
    ctx: OperatorContext, name: str, md: Mapping[str, Any] | None, namespace: str
) -> EndpointInfo:
    if md is None:
        return EndpointInfo(name, exists=False)
    status = md.get("status") or {}
    spec = md.get("spec") or {}
    prometheus = (spec.get("analysis") or {}).get("prometheus") or {}
    info = EndpointInfo(
        name,
        held_by=(md["metadata"].get("annotations") or {}).get(ANNOTATION_HELD_BY),
        held_by_status=status.get("heldBy"),
        spec_model=(spec.get("model") or {}).get("name"),
        stable_model=status.get("stableModel"),
        stable_revision=status.get("stableRevision"),
        canary_revision=status.get("canaryRevision"),
        routing=spec.get("routing") or "gateway-api",
        prometheus_source=prometheus.get("source"),
        prometheus_address=prometheus.get("address"),
    )
    if info.stable_service:
        deployment = ctx.kube.get("apps/v1", "Deployment", info.stable_service, namespace)
        info = replace(info, stable_available=deployment_available(deployment))
    return info


def _all_abtests(ctx: OperatorContext, namespace: str) -> list[dict[str, Any]]:
    """Every ABTest the operator can see: cluster-wide, or (RBAC bound per watched namespace)
    those of the watched namespaces named exactly, this one included."""
    try:
        return ctx.kube.list(API, "ABTest", None)
    except ForbiddenError:
        names = {n for n in ctx.settings.namespaces if not any(ch in n for ch in "*?[")} | {namespace}
        return [item for n in sorted(names) for item in ctx.kube.list(API, "ABTest", n)]


def _patch_md(ctx: OperatorContext, name: str, namespace: str, body: dict[str, Any]) -> None:
    ctx.kube.merge_patch(ctx.kube.resource(API, "ModelDeployment"), name, namespace, body)


def reconcile(
    body: Mapping[str, Any], patch: kopf.Patch, ctx: OperatorContext, *, deleting: bool = False
) -> float | None:
    """Returns when to look again (seconds), or None when only a change elsewhere matters."""
    writer = StatusWriter(body)
    with track_reconcile("ABTest"):
        try:
            abt = ABTest.from_body(body)
        except SpecError as exc:
            if deleting:
                return None
            message = str(exc)
            writer.condition("Ready", "False", "InvalidSpec", message)
            writer.set(phase=PHASE_FAILED)
            if writer.changed("Ready"):
                writer.event("Warning", "InvalidSpec", message)
            writer.commit(patch)
            return None
        requeue = _reconcile_valid(abt, body, patch, writer, ctx, deleting)
        if not deleting:
            writer.commit(patch)
    return requeue


def _reconcile_valid(
    abt: ABTest,
    body: Mapping[str, Any],
    patch: kopf.Patch,
    writer: StatusWriter,
    ctx: OperatorContext,
    deleting: bool,
) -> float | None:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = abt.spec
    status = body.get("status") or {}
    md_name = spec.endpoint.model_deployment_ref.name
    md = ctx.kube.get(API, "ModelDeployment", md_name, namespace)
    models = {v.model.name: ctx.kube.get(API, "STTModel", v.model.name, namespace) for v in spec.variants}
    owned = ctx.kube.list("apps/v1", "Deployment", namespace, {LABEL_ABTEST: name}, cached=True)
    phase = status.get("phase") or "Pending"
    active = 0
    if phase == "Pending" and not deleting:
        active = active_tests(_all_abtests(ctx, namespace), meta.get("uid", ""))
    settings = ctx.settings
    inp = ABTestInput(
        name=name,
        namespace=namespace,
        spec=spec,
        status=status,
        now=writer.now,
        endpoint=_endpoint_info(ctx, md_name, md, namespace),
        models={m: _model_info(m, b) for m, b in models.items()},
        available={d["metadata"]["name"]: deployment_available(d) for d in owned},
        active_elsewhere=active,
        max_concurrent=settings.max_concurrent_abtests,
        analysis_interval_s=analysis_interval_s(
            spec, parse_duration(settings.default_analysis_interval), settings.reconcile_interval_s
        ),
        deleting=deleting,
    )
    plan = plan_abtest(inp)
    if plan.measure:
        measurement = measure_abtest(ctx, abt, inp, running_p_values(abt, body))
        plan = plan_abtest(replace(inp, measurement=measurement))
        if plan.measure:  # cannot happen: the planner is deterministic
            raise RuntimeError("the ABTest planner asked for a second look in one reconcile")
    _execute(plan, inp, body, md, models, ctx)
    if "sequential" in plan.status and LEGACY_P_STATE in (body["metadata"].get("annotations") or {}):
        patch.metadata.annotations[LEGACY_P_STATE] = None  # status holds it now
    writer.apply_conditions(plan.conditions)
    writer.set(**plan.status)
    for event in plan.events:
        writer.event(event.type, event.reason, event.message)
    return plan.requeue_after


def _execute(
    plan: ABTestPlan,
    inp: ABTestInput,
    body: Mapping[str, Any],
    md: Mapping[str, Any] | None,
    models: Mapping[str, Mapping[str, Any] | None],
    ctx: OperatorContext,
) -> None:
    namespace, name = inp.namespace, inp.name
    held = inp.endpoint.held_by == name
    if plan.acquire_hold and md is not None and not held:
        try:  # resourceVersion makes the take atomic: two tests never both hold one endpoint
            _patch_md(
                ctx,
                md["metadata"]["name"],
                namespace,
                {
                    "metadata": {
                        "annotations": {ANNOTATION_HELD_BY: name},
                        "resourceVersion": md["metadata"]["resourceVersion"],
                    }
                },
            )
        except ConflictError as exc:
            raise kopf.TemporaryError(
                f"ModelDeployment {md['metadata']['name']} changed; retrying", delay=1
            ) from exc
        held = True
    images = ctx.settings.images()
    for manifest in variant_stacks(plan, inp, body, md, models, images):
        ctx.kube.apply(manifest)
    for manifest in evaluator_stack(inp, body, models, images) if plan.ensure_evaluator else []:
        ctx.kube.apply(manifest)
    if plan.route is not None and held and md is not None:
        try:
            ctx.kube.apply(held_route(inp, plan.route, md))
            record_route(namespace, inp.endpoint.name, plan.route)
        except DynamicApiError:
            if not inp.deleting:
                raise  # keep holding: the release waits until the route is back on stable
            log.warning("ABTest %s/%s deleted: could not route %s back", namespace, name, inp.endpoint.name)
    if md is not None and (plan.release_hold or plan.promote_model):
        update: dict[str, Any] = {}
        if plan.release_hold:
            update["metadata"] = {"annotations": {ANNOTATION_HELD_BY: None}}
        if plan.promote_model:
            # In the same patch as the release: the winner goes through the endpoint's own strategy.
            update["spec"] = {"model": {"name": plan.promote_model}, "selector": None}
        try:
            _patch_md(ctx, md["metadata"]["name"], namespace, update)
        except NotFoundError:
            log.info("ModelDeployment %s/%s is gone; nothing to release", namespace, inp.endpoint.name)
    if plan.cleanup:
        try:
            _cleanup(inp, ctx)
        except DynamicApiError:
            if not inp.deleting:
                raise
            # Deleting: garbage collection removes the owned objects anyway.
            log.warning("ABTest %s/%s deleted: cleanup left to garbage collection", namespace, name)


def _cleanup(inp: ABTestInput, ctx: OperatorContext) -> None:
    """Remove the test's Deployments, Services and evaluator ConfigMap; never one the endpoint's
    route still names (the route moves first)."""
    namespace = inp.namespace
    route = ctx.kube.get(GATEWAY_API_VERSION, "HTTPRoute", route_name(inp.endpoint.name), namespace)
    routed = set(route_weights(route))
    for kind, api in (("Deployment", "apps/v1"), ("Service", "v1"), ("ConfigMap", "v1")):
        for obj in ctx.kube.list(api, kind, namespace, {LABEL_ABTEST: inp.name}):
            obj_name = obj["metadata"]["name"]
            if obj_name in routed:
                continue
            ctx.kube.delete(api, kind, obj_name, namespace)
