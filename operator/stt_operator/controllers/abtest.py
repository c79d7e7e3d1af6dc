"""ABTest reconciler: read the world, ask the pure planner (`experiments.planner`), act in a safe
order, record everything in status.

Order of actions in one reconcile: take the hold on the ModelDeployment (optimistic, by
resourceVersion), create / keep the variants' Deployments and the evaluator, write the route
(only while holding, only naming Available variants), give the hold back (with the promotion in
the same patch), then remove the test's objects that no route names any more.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import kopf
from kubernetes.dynamic.exceptions import ConflictError, DynamicApiError, ForbiddenError, NotFoundError

from stt_operator.analysis.engine import check_live_split, check_sample_ratio, evaluate_metrics
from stt_operator.analysis.prom import PrometheusClient, PromQueryError
from stt_operator.api import ABTest
from stt_operator.api.common import SpecError, parse_duration
from stt_operator.builders.placement import place
from stt_operator.builders.routing import GATEWAY_API_VERSION, route_name, route_weights
from stt_operator.builders.serving import TRITON_HTTP_PORT, deployment_available, model_digest
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.status import StatusWriter
from stt_operator.evaluator.manifests import evaluation_set
from stt_operator.experiments.objects import (
    LABEL_ABTEST,
    endpoint_route,
    evaluator_for,
    variant_objects,
)
from stt_operator.experiments.planner import (
    ABTestInput,
    ABTestPlan,
    EndpointInfo,
    Measurement,
    ModelInfo,
    active_tests,
    analysis_interval_s,
    backends,
    live_weights,
    plan_abtest,
)
from stt_operator.observability import record_route, track_reconcile
from stt_operator.rollout.common import ANNOTATION_HELD_BY
from stt_operator.stats.counts import SRMResult, combine_sample_ratios

log = logging.getLogger(__name__)

API = "stt.dev/v1alpha1"
# Where operators before status.sequential kept the running p-values (read once, then removed).
LEGACY_P_STATE = "stt.dev/abtest-p-state"
PROMETHEUS_TIMEOUT_S = 10.0


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


def _running_p_values(abt: ABTest, body: Mapping[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    """The sequential test's running minima from `status.sequential`; a test started by an
    operator that kept them in the LEGACY_P_STATE annotation resumes from that once."""
    if abt.status.sequential:
        return abt.status.running_p_values()
    raw = (body["metadata"].get("annotations") or {}).get(LEGACY_P_STATE)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {v: {k: (float(p[0]), float(p[1])) for k, p in d.items()} for v, d in data.items()}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        log.warning("ignoring unreadable %s annotation", LEGACY_P_STATE)
        return {}


def measure(
    ctx: OperatorContext, abt: ABTest, inp: ABTestInput, previous: Mapping[str, Mapping[str, Any]]
) -> Measurement:
    """One look: every non-control variant against the control (primary + guardrails, Holm
    across them), and the sample-ratio check. Any failure is a Measurement with `error`."""
    spec = abt.spec
    try:
        url = ctx.settings.prometheus_for(inp.endpoint.prometheus_source, inp.endpoint.prometheus_address)
        client = PrometheusClient(url, timeout_s=PROMETHEUS_TIMEOUT_S)
        by_variant = {b.variant: b for b in backends(inp)}
        control = spec.control().name

        def arm(variant: str) -> dict[str, str]:
            b = by_variant[variant]
            return {"variant": variant, "service": b.service, "model": b.model}

        primary = spec.primary_metric.to_dict()
        primary["minSamples"] = max(spec.primary_metric.min_samples, spec.min_samples_per_variant)
        metrics = [primary, *(g.to_dict() for g in spec.guardrail_metrics)]
        base: dict[str, Any] = {
            "namespace": inp.namespace,
            "endpoint": inp.endpoint.name,
            "baseline": arm(control),
            "start": inp.status.get("startedAt") and _ts(inp.status["startedAt"]),
            "interval": f"{max(1, int(inp.analysis_interval_s))}s",
            "confidence": 1.0 - spec.significance_level,
            "paired": spec.paired_evaluation,
            "no_data_policy": "Pause",
            "scope_queries": ctx.settings.scope_custom_queries,
        }
        results = {
            v.name: evaluate_metrics(
                client, metrics, {**base, "candidate": arm(v.name), "previous_p": previous.get(v.name) or {}}
            )
            for v in spec.variants
            if v.name != control
        }
        # Two splits are checked and either alarm holds the decision: the evaluator's replay
        # (every utterance to every variant: equal counts expected) and the live traffic the
        # route splits (Triton's request counters per variant Service, less the replay).
        checks: dict[str, SRMResult | str] = {}
        if spec.paired_evaluation:
            checks["replay"] = check_sample_ratio(
                client,
                {**base, "candidate": arm(control)},
                {v.name: 1.0 for v in spec.variants},
                threshold=spec.srm_threshold,
            )
        live = live_weights(inp, list(by_variant.values()))
        if live is not None:
            checks["live"] = check_live_split(
                client,
                {**base, "candidate": arm(control)},
                live,
                {v: by_variant[v].service for v in live},
                threshold=spec.srm_threshold,
            )
        srm = combine_sample_ratios(checks)
        return Measurement(results=results, srm=srm)
    except PromQueryError as exc:  # no Prometheus configured: the operator's words, nothing sent
        return Measurement(error=exc.detail)
    except Exception as exc:  # a bad address or an engine bug pauses the test, never crashes it
        log.exception("analysis of ABTest %s/%s failed", inp.namespace, inp.name)
        return Measurement(error=f"{type(exc).__name__}: {exc}")


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _all_abtests(ctx: OperatorContext, namespace: str) -> list[dict[str, Any]]:
    """Every ABTest the operator can see: cluster-wide, or (RBAC bound per watched namespace)
    those of the watched namespaces named exactly, this one included."""
    try:
        return ctx.kube.list(API, "ABTest", None)
    except ForbiddenError:
        names = {n for n in ctx.settings.namespaces if not any(ch in n for ch in "*?[")} | {namespace}
        return [item for n in sorted(names) for item in ctx.kube.list(API, "ABTest", n)]


def _patch_md(ctx: OperatorContext, name: str, namespace: str, body: dict[str, Any]) -> None:
    resource = ctx.kube.dynamic.resources.get(api_version=API, kind="ModelDeployment")
    resource.patch(body=body, name=name, namespace=namespace, content_type="application/merge-patch+json")


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
            writer.set(phase="Failed")
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
    owned = ctx.kube.list("apps/v1", "Deployment", namespace, {LABEL_ABTEST: name})
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
        measurement = measure(ctx, abt, inp, _running_p_values(abt, body))
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
    md_spec = (md or {}).get("spec") or {}
    for backend in plan.ensure:
        model = models.get(backend.model)
        if model is None:
            continue
        for obj in variant_objects(
            abtest_body=body,
            backend=backend,
            model_body=model,
            model_digest=inp.models[backend.model].digest,
            replicas=int(md_spec.get("replicas", 1)),
            resources_override=md_spec.get("resources"),
            http_port=int((md_spec.get("endpoint") or {}).get("port") or TRITON_HTTP_PORT),
            triton_image=ctx.settings.triton_image,
            operator_image=ctx.settings.fetcher_image,
        ):
            ctx.kube.apply(place(obj, ctx.settings.serving_placement))
    if plan.ensure_evaluator:
        _ensure_evaluator(inp, body, models, ctx)
    if plan.route is not None and held and md is not None:
        try:
            sticky = inp.spec.stickiness
            header = sticky.session_header if sticky is not None and sticky.enabled else None
            served = {b.service: b.model for b in backends(inp)}
            ctx.kube.apply(endpoint_route(md, plan.route, session_header=header, models=served))
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


def _ensure_evaluator(
    inp: ABTestInput,
    body: Mapping[str, Any],
    models: Mapping[str, Mapping[str, Any] | None],
    ctx: OperatorContext,
) -> None:
    control = inp.spec.control()
    ordered = [models.get(control.model.name)] + [models.get(v.model.name) for v in inp.spec.variants]
    evalset = evaluation_set([m for m in ordered if m is not None])
    if evalset is None:
        return  # no labelled set on any variant: metrics come from other exporters only
    present = {m: b for m, b in models.items() if b is not None}
    bks = [b for b in backends(inp) if b.model in present]
    for obj in evaluator_for(
        abtest_body=body,
        endpoint=inp.endpoint.name,
        backends=bks,
        models=present,
        control=control.name,
        evalset=evalset,
        operator_image=ctx.settings.jobs_image,
    ):
        ctx.kube.apply(place(obj, ctx.settings.jobs_placement))


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
