"""experiments/plan_objects.py: an A/B test's plan turned into the manifests the controller applies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from test_planner import B_SVC, MD, NAME, NS, STABLE_SVC, World, spec

from stt_operator.builders.placement import Images, Placement
from stt_operator.builders.routing import route_weights
from stt_operator.experiments.plan_objects import abtest_objects, evaluator_stack, held_route, variant_stacks
from stt_operator.experiments.planner import ABTestPlan, plan_abtest
from stt_operator.models.catalog import sphinx_io

IMAGES = Images(
    triton="triton:1",
    fetcher="fetch:1",
    jobs="jobs:1",
    serving_placement=Placement(node_selector={"pool": "gpu"}),
    jobs_placement=Placement(node_selector={"pool": "cpu"}),
)
ABTEST = {
    "apiVersion": "stt.dev/v1alpha1",
    "kind": "ABTest",
    "metadata": {"name": "ab", "namespace": NS, "uid": "t"},
}
ENDPOINT = {
    "apiVersion": "stt.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": MD, "namespace": NS, "uid": "m"},
    "spec": {"model": {"name": "model-a"}, "replicas": 2, "endpoint": {"port": 8080}},
}


def model(name: str, evalset: str | None = None) -> dict[str, Any]:
    spec = {"source": {"uri": f"file:///{name}"}, "io": sphinx_io()}
    body: dict[str, Any] = {"metadata": {"name": name}, "spec": spec}
    if evalset:
        body["spec"]["validation"] = {"evaluationSet": {"uri": evalset}}
    return body


def test_the_candidates_stack_is_sized_ported_and_placed_like_the_endpoint() -> None:
    world = World()
    plan = plan_abtest(world.inp())
    stacks = variant_stacks(plan, world.inp(), ABTEST, ENDPOINT, {"model-b": model("model-b")}, IMAGES)
    deployment, service = stacks
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == B_SVC
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["nodeSelector"]["pool"] == "gpu"
    assert {p["port"] for p in service["spec"]["ports"] if p["name"] == "http"} == {8080}
    # The variant's STTModel is gone: nothing to build for it.
    assert variant_stacks(plan, world.inp(), ABTEST, ENDPOINT, {"model-b": None}, IMAGES) == []


def test_the_evaluator_uses_the_controls_set_first_and_is_absent_without_one() -> None:
    inp = World().inp()
    both = {"model-a": model("model-a", "s3://sets/a.tar"), "model-b": model("model-b", "s3://sets/b.tar")}
    objects = evaluator_stack(inp, ABTEST, both, IMAGES)
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    assert "s3://sets/a.tar" in str(config["data"]) and "s3://sets/b.tar" not in str(config["data"])
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["nodeSelector"]["pool"] == "cpu"
    assert evaluator_stack(inp, ABTEST, {"model-a": model("model-a"), "model-b": None}, IMAGES) == []


def test_the_held_route_keeps_the_weights_and_adds_sticky_rules_only_when_asked() -> None:
    weights = {STABLE_SVC: 50, B_SVC: 50}
    plain = held_route(World().inp(), weights, ENDPOINT)
    assert route_weights(plain) == weights
    assert not any("headers" in m for r in plain["spec"]["rules"] for m in r["matches"])
    sticky = World(spec=spec(stickiness={"enabled": True, "sessionHeader": "x-session"}))
    rules = held_route(sticky.inp(), weights, ENDPOINT)["spec"]["rules"]
    assert route_weights({"spec": {"rules": rules}}) == weights
    headers = [h["name"] for r in rules for m in r["matches"] for h in m.get("headers", [])]
    assert "x-session" in headers


def test_a_plans_objects_are_its_variants_and_the_evaluator_only_when_the_plan_ensures_it() -> None:
    inp = World().inp()
    plan = plan_abtest(inp)
    models = {"model-a": model("model-a", "s3://sets/a.tar"), "model-b": model("model-b")}
    objects = abtest_objects(plan, inp, ABTEST, ENDPOINT, models, IMAGES)
    assert objects.variants == variant_stacks(plan, inp, ABTEST, ENDPOINT, models, IMAGES)
    plan.ensure_evaluator = True
    evaluator = evaluator_stack(inp, ABTEST, models, IMAGES)
    assert evaluator and abtest_objects(plan, inp, ABTEST, ENDPOINT, models, IMAGES).evaluator == evaluator
    plan.ensure_evaluator = False
    assert abtest_objects(plan, inp, ABTEST, ENDPOINT, models, IMAGES).evaluator == []


def test_the_route_is_written_only_while_the_test_holds_or_takes_the_endpoint() -> None:
    inp = World().inp()  # the endpoint is not held
    weights = {STABLE_SVC: 50, B_SVC: 50}
    plan = ABTestPlan(status=inp.status, route=weights)
    untaken = abtest_objects(plan, inp, ABTEST, ENDPOINT, {}, IMAGES)
    assert untaken.route is None and untaken.weights is None
    taking = abtest_objects(replace(plan, acquire_hold=True), inp, ABTEST, ENDPOINT, {}, IMAGES)
    assert taking.route == held_route(inp, weights, ENDPOINT) and taking.weights == weights
    held = replace(inp, endpoint=replace(inp.endpoint, held_by=NAME))
    kept = abtest_objects(plan, held, ABTEST, ENDPOINT, {}, IMAGES)
    assert kept.route == held_route(held, weights, ENDPOINT) and kept.weights == weights
    # Held by another test, or the ModelDeployment is gone: the route is left alone.
    other = replace(inp, endpoint=replace(inp.endpoint, held_by="other"))
    assert abtest_objects(plan, other, ABTEST, ENDPOINT, {}, IMAGES).route is None
    gone = abtest_objects(replace(plan, acquire_hold=True), held, ABTEST, None, {}, IMAGES)
    assert gone.route is None and gone.weights is None
    # No route in the plan: nothing to write, held or not.
    assert abtest_objects(replace(plan, route=None), held, ABTEST, ENDPOINT, {}, IMAGES).route is None
