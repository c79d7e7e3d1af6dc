"""The local control plane behaves like a cluster: fake GPU nodes are Ready, the controllers
(Deployment, ReplicaSet, Job, garbage collector) and the scheduler work, kwok runs pods, and the
Gateway API CRDs are served with their schema validation."""

from __future__ import annotations

import contextlib
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    BatchV1Api,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
)
from kubernetes.client.exceptions import ApiException

from stt_harness.cluster import GPU_RESOURCE, LocalCluster
from stt_harness.kubewait import wait_for

pytestmark = pytest.mark.integration


def pod_spec(gpus: int) -> dict[str, Any]:
    return {
        "containers": [
            {
                "name": "triton",
                "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                "resources": {"limits": {GPU_RESOURCE: str(gpus)}},
            }
        ]
    }


def test_nodes_ready_with_gpu_capacity(cluster: LocalCluster, kube_api: ApiClient) -> None:
    nodes = {n.metadata.name: n for n in CoreV1Api(kube_api).list_node().items}
    assert sorted(nodes) == sorted(cluster.node_names)
    for node in nodes.values():
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True", node.metadata.name
        assert node.status.allocatable[GPU_RESOURCE] == "4"
        assert node.status.capacity[GPU_RESOURCE] == "4"
        assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
        assert not [t for t in node.spec.taints or [] if t.key.startswith("node.kubernetes.io/")]


def test_kubectl_helper_targets_the_cluster(cluster: LocalCluster) -> None:
    out = cluster.kubectl("get", "nodes", "-o", "name")
    assert sorted(out.split()) == sorted(f"node/{n}" for n in cluster.node_names)


def test_deployment_becomes_available_on_kwok_nodes(
    cluster: LocalCluster, kube_api: ApiClient, namespace: str
) -> None:
    apps = AppsV1Api(kube_api)
    labels = {"app": "triton"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "triton"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec(gpus=2)},
            },
        },
    )

    def available() -> bool:
        st = apps.read_namespaced_deployment_status("triton", namespace).status
        return st.available_replicas == 3

    wait_for(available, what="Deployment triton to have 3 available replicas")
    pods = CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector="app=triton").items
    assert len(pods) == 3
    for pod in pods:
        assert pod.spec.node_name in cluster.node_names
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
        assert pod.status.phase == "Running"


def test_gpu_capacity_limits_scheduling(cluster: LocalCluster, kube_api: ApiClient, namespace: str) -> None:
    """2 nodes x 4 GPUs: a 9th single-GPU pod cannot be placed and stays Pending."""
    apps = AppsV1Api(kube_api)
    labels = {"app": "greedy"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "greedy"},
            "spec": {
                "replicas": 9,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec(gpus=1)},
            },
        },
    )
    core = CoreV1Api(kube_api)

    def placed() -> list[Any] | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=greedy").items
        return pods if len(pods) == 9 and sum(bool(p.spec.node_name) for p in pods) == 8 else None

    pods = wait_for(placed, what="8 of 9 GPU pods scheduled")
    pending = [p for p in pods if not p.spec.node_name]
    assert len(pending) == 1

    def unschedulable() -> bool:
        pod = core.read_namespaced_pod(pending[0].metadata.name, namespace)
        conds = {c.type: c for c in pod.status.conditions or []}
        return "PodScheduled" in conds and conds["PodScheduled"].reason == "Unschedulable"

    wait_for(unschedulable, what="the 9th pod to be marked Unschedulable")


def test_job_runs_a_pod_to_completion(kube_api: ApiClient, namespace: str) -> None:
    BatchV1Api(kube_api).create_namespaced_job(
        namespace,
        {
            "metadata": {"name": "validate"},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {**pod_spec(gpus=1), "restartPolicy": "Never"}},
            },
        },
    )
    pods = wait_for(
        lambda: CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector="job-name=validate").items,
        what="the Job's pod",
    )
    assert len(pods) == 1
    assert pods[0].metadata.owner_references[0].kind == "Job"

    def complete() -> bool:
        st = BatchV1Api(kube_api).read_namespaced_job_status("validate", namespace).status
        return any(c.type == "Complete" and c.status == "True" for c in st.conditions or [])

    wait_for(complete, what="Job validate to complete (kwok marks Job pods Succeeded)")


def test_httproute_with_weighted_backends(kube_api: ApiClient, namespace: str) -> None:
    api = CustomObjectsApi(kube_api)
    gvk = ("gateway.networking.k8s.io", "v1", namespace, "httproutes")

    def route(name: str, weights: tuple[int, int]) -> dict[str, Any]:
        return {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {
                "parentRefs": [{"name": "stt-gateway"}],
                "rules": [
                    {
                        "backendRefs": [
                            {"name": "whisper-stable", "port": 8000, "weight": weights[0]},
                            {"name": "whisper-canary", "port": 8000, "weight": weights[1]},
                        ]
                    }
                ],
            },
        }

    api.create_namespaced_custom_object(*gvk, route("asr", (90, 10)))
    got = api.get_namespaced_custom_object(*gvk, "asr")
    weights = [b["weight"] for b in got["spec"]["rules"][0]["backendRefs"]]
    assert weights == [90, 10]

    # The CRD's OpenAPI schema is enforced: a negative weight is rejected at admission.
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object(*gvk, route("bad", (-1, 10)))
    assert err.value.status == 422
    assert "weight" in err.value.body


def test_garbage_collector_deletes_owned_configmap(kube_api: ApiClient, namespace: str) -> None:
    core = CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "owned",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
                ],
            },
            "data": {"k": "v"},
        },
    )
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def gone() -> bool:
        try:
            core.read_namespaced_config_map("owned", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, what="the garbage collector to delete ConfigMap owned")


def test_command_line_cluster_serves_until_interrupted(cluster: LocalCluster) -> None:
    """`python -m stt_harness.cluster` (what `make cluster` runs) prints a working
    kubeconfig, stays up, and on Ctrl-C stops every component and removes its directory."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stt_harness.cluster", "--nodes", "1", "--no-default-crds"],
        env={**cluster.env(), "STT_TOOLS_DIR": str(cluster.tools_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True).start()
    try:
        deadline, seen = time.monotonic() + 180, []
        while not any(line.startswith("export KUBECONFIG=") for line in seen):
            assert proc.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "".join(seen)
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))
        kubeconfig = Path(next(line for line in seen if line.startswith("export KUBECONFIG="))[18:].strip())
        assert kubeconfig != cluster.kubeconfig
        out = subprocess.run(
            [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", "get", "nodes", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.stdout.split() == ["node/kwok-gpu-0"], out.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert not kubeconfig.parent.exists()
        # The apiserver is gone too: its port refuses connections.
        port = int(next(line for line in seen if line.startswith("cluster ready")).rsplit(":", 1)[1])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_helm_installs_a_chart(
    cluster: LocalCluster, kube_api: ApiClient, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "hello"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: hello\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\n"
        "data:\n  text: {{ .Values.text | quote }}\n"
    )
    cluster.helm("install", "hi", str(chart), "-n", namespace, "--set", "text=hello", "--wait")
    cm = CoreV1Api(kube_api).read_namespaced_config_map("hi-greeting", namespace)
    assert cm.data == {"text": "hello"}
    assert "hi" in cluster.helm("list", "-n", namespace, "-q").split()


def test_rbac_is_enforced_for_service_accounts(
    cluster: LocalCluster, kube_api: ApiClient, namespace: str
) -> None:
    core = CoreV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    kc = cluster.service_account_kubeconfig(namespace, "reader")

    def can_list_pods() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={kc}", "-n", namespace, "get", "pods"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    denied = can_list_pods()
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

    RbacAuthorizationV1Api(kube_api).create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        },
    )
    RbacAuthorizationV1Api(kube_api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    wait_for(lambda: can_list_pods().returncode == 0, what="the RoleBinding to grant list pods")
