"""`Kube.apply` of revision Services against the real kube-apiserver: new ones are headless
(no ClusterIP allocated), one an older operator made with a ClusterIP keeps that address (the
apiserver never lets it change) while the rest of the manifest still applies, and a manifest
the apiserver refuses for another reason is still refused."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api

from stt_operator.services.kube import Kube, KubeError

pytestmark = pytest.mark.integration


def service(name: str, namespace: str, port: int, headless: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"app": name}, "ports": [{"name": "grpc", "port": port}]}
    if headless:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def test_new_revision_services_are_headless(kube_api: ApiClient, namespace: str) -> None:
    Kube(kube_api).apply(service("fresh", namespace, 8001))
    live = CoreV1Api(kube_api).read_namespaced_service("fresh", namespace)
    assert live.spec.cluster_ip == "None"


def test_a_service_with_an_address_keeps_it(kube_api: ApiClient, namespace: str) -> None:
    kube = Kube(kube_api)
    kube.apply(service("older", namespace, 8001, headless=False))  # as operators before headless
    core = CoreV1Api(kube_api)
    address = core.read_namespaced_service("older", namespace).spec.cluster_ip
    assert address not in (None, "", "None")

    kube.apply(service("older", namespace, 9001))  # the headless manifest of today's operator
    live = core.read_namespaced_service("older", namespace)
    assert live.spec.cluster_ip == address
    assert [p.port for p in live.spec.ports] == [9001]  # the rest of the manifest applied


def test_other_refusals_still_raise(kube_api: ApiClient, namespace: str) -> None:
    with pytest.raises(KubeError) as refused:
        Kube(kube_api).apply(service("bad", namespace, 70000))  # no such port
    assert refused.value.status == 422


def test_a_summarised_list_is_decoded_with_the_collector_paused(kube_api: ApiClient, namespace: str) -> None:
    import gc

    kube = Kube(kube_api)
    for i in range(3):
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i}", "namespace": namespace, "labels": {"pick": str(i % 2)}},
                "data": {"k": "v" * (i + 1)},
            }
        )
    seen: list[bool] = []

    def summarize(items: list[dict[str, Any]]) -> list[str]:
        seen.append(gc.isenabled())
        # the items carry the kind the apiserver leaves out of list items, as `Kube.list` gives them
        names = (f"{item['kind']}/{item['metadata']['name']}" for item in items)
        return sorted(name for name in names if name != "ConfigMap/kube-root-ca.crt")  # the cluster's

    assert gc.isenabled()
    names = kube.list_summary("v1", "ConfigMap", namespace, summarize, field_selector="metadata.name!=cm-1")
    assert names == ["ConfigMap/cm-0", "ConfigMap/cm-2"]
    assert seen == [False]  # decoded and summed with no collection possible
    assert gc.isenabled()  # and the collector is back on afterwards

    with pytest.raises(KubeError) as refused:  # refusals raise as from every other call
        kube.list_summary("v1", "ConfigMap", namespace, summarize, field_selector="no.such.field=1")
    assert refused.value.status == 400
    assert gc.isenabled()
