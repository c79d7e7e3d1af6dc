from stt_operator.builders.metadata import dns_name, owner_reference
from stt_operator.builders.modelconfig import model_config_map_name
from stt_operator.builders.routing import Backend, http_route, route_name, route_weights
from stt_operator.builders.serving import (
    Revision,
    ServingParams,
    deployment_available,
    revision_object_name,
    triton_deployment,
    triton_service,
)
from stt_operator.triton.pod import TritonPodParams, triton_pod_spec

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
        pod_spec=triton_pod_spec(
            TritonPodParams(
                model_name="whisper-small", config_map="cfg", artifact_uri="s3://b/m.onnx", gpus=1
            )
        ),
        replicas=2,
        owner=owner_reference(OWNER_BODY),
        pod_labels={"stt.dev/scrape": "true"},
    )
    base.update(kw)
    return ServingParams(**base)


def test_dns_name_is_valid_and_unique_when_truncated():
    a = dns_name("x" * 40, "model-" + "a" * 40, "rev")
    b = dns_name("x" * 40, "model-" + "b" * 40, "rev")
    assert len(a) <= 63 and len(b) <= 63
    assert a != b
    # A lossy rewrite gets a hash of the original, so it cannot collide with a real name.
    assert dns_name("123", "Foo_Bar").startswith("m-123-foo-bar-")
    assert dns_name("123", "Foo_Bar") != dns_name("m-123-foo-bar")
    assert dns_name("commands-en") == "commands-en"


def test_dns_names_differing_only_by_dot_and_dash_do_not_collide():
    assert dns_name("a.b") != dns_name("a-b")
    assert revision_object_name("en.v1", "m", "r1") != revision_object_name("en-v1", "m", "r1")
    assert route_name("en.v1") != route_name("en-v1")
    assert route_name("commands-en") == "commands-en"
    assert model_config_map_name("asr.v2") != model_config_map_name("asr-v2")


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
    assert pod["metadata"]["labels"]["stt.dev/scrape"] == "true"
    # The role label is not part of the selector: promotion must not recreate pods.
    assert "stt.dev/role" not in selector
    # Headless: the Gateway routes to the pods, so no ClusterIP is allocated per revision.
    assert service["spec"]["clusterIP"] == "None"


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


def test_http_route_alias_rewrites_to_each_revisions_model():
    route = http_route(
        "asr",
        "ns",
        [Backend("asr-a", 80, model="model-a"), Backend("asr-b", 20, model="model-b")],
        alias="asr",
    )
    plain, aliased = route["spec"]["rules"]
    # The first rule is the plain split (what route_weights reads); the alias rule has the same
    # weights and rewrites /v2/models/asr to each backend's own model.
    assert route_weights(route) == {"asr-a": 80, "asr-b": 20}
    assert aliased["matches"] == [{"path": {"type": "PathPrefix", "value": "/v2/models/asr"}}]
    rewrites = {
        ref["name"]: (ref["weight"], ref["filters"][0]["urlRewrite"]["path"]["replacePrefixMatch"])
        for ref in aliased["backendRefs"]
    }
    assert rewrites == {"asr-a": (80, "/v2/models/model-a"), "asr-b": (20, "/v2/models/model-b")}
    assert "filters" not in plain["backendRefs"][0]
    # No alias (or a backend whose model is unknown): one rule, as before.
    assert len(http_route("asr", "ns", [Backend("asr-a", 100)], alias="asr")["spec"]["rules"]) == 1


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


def test_serving_params_from_sttmodel_body():
    from stt_operator.builders.revision import serving_params

    model = {
        "metadata": {"name": "conformer"},
        "spec": {
            "source": {
                "uri": "s3://models/conformer.tar.gz",
                "sha256": "a" * 64,
                "secretRef": {"name": "s3"},
            },
            "triton": {"image": "custom/triton:1"},
            "resources": {"gpu": 2, "memory": "8Gi"},
        },
        "status": {"tritonConfigMap": "conformer-triton-config"},
    }
    params = serving_params(
        deployment_name="asr",
        namespace="ns",
        revision=Revision("conformer", "d"),
        role="canary",
        model=model,
        replicas=3,
        resources_override=None,
        triton_image="default/triton:2",
        operator_image="op:1",
        owner=None,
    )
    deployment = triton_deployment(params)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "custom/triton:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/models/conformer/ready"
    init = pod["initContainers"][0]
    assert init["image"] == "op:1"
    assert f"--sha256={'a' * 64}" in init["args"]
    assert {"name": "model-config", "configMap": {"name": "conformer-triton-config"}} in pod["volumes"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["labels"]["stt.dev/role"] == "canary"


def test_replica_ratio_sizes_and_endpoint_slice():
    from stt_operator.builders.routing import endpoint_service, endpoint_slice, ratio_replicas, ready_pod_ips

    assert ratio_replicas({"a": 75, "b": 25}, 4) == {"a": 3, "b": 1}
    assert ratio_replicas({"a": 95, "b": 5}, 2) == {"a": 2, "b": 1}  # a weighted revision keeps one pod
    assert ratio_replicas({"a": 100, "b": 0}, 3) == {"a": 3}  # weight 0: left to the planner
    service = endpoint_service("asr", "ns")
    assert "selector" not in service["spec"]
    slice_ = endpoint_slice("asr", "ns", ["10.0.0.2", "10.0.0.1"])
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == service["metadata"]["name"]
    assert [e["addresses"] for e in slice_["endpoints"]] == [["10.0.0.1"], ["10.0.0.2"]]
    assert {p["name"] for p in slice_["ports"]} == {p["name"] for p in service["spec"]["ports"]}
    ready = {"type": "Ready", "status": "True"}
    pods = [
        {"metadata": {}, "status": {"podIP": "10.0.0.1", "conditions": [ready]}},
        {
            "metadata": {},
            "status": {"podIP": "10.0.0.2", "conditions": [{"type": "Ready", "status": "False"}]},
        },
        {"metadata": {"deletionTimestamp": "x"}, "status": {"podIP": "10.0.0.3", "conditions": [ready]}},
        {"metadata": {}, "status": {"conditions": [ready]}},
    ]
    assert ready_pod_ips(pods) == ["10.0.0.1"]


def test_kubectl_stt_tables():
    from stt_operator.kubectl_plugin import analytics_rows, format_table, status_rows

    model = {
        "metadata": {"name": "m", "namespace": "ns"},
        "status": {"analytics": [{"language": "en-US", "wer": 0.123456, "requests": 10.0}]},
    }
    rows = analytics_rows([model, {"metadata": {"name": "quiet", "namespace": "ns"}}], all_namespaces=True)
    assert rows[0][:5] == ["ns/m", "en-US", None, 0.123456, None]  # no languagePair: PAIR empty
    assert rows[1][0] == "ns/quiet" and rows[1][1] is None  # no analytics yet: one row of dashes
    table = format_table(["A", "B"], [["x", 0.123456], ["longer", None]]).splitlines()
    assert table == ["A       B", "x       0.1235", "longer  -"]
    md = {
        "kind": "ModelDeployment",
        "metadata": {"name": "asr", "namespace": "ns"},
        "status": {
            "phase": "Healthy",
            "conditions": [{"type": "Ready", "reason": "Serving", "message": "ok"}],
        },
    }
    assert status_rows([md], all_namespaces=False) == [["ModelDeployment", "asr", "Healthy", "Serving", "ok"]]


def test_endpoint_port_reaches_services_and_route():
    from stt_operator.builders.revision import serving_params
    from stt_operator.builders.routing import endpoint_service
    from stt_operator.builders.serving import triton_service
    from stt_operator.experiments.objects import endpoint_route

    model = {"metadata": {"name": "m"}, "spec": {"source": {"uri": "file:///m"}}}
    p = serving_params(
        deployment_name="asr",
        namespace="ns",
        revision=Revision("m", "d"),
        role="stable",
        model=model,
        replicas=1,
        resources_override=None,
        triton_image="t:1",
        operator_image="j:1",
        owner=None,
        http_port=8080,
    )
    ports = {x["name"]: x for x in triton_service(p)["spec"]["ports"]}
    # Clients use the endpoint's port; the container keeps Triton's own (named) port.
    assert ports["http"] == {"name": "http", "port": 8080, "targetPort": "http"}
    assert ports["grpc"]["port"] == 8001
    svc = {x["name"]: x for x in endpoint_service("asr", "ns", None, 8080)["spec"]["ports"]}
    assert svc["http"] == {"name": "http", "port": 8080, "targetPort": 8000}
    md = {
        "metadata": {"name": "asr", "namespace": "ns", "uid": "u"},
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "ModelDeployment",
        "spec": {"endpoint": {"port": 8080}},
    }
    refs = endpoint_route(md, {"asr-m-1": 100})["spec"]["rules"][0]["backendRefs"]
    assert [r["port"] for r in refs] == [8080]


def test_http_route_header_match_only_with_a_language_pair() -> None:
    from stt_operator.api.modeldeployment import EndpointSpec

    plain = http_route("asr", "ns", [Backend("a", 100)], headers=EndpointSpec().header_matches())
    assert plain["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    ep = EndpointSpec.model_validate({"path": "/v2", "languagePair": "en>es"})
    route = http_route("asr-es", "ns", [Backend("b", 100)], path=ep.path, headers=ep.header_matches())
    assert route["spec"]["rules"][0]["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/v2"},
            "headers": [{"type": "Exact", "name": "x-language-pair", "value": "en>es"}],
        }
    ]


def test_http_route_alias_sticky_and_language_pair_rules_compose():
    """An A/B split with stickiness on a language-pair endpoint: every rule keeps the pair's
    header match; the alias path gets its own sticky rules, each rewriting to its backend's model."""
    backends = [Backend("rev-a", 50, model="model-a"), Backend("rev-b", 50, model="model-b")]
    route = http_route(
        "asr",
        "ns",
        backends,
        alias="asr",
        session_header="x-session-id",
        headers={"x-language-pair": "en>es"},
    )
    rules = route["spec"]["rules"]
    assert len(rules) == 6  # split, alias split, 2 sticky on "/", 2 sticky on the alias path
    for rule in rules:
        (match,) = rule["matches"]
        assert {"type": "Exact", "name": "x-language-pair", "value": "en>es"} in match.get("headers", [])
    alias_sticky = [r for r in rules[2:] if r["matches"][0]["path"]["value"] == "/v2/models/asr"]
    assert len(alias_sticky) == 2
    for rule in alias_sticky:
        (ref,) = rule["backendRefs"]
        rewrite = ref["filters"][0]["urlRewrite"]["path"]["replacePrefixMatch"]
        assert rewrite == {"rev-a": "/v2/models/model-a", "rev-b": "/v2/models/model-b"}[ref["name"]]
    assert route_weights(route) == {"rev-a": 50, "rev-b": 50}
