"""The manifests an A/B test plan comes to (rollout/objects.py is the rollout's counterpart):
the variants' serving stacks, the evaluator, and the held endpoint's route. Pure; the ABTest
controller applies what `abtest_objects` returns in the planner's order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stt_operator.builders.placement import Images, place
from stt_operator.builders.serving import TRITON_HTTP_PORT
from stt_operator.evaluator.manifests import evaluation_set
from stt_operator.experiments.objects import endpoint_route, evaluator_for, variant_objects
from stt_operator.experiments.planner import ABTestInput, ABTestPlan, backends


def variant_stacks(
    plan: ABTestPlan,
    inp: ABTestInput,
    abtest_body: Mapping[str, Any],
    md_body: Mapping[str, Any] | None,
    models: Mapping[str, Mapping[str, Any] | None],
    images: Images,
) -> list[dict[str, Any]]:
    """Deployment + Service of each variant the plan ensures, sized and ported like the
    endpoint (its replicas, resources and port); a variant whose STTModel is gone is skipped."""
    md_spec = (md_body or {}).get("spec") or {}
    out: list[dict[str, Any]] = []
    for backend in plan.ensure:
        model = models.get(backend.model)
        if model is None:
            continue
        objects = variant_objects(
            abtest_body=abtest_body,
            backend=backend,
            model_body=model,
            model_digest=inp.models[backend.model].digest,
            replicas=int(md_spec.get("replicas", 1)),
            resources_override=md_spec.get("resources"),
            http_port=int((md_spec.get("endpoint") or {}).get("port") or TRITON_HTTP_PORT),
            triton_image=images.triton,
            operator_image=images.fetcher,
        )
        out += [place(obj, images.serving_placement) for obj in objects]
    return out


def evaluator_stack(
    inp: ABTestInput,
    abtest_body: Mapping[str, Any],
    models: Mapping[str, Mapping[str, Any] | None],
    images: Images,
) -> list[dict[str, Any]]:
    """The evaluator replaying the first labelled evaluation set (the control's first) to every
    variant; none when no variant's model names one (metrics then come from other exporters)."""
    control = inp.spec.control()
    ordered = [models.get(control.model.name)] + [models.get(v.model.name) for v in inp.spec.variants]
    evalset = evaluation_set(m for m in ordered if m is not None)
    if evalset is None:
        return []
    present = {m: b for m, b in models.items() if b is not None}
    objects = evaluator_for(
        abtest_body=abtest_body,
        endpoint=inp.endpoint.name,
        backends=[b for b in backends(inp) if b.model in present],
        models=present,
        control=control.name,
        evalset=evalset,
        operator_image=images.jobs,
    )
    return [place(obj, images.jobs_placement) for obj in objects]


def held_route(inp: ABTestInput, route: Mapping[str, int], md_body: Mapping[str, Any]) -> dict[str, Any]:
    """The endpoint's HTTPRoute with the test's weights, sticky rules when stickiness is on."""
    sticky = inp.spec.stickiness
    header = sticky.session_header if sticky is not None and sticky.enabled else None
    served = {b.service: b.model for b in backends(inp)}
    return endpoint_route(md_body, route, session_header=header, models=served)


@dataclass(frozen=True)
class ABTestObjects:
    """A plan's manifests; controllers/abtest_apply.py applies them in field order, after
    taking the hold and before giving it back."""

    variants: list[dict[str, Any]]  # the variants' Deployments and Services
    evaluator: list[dict[str, Any]]
    route: dict[str, Any] | None = None  # the held HTTPRoute; None: leave the route alone
    weights: dict[str, int] | None = None  # the route's split (Service -> weight), when written


def abtest_objects(
    plan: ABTestPlan,
    inp: ABTestInput,
    abtest_body: Mapping[str, Any],
    md_body: Mapping[str, Any] | None,
    models: Mapping[str, Mapping[str, Any] | None],
    images: Images,
) -> ABTestObjects:
    """Everything the plan writes but the hold and the ModelDeployment patch. The route only
    while the test holds the endpoint: it already does, or the apply takes the hold first."""
    holds = inp.endpoint.held_by == inp.name or plan.acquire_hold
    route = None
    if plan.route is not None and md_body is not None and holds:
        route = held_route(inp, plan.route, md_body)
    return ABTestObjects(
        variants=variant_stacks(plan, inp, abtest_body, md_body, models, images),
        evaluator=evaluator_stack(inp, abtest_body, models, images) if plan.ensure_evaluator else [],
        route=route,
        weights=plan.route if route is not None else None,
    )
