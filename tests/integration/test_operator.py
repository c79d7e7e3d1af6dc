"""The operator end to end against a real kube-apiserver (+ controller-manager, scheduler, kwok).

The operator runs as its own process (`stt-operator run`), exactly as users run it."""

from __future__ import annotations

import time

import pytest

from stt_harness.kubewait import condition, event_reasons, wait_for, wait_reasons
from stt_harness.resources import API, model_deployment, stt_model
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.builders.serving import deployment_available
from stt_operator.controllers.kopf_tuning import FINALIZER

pytestmark = pytest.mark.integration


@pytest.fixture
def namespace(operator_namespace: str) -> str:
    """Every test here runs in a namespace the session's operator watches."""
    return operator_namespace


def test_sttmodel_renders_config_and_becomes_ready(operator, kube, namespace):
    kube.apply(stt_model("pocketsphinx-en", namespace))
    model = wait_for(
        lambda: (
            (m := kube.get(API, "STTModel", "pocketsphinx-en", namespace))
            and condition(m, "Ready").get("status") == "True"
            and m
        ),
        what="STTModel Ready",
    )
    status = model["status"]
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == model["metadata"]["generation"]
    assert condition(model, "Rendered")["status"] == "True"
    assert condition(model, "Validated")["reason"] == "ValidationDisabled"
    config_map = kube.get("v1", "ConfigMap", status["tritonConfigMap"], namespace)
    assert config_map is not None
    assert 'backend: "python"' in config_map["data"]["config.pbtxt"]
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == model["metadata"]["uid"]
    # An STTModel is a catalogue entry: it runs no serving pods.
    assert kube.list("apps/v1", "Deployment", namespace) == []
    wait_for(lambda: "ModelReady" in event_reasons(kube, namespace, "pocketsphinx-en"), what="Event")
    # Kopf's bookkeeping stays out of status.
    assert set(status) <= {"phase", "observedGeneration", "conditions", "tritonConfigMap"}


def test_immediate_deploy_switch_idempotence_and_deletion(operator, kube, namespace):
    kube.apply(stt_model("model-a", namespace))
    kube.apply(stt_model("model-b", namespace, language="en-GB"))
    kube.apply(model_deployment("asr", namespace, "model-a"))

    def ready_md():
        md = kube.get(API, "ModelDeployment", "asr", namespace)
        return (
            md
            if condition(md, "Ready").get("status") == "True" and (md.get("status") or {}).get("stableModel")
            else None
        )

    md = wait_for(ready_md, timeout=120, what="ModelDeployment Ready on model-a")
    assert md["status"]["stableModel"] == "model-a"
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"]
    assert [r["model"] for r in md["status"]["revisions"]] == ["model-a"]
    deployments = kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: "asr"})
    assert len(deployments) == 1 and deployment_available(deployments[0])
    pod_spec = deployments[0]["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert deployments[0]["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    route = kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "asr", namespace)
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [(deployments[0]["metadata"]["name"], 100)]
    assert route["spec"]["parentRefs"][0]["name"] == "stt-gateway"
    wait_reasons(kube, namespace, "asr", "Deployed")

    # Idempotence: several reconcile intervals later nothing has been rewritten.
    versions = {
        "deployment": deployments[0]["metadata"]["resourceVersion"],
        "route": route["metadata"]["resourceVersion"],
        "md": md["metadata"]["resourceVersion"],
    }
    time.sleep(4)
    assert (
        kube.get("apps/v1", "Deployment", deployments[0]["metadata"]["name"], namespace)["metadata"][
            "resourceVersion"
        ]
        == versions["deployment"]
    )
    assert (
        kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "asr", namespace)["metadata"]["resourceVersion"]
        == versions["route"]
    )
    assert kube.get(API, "ModelDeployment", "asr", namespace)["metadata"]["resourceVersion"] == versions["md"]

    # Switch the model: the route may only ever point at Available Deployments.
    md["spec"]["model"]["name"] = "model-b"
    kube.apply(
        {
            "apiVersion": API,
            "kind": "ModelDeployment",
            "metadata": {"name": "asr", "namespace": namespace},
            "spec": md["spec"],
        }
    )
    seen_backends: set[str] = set()

    def switched():
        route = kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "asr", namespace)
        available = {
            d["metadata"]["name"]
            for d in kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: "asr"})
            if deployment_available(d)
        }
        backends = {r["name"] for r in route["spec"]["rules"][0]["backendRefs"]}
        assert backends, "route lost its backends"
        assert backends <= available | seen_backends, (
            f"route points at a non-ready backend: {backends - available}"
        )
        seen_backends.update(backends)
        md = kube.get(API, "ModelDeployment", "asr", namespace)
        deps = kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: "asr"})
        return md["status"].get("stableModel") == "model-b" and len(deps) == 1 and md

    md = wait_for(switched, timeout=120, what="switch to model-b and old revision removed", every=0.2)
    assert [r["model"] for r in md["status"]["revisions"]] == ["model-a", "model-b"]
    assert [r["outcome"] for r in md["status"]["revisions"]] == ["Superseded", "Serving"]
    assert (
        "model-b"
        in kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: "asr"})[0]["metadata"]["name"]
    )
    wait_reasons(kube, namespace, "asr", "Promoted", "RevisionRetired")

    # Deletion: owned objects are garbage-collected by the real controller-manager.
    kube.delete(API, "ModelDeployment", "asr", namespace)
    wait_for(
        lambda: (
            not kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: "asr"})
            and not kube.list("v1", "Service", namespace, {LABEL_DEPLOYMENT: "asr"})
            and kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "asr", namespace) is None
        ),
        timeout=90,
        what="garbage collection of owned objects",
    )


def test_missing_model_is_reported_not_crashed(operator, kube, namespace):
    kube.apply(model_deployment("orphan", namespace, "does-not-exist"))
    md = wait_for(
        lambda: (
            (m := kube.get(API, "ModelDeployment", "orphan", namespace))
            and condition(m, "Ready").get("reason") == "ModelNotFound"
            and m
        ),
        what="ModelNotFound condition",
    )
    assert "does-not-exist" in condition(md, "Ready")["message"]
    assert md["status"]["phase"] == "Pending"
    assert operator.process.poll() is None
    # Creating the model later lets the same ModelDeployment proceed on its own.
    kube.apply(stt_model("does-not-exist", namespace))
    wait_for(
        lambda: (
            condition(kube.get(API, "ModelDeployment", "orphan", namespace), "Ready").get("status") == "True"
        ),
        timeout=120,
        what="ModelDeployment Ready once its model exists",
    )


def test_operator_metrics_count_reconciles(operator):
    text = operator.metrics()
    assert "stt_operator_reconciles_total" in text
    ok_lines = [
        line
        for line in text.splitlines()
        if line.startswith("stt_operator_reconciles_total{") and 'result="ok"' in line
    ]
    assert ok_lines and any(float(line.rsplit(" ", 1)[1]) > 0 for line in ok_lines)


def test_replica_ratio_routing_without_a_mesh(operator, cluster, kube, namespace):
    """No Gateway API: one selector-less Service whose EndpointSlice the operator writes, with
    each revision sized to its weight."""
    kube.apply(stt_model("model-a", namespace))
    kube.apply(stt_model("model-b", namespace))
    manifest = model_deployment("no-mesh", namespace, "model-a")
    manifest["spec"].update(
        routing="replica-ratio",
        replicas=4,
        resources={"gpu": 0},  # CPU pods: the fake nodes' GPUs stay free for other tests
        strategy={"type": "Canary", "canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}},
    )
    del manifest["spec"]["endpoint"]
    kube.apply(manifest)

    def revision_pods() -> dict[str, set[str]]:
        pods: dict[str, set[str]] = {}
        for pod in kube.list("v1", "Pod", namespace, {LABEL_DEPLOYMENT: "no-mesh"}):
            ip = (pod.get("status") or {}).get("podIP")
            if ip and not pod["metadata"].get("deletionTimestamp"):
                pods.setdefault(pod["metadata"]["labels"]["stt.dev/model"], set()).add(ip)
        return pods

    def endpoints() -> set[str]:
        slice_ = kube.get("discovery.k8s.io/v1", "EndpointSlice", "no-mesh-ratio", namespace) or {}
        return {a for e in slice_.get("endpoints") or [] for a in e["addresses"]}

    def wait_split(expected: dict[str, int], what: str) -> None:
        seen: dict[str, object] = {}

        def check() -> bool:
            pods, members = revision_pods(), endpoints()
            got = {model: len(members & ips) for model, ips in pods.items() if members & ips}
            seen.update(pods=pods, endpoints=members, split=got)
            return got == expected and members <= set().union(*pods.values())

        try:
            wait_for(check, timeout=120, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; seen {seen}") from None

    wait_split({"model-a": 4}, "4 model-a endpoints")
    service = kube.get("v1", "Service", "no-mesh", namespace)
    assert "selector" not in service["spec"]
    assert kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "no-mesh", namespace) is None

    manifest["spec"]["model"] = {"name": "model-b"}
    kube.apply(manifest)
    wait_split({"model-a": 3, "model-b": 1}, "a 3:1 split at weight 25")
    md = kube.get(API, "ModelDeployment", "no-mesh", namespace)
    assert md["status"]["currentWeight"] == 25
    assert md["status"]["endpoint"] == f"no-mesh.{namespace}.svc"

    cluster.kubectl("annotate", "-n", namespace, "modeldeployment", "no-mesh", "stt.dev/promote=yes")
    wait_split({"model-b": 4}, "all endpoints on model-b after promotion")
    wait_for(
        lambda: (
            kube.get(API, "ModelDeployment", "no-mesh", namespace)["status"].get("stableModel") == "model-b"
        ),
        what="model-b stable",
    )


def test_language_pairs_share_one_path_by_header(operator, kube, namespace):
    """Two ModelDeployments, one per pair, on the same host and path: the operator writes each
    HTTPRoute rule with its x-language-pair header match; the plain one keeps the path match only.
    (tests/integration/test_gateway.py sends requests through Traefik with such routes.)"""
    gw = {"gatewayRef": {"name": "stt-gateway"}, "hostnames": ["stt.example.test"], "path": "/v2"}
    kube.apply(stt_model("model-es", namespace))
    kube.apply(stt_model("model-fr", namespace))
    kube.apply(model_deployment("asr-es", namespace, "model-es", endpoint={**gw, "languagePair": "en>es"}))
    kube.apply(model_deployment("asr-plain", namespace, "model-fr", endpoint=gw))

    def routes():
        got = {
            n: kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", n, namespace)
            for n in ("asr-es", "asr-plain")
        }
        return got if all(got.values()) else None

    got = wait_for(routes, timeout=120, what="both HTTPRoutes")
    es = got["asr-es"]["spec"]["rules"][0]["matches"]
    assert es == [
        {
            "path": {"type": "PathPrefix", "value": "/v2"},
            "headers": [{"type": "Exact", "name": "x-language-pair", "value": "en>es"}],
        }
    ]
    assert got["asr-plain"]["spec"]["rules"][0]["matches"] == [
        {"path": {"type": "PathPrefix", "value": "/v2"}}
    ]
    # Each pair has its own rollout state.
    for name, model in (("asr-es", "model-es"), ("asr-plain", "model-fr")):
        md = wait_for(
            lambda name=name: (
                m
                if (m := kube.get(API, "ModelDeployment", name, namespace))
                and (m.get("status") or {}).get("stableModel")
                else None
            ),
            timeout=120,
            what=f"{name} serving",
        )
        assert md["status"]["stableModel"] == model


def test_models_and_endpoints_carry_no_finalizer_and_their_loops_end_with_them(operator, kube, namespace):
    """Deleting an STTModel or a ModelDeployment waits for nothing (their children go with
    their ownerReferences), even with the operator down; the operator still ends their loops.
    A finalizer left by an older operator is removed."""
    legacy = stt_model("model-old", namespace)
    legacy["metadata"]["finalizers"] = [FINALIZER]
    kube.apply(legacy)
    kube.apply(stt_model("model-a", namespace))
    kube.apply(model_deployment("asr", namespace, "model-a"))
    objects = [("STTModel", "model-old"), ("STTModel", "model-a"), ("ModelDeployment", "asr")]

    def serving(what: str) -> None:
        wait_for(
            lambda: (
                (md := kube.get(API, "ModelDeployment", "asr", namespace))
                and (md.get("status") or {}).get("stableModel")
            ),
            timeout=120,
            what=what,
        )

    serving("asr serving model-a")

    def finalizers() -> dict[str, list[str]]:
        found = {name: kube.get(API, kind, name, namespace) for kind, name in objects}
        return {name: (o or {}).get("metadata", {}).get("finalizers") or [] for name, o in found.items()}

    wait_for(lambda: not any(finalizers().values()), timeout=60, what="no finalizer left")
    assert operator.loops(namespace) == {"STTModel": 2, "ModelDeployment": 1}
    for kind, name in objects:
        kube.delete(API, kind, name, namespace)
    wait_for(
        lambda: all(kube.get(API, kind, name, namespace) is None for kind, name in objects),
        timeout=30,
        what="the objects gone",
    )
    wait_for(lambda: operator.loops(namespace) == {}, timeout=30, what="their loops ended")
    # The same names again: new objects, new loops, served as before.
    kube.apply(stt_model("model-a", namespace))
    kube.apply(model_deployment("asr", namespace, "model-a"))
    serving("a new asr serving model-a")
    assert operator.loops(namespace) == {"STTModel": 1, "ModelDeployment": 1}


def test_deleting_a_namespace_releases_the_operators_finalizers(operator, kube, namespace):
    """Kopf puts a finalizer on every ABTest (its deletion handler gives the endpoint back), and
    an operator limited to namespace patterns stops serving a namespace once it is marked for
    deletion, often before it has removed it: the namespace then stayed Terminating for good.
    The operator releases it."""
    kube.apply(stt_model("model-a", namespace))
    kube.apply(stt_model("model-b", namespace))
    kube.apply(model_deployment("asr", namespace, "model-a"))
    kube.apply(
        {
            "apiVersion": API,
            "kind": "ABTest",
            "metadata": {"name": "ab", "namespace": namespace},
            "spec": {
                "endpoint": {"modelDeploymentRef": {"name": "asr"}},
                "variants": [
                    {"name": "control", "model": {"name": "model-a"}, "weight": 50},
                    {"name": "candidate", "model": {"name": "model-b"}, "weight": 50},
                ],
                "primaryMetric": {"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.05},
            },
        }
    )

    def finalized() -> bool:
        found = kube.get(API, "ABTest", "ab", namespace)
        return bool(found and FINALIZER in (found["metadata"].get("finalizers") or []))

    wait_for(finalized, timeout=60, what="Kopf's finalizer on the ABTest")
    kube.delete("v1", "Namespace", namespace, None)
    try:
        wait_for(
            lambda: kube.get("v1", "Namespace", namespace, None) is None, 90, f"namespace {namespace} gone"
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{operator.log_tail(30)}") from exc
    # Kopf stops watching a namespace being deleted, often before its objects' DELETED events:
    # their loops end with the namespace all the same, the ABTest's Kopf daemon included.
    wait_for(lambda: operator.loops(namespace) == {}, timeout=30, what="the namespace's loops ended")
