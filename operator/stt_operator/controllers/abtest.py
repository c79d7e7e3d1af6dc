"""ABTest reconciler: observe the world (`observe`), ask the pure planner
(`experiments.planner`), apply what it planned in a safe order (controllers/abtest_apply.py),
record everything in status.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import kopf

from stt_operator.api import ABTest
from stt_operator.api.abtest import PHASE_FAILED, PHASE_PENDING, ABTestStatus
from stt_operator.api.common import API_VERSION_FULL as API
from stt_operator.api.common import SpecError, parse_duration
from stt_operator.builders.serving import deployment_available
from stt_operator.controllers.abtest_apply import apply_abtest
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.looks import LEGACY_P_STATE, measure_abtest, running_p_values
from stt_operator.controllers.status import StatusWriter, status_changes
from stt_operator.experiments.objects import LABEL_ABTEST
from stt_operator.experiments.plan_objects import abtest_objects
from stt_operator.experiments.planner import (
    ABTestInput,
    EndpointInfo,
    ModelInfo,
    active_tests,
    analysis_interval_s,
    plan_abtest,
)
from stt_operator.observability import track_reconcile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ABTestWorld:
    """What one reconcile reads of the world for one ABTest."""

    md: dict[str, Any] | None  # the ModelDeployment under test; None: not found
    models: dict[str, dict[str, Any] | None]  # the variants' STTModels by name; None: not found
    available: dict[str, bool]  # the test's own Deployments by name: Available?
    endpoint: EndpointInfo  # the ModelDeployment as the planner reads it, stable Deployment included
    active_elsewhere: int  # other tests holding an endpoint; counted only while this one is Pending


def observe(ctx: OperatorContext, abt: ABTest, meta: Mapping[str, Any], deleting: bool) -> ABTestWorld:
    """The cluster reads the plan rests on, in one place. Not here: the looks at Prometheus
    the planner asks for (controllers/looks.py: `measure_abtest`) and the route the cleanup
    reads after writing it (controllers/abtest_apply.py)."""
    name, namespace = meta["name"], meta["namespace"]
    md_name = abt.spec.endpoint.model_deployment_ref.name
    md = ctx.kube.get(API, "ModelDeployment", md_name, namespace)
    models = {v.model.name: ctx.kube.get(API, "STTModel", v.model.name, namespace) for v in abt.spec.variants}
    owned = ctx.kube.list("apps/v1", "Deployment", namespace, {LABEL_ABTEST: name}, cached=True)
    active = 0
    if (abt.status.phase or PHASE_PENDING) == PHASE_PENDING and not deleting:
        # RBAC bound per watched namespace: those named exactly (no pattern), this one included.
        scopes = {n for n in ctx.settings.namespaces if not any(ch in n for ch in "*?[")} | {namespace}
        active = active_tests(ctx.kube.list_visible(API, "ABTest", scopes), meta.get("uid", ""))
    endpoint = EndpointInfo.from_body(md_name, md)
    if endpoint.stable_service:
        stable = ctx.kube.get("apps/v1", "Deployment", endpoint.stable_service, namespace)
        endpoint = replace(endpoint, stable_available=deployment_available(stable))
    available = {d["metadata"]["name"]: deployment_available(d) for d in owned}
    return ABTestWorld(md, models, available, endpoint, active)


def reconcile(
    body: Mapping[str, Any], patch: kopf.Patch, ctx: OperatorContext, *, deleting: bool = False
) -> float | None:
    """Returns when to look again (seconds), or None when only a change elsewhere matters."""
    writer = StatusWriter(body)
    with track_reconcile("ABTest"):
        try:
            # Only the spec can be invalid: the status is read leniently below, so a value an
            # older operator wrote there does not fail a test whose spec is fine.
            abt = ABTest.from_body({**body, "status": None})
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
        abt.status, ignored = ABTestStatus.parse_lenient(body.get("status"))
        if ignored:
            meta = body["metadata"]
            log.warning(
                "%s/%s: ignoring status the API rejects: %s",
                meta.get("namespace"),
                meta.get("name"),
                ", ".join(ignored),
            )
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
    meta, settings = body["metadata"], ctx.settings
    world = observe(ctx, abt, meta, deleting)
    inp = ABTestInput(
        name=meta["name"],
        namespace=meta["namespace"],
        spec=abt.spec,
        status=abt.status,
        now=writer.now,
        endpoint=world.endpoint,
        models={m: ModelInfo.from_body(m, b) for m, b in world.models.items()},
        available=world.available,
        active_elsewhere=world.active_elsewhere,
        max_concurrent=settings.max_concurrent_abtests,
        analysis_interval_s=analysis_interval_s(
            abt.spec, parse_duration(settings.default_analysis_interval), settings.reconcile_interval_s
        ),
        deleting=deleting,
    )
    plan = plan_abtest(inp)
    if plan.measure:
        measurement = measure_abtest(ctx, abt, inp, running_p_values(abt, body))
        plan = plan_abtest(replace(inp, measurement=measurement))
        if plan.measure:  # cannot happen: the planner is deterministic
            raise RuntimeError("the ABTest planner asked for a second look in one reconcile")
    objects = abtest_objects(plan, inp, body, world.md, world.models, settings.images())
    apply_abtest(ctx, plan, inp, world.md, objects)
    changes = status_changes(abt.status, plan.status)
    if "sequential" in changes and LEGACY_P_STATE in (meta.get("annotations") or {}):
        patch.metadata.annotations[LEGACY_P_STATE] = None  # status holds it now
    writer.apply_conditions(plan.conditions)
    writer.set(**changes)
    for event in plan.events:
        writer.event(event.type, event.reason, event.message)
    return plan.requeue_after
