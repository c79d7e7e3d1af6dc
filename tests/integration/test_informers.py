"""The owned-object informers against the real kube-apiserver: the label selector is applied
server-side, changes arrive in order, the held copy follows the Deployment controller's status
updates, a deletion is reported, the watch resumes after the server ends it. (The relist after
410 Gone is tested in tests/unit/operator/test_informer_cache.py: this apiserver's watch cache
answered a watch from resourceVersion 1, even after etcd was compacted, with a bookmark, not
410, so it cannot be provoked here.)"""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest
from kubernetes.client import ApiClient, AppsV1Api

from stt_operator.services.informers import Informer, WatchedKind

pytestmark = pytest.mark.integration

DEPLOYMENTS = WatchedKind("apps/v1", "Deployment", "deployments", keep=True)
OURS = {"app.kubernetes.io/managed-by": "stt-operator"}


def deployment(name: str, labels: dict[str, str]) -> dict[str, Any]:
    selector = {"app": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [{"name": "c", "image": "stt-informer-test:none"}]},
            },
        },
    }


def next_event(events: queue.Queue[tuple[str, str]], name: str, kind: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            event = events.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if event == (kind, name):
            return
    raise AssertionError(f"no {kind} event for {name} within {timeout_s}s")


def test_informer_follows_owned_deployments(kube_api: ApiClient, namespace: str) -> None:
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    seen_names: list[str] = []

    def on_event(kind: str, event_type: str, body: Any) -> None:
        seen_names.append(body["metadata"]["name"])
        events.put((event_type, body["metadata"]["name"]))

    apps = AppsV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("before", OURS))
    informer = Informer(
        kube_api, DEPLOYMENTS, namespace, "app.kubernetes.io/managed-by=stt-operator", on_event, timeout_s=5
    )
    informer.start()
    try:
        assert informer.synced.wait(30), "the first list never came in"
        next_event(events, "before", "ADDED")  # what existed is reported by the list
        apps.create_namespaced_deployment(namespace, deployment("ours", OURS))
        apps.create_namespaced_deployment(namespace, deployment("theirs", {"team": "x"}))
        next_event(events, "ours", "ADDED")
        # The Deployment controller's status update reaches the held copy (trimmed).
        deadline = time.monotonic() + 60
        held: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            held = [d for d in informer.items(namespace, None) or [] if d["metadata"]["name"] == "ours"]
            if held and (held[0].get("status") or {}).get("observedGeneration") == 1:
                break
            time.sleep(0.2)
        assert held and held[0]["status"]["observedGeneration"] == 1, held
        assert "template" not in held[0]["spec"] and "managedFields" not in held[0]["metadata"]
        # Survives the server ending the stream (timeoutSeconds=5): resumes, misses nothing.
        time.sleep(7)
        apps.delete_namespaced_deployment("ours", namespace)
        next_event(events, "ours", "DELETED")
        names = sorted(d["metadata"]["name"] for d in informer.items(namespace, None) or [])
        assert names == ["before"]
        assert "theirs" not in seen_names  # filtered by the apiserver, never delivered
        # A consumer that ignored events for a while (a paused replica) asks for everything
        # again: each object is reported, unchanged or not, the filtered ones still not.
        informer.report_all_soon()
        next_event(events, "before", "MODIFIED")
        assert "theirs" not in seen_names
    finally:
        informer.stop()
