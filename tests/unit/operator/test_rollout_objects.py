"""rollout/objects.py: a rollout plan turned into the manifests the controller applies."""

from __future__ import annotations

from typing import Any

from stt_operator.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from stt_operator.builders.metadata import owner_reference
from stt_operator.builders.placement import Images, Placement
from stt_operator.builders.routing import route_weights
from stt_operator.builders.serving import Revision, revision_object_name
from stt_operator.experiments.objects import endpoint_route as abtest_route
from stt_operator.rollout.objects import Endpoint, endpoint_objects
from stt_operator.rollout.plan import EndpointPlan, ObservedRevision

MD = {
    "apiVersion": "stt.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "asr", "namespace": "ns", "uid": "u"},
}
OWNER = owner_reference(MD)
MODEL = {"metadata": {"name": "model-b"}, "spec": {"source": {"uri": "file:///m"}}}
STABLE, NEW = Revision("model-a", "sha256:a"), Revision("model-b", "sha256:b")
MODELS = {STABLE.id: STABLE.model, NEW.id: NEW.model}


def endpoint(spec: dict[str, Any]) -> Endpoint:
    return Endpoint(
        "asr",
        "ns",
        OWNER,
        ModelDeploymentSpec.model_validate({"model": {"name": "model-b"}, **spec}),
        Images(
            triton="triton:1",
            fetcher="op:1",
            jobs="jobs:1",
            serving_placement=Placement(node_selector={"pool": "gpu"}),
            jobs_placement=Placement(),
        ),
    )


def service(revision: Revision) -> str:
    return revision_object_name("asr", revision.model, revision.id)


def pod(revision: Revision, ip: str, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"stt.dev/revision": revision.id}},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}]},
    }


def test_a_canary_step_ensures_the_new_stack_then_weights_the_route_then_deletes() -> None:
    ep = endpoint(
        {
            "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 20}]}},
            "endpoint": {"port": 8080, "gatewayRef": {"name": "gw", "namespace": "infra"}},
            "replicas": 3,
        }
    )
    old = Revision("model-old", "sha256:o")
    plan = EndpointPlan(
        ModelDeploymentStatus(),
        ensure=[(NEW, "canary")],
        route={STABLE.id: 80, NEW.id: 20},
        delete=[old.id, "unknown-revision"],
        replicas={NEW.id: 1},
    )
    objects = endpoint_objects(ep, plan, MODEL, {}, {**MODELS, old.id: old.model})
    deployment, svc = objects.serving
    assert (deployment["kind"], svc["kind"]) == ("Deployment", "Service")
    assert deployment["metadata"]["name"] == svc["metadata"]["name"] == service(NEW)
    assert deployment["spec"]["replicas"] == 1  # the plan's per-revision count wins over spec.replicas
    assert deployment["spec"]["template"]["spec"]["nodeSelector"]["pool"] == "gpu"  # placed
    assert deployment["metadata"]["labels"]["stt.dev/role"] == "canary"
    (route,) = objects.routing
    assert route["kind"] == "HTTPRoute"
    assert route_weights(route) == {service(STABLE): 80, service(NEW): 20} == objects.weights
    assert route["spec"]["parentRefs"][0]["namespace"] == "infra"
    assert {ref["port"] for ref in route["spec"]["rules"][0]["backendRefs"]} == {8080}
    assert objects.address == "asr"
    assert objects.scale == {}
    assert objects.delete == [service(old)]  # a revision the plan cannot name is skipped


def test_the_rollout_and_an_abtest_write_the_same_route_for_the_same_weights() -> None:
    spec = {
        "endpoint": {"hostnames": ["asr.example.com"], "path": "/asr", "languagePair": "en>de"},
        "replicas": 2,
    }
    ep = endpoint(spec)
    plan = EndpointPlan(ModelDeploymentStatus(), route={STABLE.id: 50, NEW.id: 50})
    (route,) = endpoint_objects(ep, plan, MODEL, {}, MODELS).routing
    md = {**MD, "spec": {"model": {"name": "model-b"}, **spec}}
    weights = {service(STABLE): 50, service(NEW): 50}
    models = {service(STABLE): STABLE.model, service(NEW): NEW.model}
    assert route == abtest_route(md, weights, models=models)
    assert route["spec"]["rules"][0]["matches"][0]["headers"] == [
        {"type": "Exact", "name": "x-language-pair", "value": "en>de"}
    ]


def test_replica_ratio_scales_found_revisions_and_serves_only_weighted_ready_pods() -> None:
    ep = endpoint({"routing": "replica-ratio", "replicas": 4})
    observed = {
        STABLE.id: ObservedRevision(STABLE.id, STABLE.model, True, replicas=4, ready_replicas=4),
        NEW.id: ObservedRevision(NEW.id, NEW.model, True, replicas=1, ready_replicas=1),
    }
    pods = [pod(STABLE, "10.0.0.2"), pod(STABLE, "10.0.0.9", ready=False), pod(NEW, "10.0.0.5")]
    plan = EndpointPlan(ModelDeploymentStatus(), route={STABLE.id: 75, NEW.id: 25})
    objects = endpoint_objects(ep, plan, MODEL, observed, MODELS, pods)
    assert objects.scale == {service(STABLE): 3}  # 75 % of 4; the canary already has its 1
    svc, slice_ = objects.routing
    assert (svc["kind"], slice_["kind"]) == ("Service", "EndpointSlice")
    assert [e["addresses"] for e in slice_["endpoints"]] == [["10.0.0.2"], ["10.0.0.5"]]
    assert objects.weights is None and objects.address == "asr.ns.svc"
    # A blue-green preview at weight 0 keeps its pods out of the endpoint.
    preview = endpoint_objects(
        ep,
        EndpointPlan(ModelDeploymentStatus(), route={STABLE.id: 100, NEW.id: 0}),
        MODEL,
        observed,
        MODELS,
        pods,
    )
    assert [e["addresses"] for e in preview.routing[1]["endpoints"]] == [["10.0.0.2"]]


def test_a_plan_without_a_route_leaves_routing_alone() -> None:
    objects = endpoint_objects(endpoint({}), EndpointPlan(ModelDeploymentStatus()), MODEL, {}, MODELS)
    assert (objects.serving, objects.routing, objects.weights, objects.address) == ([], [], None, None)


def test_first_pods_of_a_weight_scaled_canary_is_one() -> None:
    canary = {"strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 20}]}}, "replicas": 3}
    pod_spec, count = endpoint({**canary, "scaleReplicasWithWeight": True}).first_pods(MODEL, NEW)
    assert count == 1 and pod_spec["nodeSelector"]["pool"] == "gpu"
    assert endpoint(canary).first_pods(MODEL, NEW)[1] == 3
