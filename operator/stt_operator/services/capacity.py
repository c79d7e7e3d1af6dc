"""Observe what the capacity pre-flight needs: the Nodes, and the pods bound to the nodes a
revision may use.

Nodes are few and change rarely: one cluster-wide list, kept for `ttl_s` and shared by every
reconcile. Pods are many: they are read only when a pre-flight runs (a new revision is about
to be created, or waits for room), and only those bound to the matching nodes, one
field-selected list per node (`spec.nodeName=<node>`, finished pods excluded by the
apiserver), so the operator never lists every pod of a large cluster. Each node's pods are
kept for `ttl_s` too, trimmed to what `fit` reads, and read by one reconcile at a time: a
hundred canaries starting at once share one list per node instead of holding a hundred copies
(bench/scale/RESULTS.md measured 2 GB of resident memory before).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from stt_operator.rollout.capacity import CapacityVerdict, fit, node_matches
from stt_operator.services.kube import Kube

ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


def _requests_only(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What `rollout/capacity.py: free_by_node` reads of a pod."""
    spec = pod.get("spec") or {}

    def containers(key: str) -> list[dict[str, Any]]:
        return [{"resources": c.get("resources") or {}} for c in spec.get(key) or []]

    kept: dict[str, Any] = {"nodeName": spec.get("nodeName"), "containers": containers("containers")}
    if spec.get("initContainers"):
        kept["initContainers"] = containers("initContainers")
    if spec.get("overhead"):
        kept["overhead"] = spec["overhead"]
    return {"spec": kept, "status": {"phase": (pod.get("status") or {}).get("phase")}}


class CapacityObserver:
    def __init__(self, kube: Kube, ttl_s: float = 5.0) -> None:
        self.kube = kube
        self.ttl_s = ttl_s
        self._nodes: list[dict[str, Any]] = []
        self._read_at = float("-inf")
        self._lock = threading.Lock()
        self._pods: dict[str, tuple[float, list[dict[str, Any]]]] = {}  # node -> (read at, pods)
        self._node_locks: dict[str, threading.Lock] = {}

    def nodes(self) -> list[dict[str, Any]]:
        with self._lock:
            if time.monotonic() - self._read_at > self.ttl_s:
                self._nodes = self.kube.list("v1", "Node", None)
                self._read_at = time.monotonic()
            return self._nodes

    def pods_on(self, node_names: Sequence[str]) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = []
        for node in node_names:
            pods += self._pods_on(node)
        return pods

    def _pods_on(self, node: str) -> list[dict[str, Any]]:
        with self._lock:
            node_lock = self._node_locks.setdefault(node, threading.Lock())
        with node_lock:  # one list per node at a time; the others wait and share it
            read_at, pods = self._pods.get(node, (float("-inf"), []))
            if time.monotonic() - read_at > self.ttl_s:
                found = self.kube.list(
                    "v1", "Pod", None, field_selector=f"spec.nodeName={node},{ACTIVE_PODS}"
                )
                pods = [_requests_only(p) for p in found]
                self._pods[node] = (time.monotonic(), pods)
            return pods

    def verdict(self, pod_spec: Mapping[str, Any], replicas: int) -> CapacityVerdict:
        nodes = self.nodes()
        matching = [n for n in nodes if node_matches(pod_spec, n)]
        pods = self.pods_on([n["metadata"]["name"] for n in matching])
        return fit(pod_spec, replicas, nodes, pods)
