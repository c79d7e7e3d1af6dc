"""Capacity pre-flight and spec.progressDeadline end to end: the real operator process and a
real kube-apiserver whose two kwok GPU nodes advertise 4 `nvidia.com/gpu` each (the real node
is tainted, so a Triton pod without its toleration cannot use it either).

A canary whose model asks for 8 GPUs per pod (more than any node has) never gets a stack:
the ModelDeployment says `CapacityAvailable=False` (InsufficientGPU) with an Event naming the
GPU shortfall, the stable keeps 100 % of the route, and at `progressDeadline` the rollout is
rolled back with reason ProgressDeadlineExceeded.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from stt_harness.kubewait import condition, wait_for
from stt_harness.resources import API, stt_model
from stt_harness.routewatch import RouteWatch, serve_then_switch
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.services.kube import Kube

pytestmark = pytest.mark.integration

NAME = "asr"


def _events(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    return [
        e for e in kube.list("v1", "Event", namespace) if (e.get("involvedObject") or {}).get("name") == NAME
    ]


def test_canary_wanting_more_gpus_than_any_node_is_blocked_then_aborted_at_the_deadline(
    operator, kube: Kube, operator_namespace: str
) -> None:
    ns = operator_namespace
    kube.apply(stt_model("model-a", ns))
    greedy = stt_model("model-b", ns)
    greedy["spec"]["resources"] = {"gpu": 8}  # the kwok nodes have 4 each
    kube.apply(greedy)
    manifest = {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": ns},
        "spec": {
            "model": {"name": "model-a"},
            "replicas": 1,
            "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
            "scaleDownDelay": "0s",
            "progressDeadline": "25s",
            "endpoint": {"gatewayRef": {"name": "stt-gateway"}, "hostnames": ["stt.example.test"]},
        },
    }
    watch = RouteWatch(kube, ns, NAME, (API, "ModelDeployment", NAME), {LABEL_DEPLOYMENT: NAME})
    serve_then_switch(kube, manifest, watch)

    def no_canary_stack() -> None:
        names = [
            d["metadata"]["name"] for d in kube.list("apps/v1", "Deployment", ns, {LABEL_DEPLOYMENT: NAME})
        ]
        assert not any("model-b" in n for n in names), names

    md = watch.until(
        lambda md: condition(md, "CapacityAvailable").get("status") == "False" and md,
        timeout=60,
        what="CapacityAvailable=False",
    )
    no_canary_stack()
    blocked = condition(md, "CapacityAvailable")
    assert blocked["reason"] == "InsufficientGPU", blocked
    # Other tests' pods may hold GPUs on the shared kwok nodes, so the free count is at most 4
    # (a node's capacity), never the 8 asked for.
    free = re.search(r"nvidia\.com/gpu needs 8 per pod, at most (\d+) free", blocked["message"])
    assert free and int(free.group(1)) <= 4, blocked
    assert md["status"]["phase"] == "Progressing" and md["status"]["stableModel"] == "model-a"
    event = wait_for(
        lambda: next((e for e in _events(kube, ns) if e["reason"] == "InsufficientGPU"), None),
        timeout=30,
        what="an InsufficientGPU Event",
    )
    assert event["type"] == "Warning" and "nvidia.com/gpu" in event["message"], event

    md = watch.until(
        lambda md: condition(md, "Progressing").get("reason") == "ProgressDeadlineExceeded" and md,
        timeout=90,
        what="the rollout aborted at progressDeadline",
    )
    no_canary_stack()
    status = md["status"]
    assert condition(md, "Progressing")["status"] == "False"
    assert "progressDeadline 25s" in condition(md, "Progressing")["message"]
    assert status["stableModel"] == "model-a" and not status.get("canaryRevision"), status
    assert status["lastRollback"]["code"] == "ProgressDeadlineExceeded"
    assert [(r["model"], r["outcome"]) for r in status["revisions"]][-1] == ("model-b", "RolledBack")
    # The stable served everything all along: every route seen is model-a alone at 100 %.
    assert watch.seen and all(len(w) == 1 and "model-a" in w[0][0] and w[0][1] == 100 for w in watch.seen), (
        watch.seen
    )
    reasons = wait_for(
        lambda: (
            {"ProgressDeadlineExceeded", "RolledBack"} <= (r := {e["reason"] for e in _events(kube, ns)})
            and r
        ),
        timeout=30,
        what="ProgressDeadlineExceeded and RolledBack Events",
    )
    assert "Promoted" not in reasons
    # It stays blocked until the spec changes: the route never moves.
    watch.until(
        lambda md: condition(md, "Available").get("status") == "True", timeout=30, what="stable Available"
    )
    assert all(w[0][1] == 100 for w in watch.seen)
