from stt_operator.builders.common import dns_name, owner_reference
from stt_operator.builders.routing import Backend, http_route, route_weights
from stt_operator.builders.serving import (
    Revision,
    ServingParams,
    deployment_available,
    revision_object_name,
    triton_deployment,
    triton_service,
)

OWNER_BODY = {
    "apiVersion": "stt.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "asr", "namespace": "ns", "uid": "1234"},
}


def params(**kw):
    base = dict(
        deployment_name="asr",
        namespace="ns",
        revision=Revision("whisper-small", "sha256:aa"),
        role="stable",
        image="triton:1",
        config_map="whisper-small-triton",
        replicas=2,
        gpus=1,
        owner=owner_reference(OWNER_BODY),
    )
    base.update(kw)
    return ServingParams(**base)


def test_dns_name_is_valid_and_unique_when_truncated():
    a = dns_name("x" * 40, "model-" + "a" * 40, "rev")
    b = dns_name("x" * 40, "model-" + "b" * 40, "rev")
    assert len(a) <= 63 and len(b) <= 63
    assert a != b
    assert dns_name("123", "Foo_Bar") == "m-123-foo-bar"


def test_revision_id_changes_with_digest():
    assert Revision("m", "d1").id != Revision("m", "d2").id
    assert Revision("m", "d1").id == Revision("m", "d1").id


def test_deployment_has_gpu_owner_labels_and_selector_matches_service():
    deployment = triton_deployment(params())
    service = triton_service(params())
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "1234"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "stt-operator"
    assert deployment["metadata"]["labels"]["stt.dev/role"] == "stable"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == service["spec"]["selector"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in selector.items())
    rev = params().revision
    assert deployment["metadata"]["name"] == revision_object_name("asr", rev.model, rev.id)
    # The role label is not part of the selector: promotion must not recreate pods.
    assert "stt.dev/role" not in selector


def test_http_route_weights_round_trip():
    route = http_route(
        "asr",
        "ns",
        [Backend("a", 90), Backend("b", 10)],
        parent_refs=[{"name": "gw"}],
        hostnames=["stt.example.com"],
    )
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route_weights(route) == {"a": 90, "b": 10}
    assert route["spec"]["hostnames"] == ["stt.example.com"]


def test_http_route_refuses_no_backend():
    import pytest

    with pytest.raises(ValueError, match="at least one backend"):
        http_route("asr", "ns", [])


def test_deployment_available_needs_current_generation_and_condition():
    dep = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 2,
            "availableReplicas": 1,
            "updatedReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }
    assert deployment_available(dep)
    stale = {**dep, "status": {**dep["status"], "observedGeneration": 1}}
    assert not deployment_available(stale)
    assert not deployment_available(None)
    unavailable = {**dep, "status": {**dep["status"], "availableReplicas": 0}}
    assert not deployment_available(unavailable)
