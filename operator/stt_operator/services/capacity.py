"""Observe what the capacity pre-flight needs: the Nodes, and the pods bound to the nodes a
revision may use.

Nodes are few and change rarely: one cluster-wide list, kept for `ttl_s` and shared by every
reconcile. Pods are many: they are read only when a pre-flight runs (a new revision is about
to be created, or waits for room), and only those bound to the matching nodes, one
field-selected list per node (`spec.nodeName=<node>`, finished pods excluded by the
apiserver), so the operator never lists every pod of a large cluster. Of each node's pods only
the sum of their requests is kept, for `ttl_s` too, and one reconcile at a time reads it: a
hundred canaries starting at once share one list per node (bench/scale/RESULTS.md measured
2 GB of resident memory when each held its own, and 30 MB still held in trimmed pods). The
pods are decoded with the cyclic collector paused (`Kube.list_summary`): at 10,000 endpoints
each list otherwise cost a full collection of every cached object.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from stt_operator.rollout.capacity import CapacityVerdict, Resources, fit, node_matches, requested_by_node
from stt_operator.services.kube import Kube

ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


class CapacityObserver:
    def __init__(self, kube: Kube, ttl_s: float = 5.0) -> None:
        self.kube = kube
        self.ttl_s = ttl_s
        self._nodes: list[dict[str, Any]] = []
        self._read_at = float("-inf")
        self._lock = threading.Lock()
        self._requested: dict[str, tuple[float, Resources]] = {}  # node -> (read at, its pods' requests)
        self._node_locks: dict[str, threading.Lock] = {}

    def nodes(self) -> list[dict[str, Any]]:
        with self._lock:
            if time.monotonic() - self._read_at > self.ttl_s:
                self._nodes = self.kube.list("v1", "Node", None)
                self._read_at = time.monotonic()
            return self._nodes

    def requested_on(self, node_names: Sequence[str]) -> dict[str, Resources]:
        return {node: self._requested_on(node) for node in node_names}

    def _requested_on(self, node: str) -> Resources:
        with self._lock:
            node_lock = self._node_locks.setdefault(node, threading.Lock())
        with node_lock:  # one list per node at a time; the others wait and share it
            read_at, requested = self._requested.get(node, (float("-inf"), {}))
            if time.monotonic() - read_at > self.ttl_s:
                requested = self.kube.list_summary(
                    "v1",
                    "Pod",
                    None,
                    lambda pods: requested_by_node(pods).get(node, {}),
                    field_selector=f"spec.nodeName={node},{ACTIVE_PODS}",
                )
                self._requested[node] = (time.monotonic(), requested)
            return requested

    def verdict(self, pod_spec: Mapping[str, Any], replicas: int) -> CapacityVerdict:
        nodes = self.nodes()
        matching = [n for n in nodes if node_matches(pod_spec, n)]
        return fit(pod_spec, replicas, nodes, self.requested_on([n["metadata"]["name"] for n in matching]))
