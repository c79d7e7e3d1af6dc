"""The ABTest reconcile's apply step (controllers/abtest.py observes and plans; the manifests come
from experiments/plan_objects.py: `abtest_objects`), in a safe order: take the hold on the
ModelDeployment (optimistic, by resourceVersion), create / keep the variants' Deployments and the
evaluator, write the route (only while holding, only naming Available variants), give the hold
back (with the promotion in the same patch), then remove the test's objects that no route names
any more."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from stt_operator.api.common import API_VERSION_FULL as API
from stt_operator.builders.routing import GATEWAY_API_VERSION, route_name, route_weights
from stt_operator.controllers.context import OperatorContext
from stt_operator.experiments.objects import LABEL_ABTEST
from stt_operator.experiments.plan_objects import ABTestObjects
from stt_operator.experiments.planner import ABTestInput, ABTestPlan
from stt_operator.observability import record_route
from stt_operator.rollout.transitions import ANNOTATION_HELD_BY
from stt_operator.services.kube import Conflict, KubeError, NotFound

log = logging.getLogger(__name__)


def apply_abtest(
    ctx: OperatorContext,
    plan: ABTestPlan,
    inp: ABTestInput,
    md: Mapping[str, Any] | None,
    objects: ABTestObjects,
) -> None:
    """`md`: the ModelDeployment as observed (its resourceVersion guards the hold)."""
    namespace, name = inp.namespace, inp.name
    if plan.acquire_hold and md is not None and inp.endpoint.held_by != name:
        md_name, version = md["metadata"]["name"], md["metadata"]["resourceVersion"]
        hold = {"metadata": {"annotations": {ANNOTATION_HELD_BY: name}}}
        try:  # resourceVersion makes the take atomic: two tests never both hold one endpoint
            ctx.kube.patch_if_unchanged(API, "ModelDeployment", md_name, namespace, hold, version)
        except Conflict as exc:
            raise kopf.TemporaryError(f"ModelDeployment {md_name} changed; retrying", delay=1) from exc
    for manifest in objects.variants + objects.evaluator:
        ctx.kube.apply(manifest)
    if objects.route is not None and objects.weights is not None:
        try:
            ctx.kube.apply(objects.route)
            record_route(namespace, inp.endpoint.name, objects.weights)
        except KubeError:
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
            ctx.kube.patch(API, "ModelDeployment", md["metadata"]["name"], namespace, update)
        except NotFound:
            log.info("ModelDeployment %s/%s is gone; nothing to release", namespace, inp.endpoint.name)
    if plan.cleanup:
        try:
            _cleanup(inp, ctx)
        except KubeError:
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
