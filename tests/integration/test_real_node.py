"""The real node beside the kwok GPU nodes: kubelet + containerd run pods from locally built
images, readiness probes pass, CoreDNS resolves Service names, kube-proxy makes ClusterIPs work
(from pods and from the host), the host reaches pod IPs, and GPU-requesting pods run on CPU."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, CoreV1Api

from stt_harness.cluster import GPU_RESOURCE, LocalCluster
from stt_harness.imagetar import image_tar
from stt_harness.kubewait import wait_for
from stt_harness.node import RealNode, on_real_node

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (Makefile deps)
IMAGE = "stt.local/busybox-web:1"
PAGE = "served from the real node\n"
CLIENT_SCRIPT = (
    "ip=$(busybox nslookup FQDN | busybox awk '/^Address: /{print $2}' | busybox tail -n1)"
    " && echo resolved=$ip"
    " && printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 5 $ip 80"
)


@pytest.fixture(scope="session")
def web_image(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A one-layer image built here (busybox + a page) and imported into the node's containerd."""
    d = tmp_path_factory.mktemp("image")
    (d / "index.html").write_text(PAGE)
    tar = d / "web.tar"
    image_tar(tar, IMAGE, {"bin/busybox": BUSYBOX, "www/index.html": d / "index.html"}, ["/bin/busybox"])
    real_node.import_image(tar)
    assert f"docker.io/{IMAGE}" in real_node.images() or IMAGE in real_node.images()
    return IMAGE


def web_pod(image: str, labels: dict[str, str] | None = None, gpus: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "web",
        "image": image,
        "imagePullPolicy": "Never",
        "args": ["httpd", "-f", "-p", "8080", "-h", "/www"],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
    }
    if gpus:
        container["resources"] = {"limits": {GPU_RESOURCE: str(gpus)}}
    return {
        "metadata": {"name": "web", "labels": labels or {"app": "web"}},
        "spec": on_real_node({"containers": [container], "terminationGracePeriodSeconds": 1}),
    }


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def ready_pod(core: CoreV1Api, ns: str, name: str, timeout: float = 180.0) -> Any:
    def probe() -> Any:
        pod = core.read_namespaced_pod(name, ns)
        conds = {c.type: c.status for c in pod.status.conditions or []}
        return pod if conds.get("Ready") == "True" else None

    return wait_for(probe, timeout, f"pod {ns}/{name} Ready")


@pytest.fixture
def core(kube_api: ApiClient) -> Iterator[CoreV1Api]:
    yield CoreV1Api(kube_api)


def test_node_ready_with_gpu_capacity(cluster: LocalCluster, real_node: RealNode, core: CoreV1Api) -> None:
    node = core.read_node(real_node.name)
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert node.status.capacity[GPU_RESOURCE] == "4"
    assert node.status.allocatable[GPU_RESOURCE] == "4"
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == real_node.bridge_ip
    assert node.metadata.labels["stt.dev/node"] == "real"
    assert [t.key for t in node.spec.taints] == ["stt.dev/real-node"]
    assert node.status.node_info.kubelet_version == "v1.36.3"
    assert node.status.node_info.container_runtime_version.startswith("containerd://1.")
    # kwok still plays every other node.
    assert set(cluster.node_names) == {*cluster.kwok_node_names, real_node.name}


def test_pod_from_local_image_passes_readiness_and_host_reaches_it(
    real_node: RealNode, web_image: str, core: CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, web_pod(web_image))
    pod = ready_pod(core, namespace, "web")
    assert pod.spec.node_name == real_node.name
    status = pod.status.container_statuses[0]
    assert status.ready and status.state.running is not None
    assert status.image_id.startswith("sha256:") or "sha256:" in status.image_id
    # The pod has an address on the node's bridge, and the host fetches the page from it.
    assert pod.status.pod_ip.startswith(real_node.bridge_ip.rsplit(".", 1)[0] + ".")
    assert fetch(f"http://{pod.status.pod_ip}:8080/index.html") == PAGE


def test_pod_resolves_service_name_and_reaches_cluster_ip(
    cluster: LocalCluster, real_node: RealNode, web_image: str, core: CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, web_pod(web_image))
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    ready_pod(core, namespace, "web")
    svc = core.read_namespaced_service("web", namespace)
    assert svc.spec.cluster_ip.startswith(real_node.service_cidr.rsplit(".", 2)[0])
    # From the host: kube-proxy's rules in the node's namespace carry the ClusterIP.
    assert wait_for(lambda: _try_fetch(f"http://{svc.spec.cluster_ip}/index.html"), 60, "ClusterIP") == PAGE

    fqdn = f"web.{namespace}.svc.cluster.local"
    client = {
        "metadata": {"name": "client"},
        "spec": on_real_node(
            {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "client",
                        "image": web_image,
                        "imagePullPolicy": "Never",
                        # busybox's own resolver (nslookup) asks CoreDNS; its static-glibc wget
                        # cannot resolve, so nc sends the request to the address found.
                        "args": ["sh", "-c", CLIENT_SCRIPT.replace("FQDN", fqdn)],
                    }
                ],
            }
        ),
    }
    core.create_namespaced_pod(namespace, client)

    def finished() -> str | None:
        phase = core.read_namespaced_pod("client", namespace).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(finished, 180, "client pod to finish")
    logs = cluster.kubectl("logs", "-n", namespace, "client")
    assert phase == "Succeeded", logs
    assert f"resolved={svc.spec.cluster_ip}\n" in logs  # CoreDNS answered with the ClusterIP
    assert "HTTP/1.1 200 OK" in logs and logs.endswith(PAGE)  # and the page came through it


def _try_fetch(url: str) -> str | None:
    try:
        return fetch(url)
    except OSError:
        return None


def test_gpu_requesting_pod_schedules_on_real_node_and_runs(
    real_node: RealNode, web_image: str, core: CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, web_pod(web_image, gpus=2))
    pod = ready_pod(core, namespace, "web")
    assert pod.spec.node_name == real_node.name
    assert pod.spec.containers[0].resources.limits[GPU_RESOURCE] == "2"
    assert fetch(f"http://{pod.status.pod_ip}:8080/index.html") == PAGE
    # More GPUs than the node has: it stays Pending, the scheduler counts the extended resource.
    big = web_pod(web_image, gpus=5)
    big["metadata"]["name"] = "too-big"
    core.create_namespaced_pod(namespace, big)

    def unschedulable() -> bool:
        conds = core.read_namespaced_pod("too-big", namespace).status.conditions or []
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conds)

    wait_for(unschedulable, 60, "pod asking for 5 GPUs to be Unschedulable")
    # A pod that does not tolerate the real node's taint is faked by kwok as before.
    fake = {
        "metadata": {"name": "fake"},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/x:1"}]},
    }
    core.create_namespaced_pod(namespace, fake)
    node = wait_for(
        lambda: core.read_namespaced_pod("fake", namespace).spec.node_name, 60, "fake pod scheduled"
    )
    assert node.startswith("kwok-gpu-")


def test_pods_reach_the_apiserver_through_the_kubernetes_service(
    cluster: LocalCluster, real_node: RealNode, web_image: str, core: CoreV1Api, namespace: str
) -> None:
    """In-cluster clients (the operator's pod, later) find the apiserver as every cluster offers it."""
    slices = cluster.kubectl(
        "get", "endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes", "-o", "json"
    )
    addresses = {a for s in json.loads(slices)["items"] for e in s["endpoints"] for a in e["addresses"]}
    assert addresses == {real_node.host_ip}
    script = (
        "ip=$(busybox nslookup kubernetes.default.svc.cluster.local"
        " | busybox awk '/^Address: /{print $2}' | busybox tail -n1)"
        " && echo resolved=$ip && busybox nc -w 3 $ip 443 </dev/null && echo connected"
    )
    pod = {
        "metadata": {"name": "api-client"},
        "spec": on_real_node(
            {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "c",
                        "image": web_image,
                        "imagePullPolicy": "Never",
                        "args": ["sh", "-c", script],
                    }
                ],
            }
        ),
    }
    core.create_namespaced_pod(namespace, pod)

    def finished() -> str | None:
        phase = core.read_namespaced_pod("api-client", namespace).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(finished, 180, "api-client pod to finish")
    logs = cluster.kubectl("logs", "-n", namespace, "api-client")
    assert phase == "Succeeded", logs
    kubernetes_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    assert f"resolved={kubernetes_ip}\n" in logs and logs.endswith("connected\n")


def test_pod_with_the_charts_security_context_and_volumes_runs(
    cluster: LocalCluster, real_node: RealNode, web_image: str, core: CoreV1Api, namespace: str
) -> None:
    """The operator chart's restricted settings (non-root, RuntimeDefault seccomp, read-only
    root, no capabilities) with ConfigMap, emptyDir and service-account token volumes."""
    values = yaml.safe_load((REPO / "charts" / "stt-operator" / "values.yaml").read_text())
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"k": "v"}})
    pod = web_pod(web_image)
    spec = pod["spec"]
    spec["securityContext"] = values["podSecurityContext"]
    container = spec["containers"][0]
    container["securityContext"] = values["securityContext"]
    container["volumeMounts"] = [
        {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    spec["volumes"] = [{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "tmp", "emptyDir": {}}]
    core.create_namespaced_pod(namespace, pod)
    ready = ready_pod(core, namespace, "web")
    assert ready.spec.node_name == real_node.name
    assert fetch(f"http://{ready.status.pod_ip}:8080/index.html") == PAGE
    script = (
        "busybox id -u; busybox cat /etc/cfg/k; echo; busybox touch /tmp/ok && echo tmp-ok; "
        "busybox touch /x 2>/dev/null || echo root-ro; "
        "busybox test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token"
    )
    # kubectl exec goes apiserver -> kubelet -> containerd's stream server, all for real.
    out = cluster.kubectl("exec", "-n", namespace, "web", "--", "/bin/busybox", "sh", "-c", script)
    assert out.split() == ["65532", "v", "tmp-ok", "root-ro", "token"], out
