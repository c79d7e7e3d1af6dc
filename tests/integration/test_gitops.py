"""Argo CD health checks and actions, retry and undo, on the real control plane and operator.

The chart's Lua scripts (rendered by the real helm, run in real Lua 5.1, harness/stt_harness/
argocd.py) judge live objects as the operator leaves them, and their actions are written back the
way Argo CD does (a merge patch of what the script changed). Retry and undo go through
`kubectl stt` (operator/stt_operator/kubectl_plugin.py) and the annotations the controller reads.
With STT_CAPTURE_ARGOCD_FIXTURES=1 the objects are kept in tests/data/argocd for the unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stt_harness.argocd import ArgoCD, Customizations, capture, merge_patch, render_customizations
from stt_harness.cluster import ensure_tools
from stt_harness.kubewait import condition, event_reasons, wait_for
from stt_harness.resources import API, PAUSED_CANARY, model_deployment, stt_model
from stt_operator import kubectl_plugin
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.services.kube import Kube

pytestmark = pytest.mark.integration

NAME = "asr"


@pytest.fixture(scope="module")
def argocd() -> ArgoCD:
    return ArgoCD(Customizations(render_customizations(str(ensure_tools() / "bin" / "helm"))))


@pytest.fixture
def namespace(operator_namespace: str) -> str:
    return operator_namespace


ROLLBACK = {"automatic": True, "revisionHistoryLimit": 3}


def md(kube: Kube, namespace: str) -> dict[str, Any]:
    return kube.get(API, "ModelDeployment", NAME, namespace) or {}


def until(kube: Kube, namespace: str, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    return wait_for(lambda: (obj := md(kube, namespace)) and check(obj) and obj, timeout=90, what=what)


def status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def run_action(kube: Kube, argocd: ArgoCD, obj: dict[str, Any], action: str) -> None:
    """What Argo CD does for a resource action: run the script, patch the live object with the change."""
    assert argocd.discover(obj)[action], f"{action} is not offered on {status(obj).get('phase')}"
    patch = merge_patch(obj, argocd.act(obj, action))
    assert patch, f"{action} changed nothing"
    resource = kube.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    resource.patch(
        body=patch,
        name=obj["metadata"]["name"],
        namespace=obj["metadata"]["namespace"],
        content_type="application/merge-patch+json",
    )


def plugin(kubeconfig: Path, namespace: str, *args: str) -> int:
    return kubectl_plugin.main([*args, "-n", namespace, "--kubeconfig", str(kubeconfig)])


def test_argocd_actions_retry_and_undo_on_a_live_rollout(operator, kube, kubeconfig, namespace, argocd):
    kube.apply(stt_model("model-a", namespace))
    kube.apply(stt_model("model-b", namespace, language="en-GB"))
    model = wait_for(
        lambda: (
            (m := kube.get(API, "STTModel", "model-a", namespace)) and status(m).get("phase") == "Ready" and m
        ),
        timeout=60,
        what="model-a Ready",
    )
    capture("sttmodel-ready", model)
    assert argocd.health(model)["status"] == "Healthy"

    kube.apply(model_deployment(NAME, namespace, "model-a", PAUSED_CANARY, rollback=ROLLBACK))
    healthy = until(kube, namespace, lambda o: status(o).get("phase") == "Healthy", "model-a serving")
    capture("mdep-healthy", healthy)
    assert argocd.health(healthy)["status"] == "Healthy"
    assert status(healthy)["declaredModel"] == status(healthy)["stableModel"] == "model-a"
    offered = argocd.discover(healthy)
    assert not offered["promote"] and not offered["abort"] and not offered["retry"] and offered["pause"]

    # Git moves to model-b: the canary stops at its indefinite pause.
    kube.apply(model_deployment(NAME, namespace, "model-b", PAUSED_CANARY, rollback=ROLLBACK))
    paused = until(kube, namespace, lambda o: status(o).get("phase") == "Paused", "canary at its pause")
    capture("mdep-paused-at-step", paused)
    health = argocd.health(paused)
    assert health["status"] == "Suspended" and "paused until a person resumes" in health["message"]
    assert status(paused)["declaredModel"] == "model-b" and status(paused)["stableModel"] == "model-a"
    assert argocd.discover(paused)["promote"] and argocd.discover(paused)["abort"]

    # Argo CD's abort action: the same path as an automatic rollback.
    run_action(kube, argocd, paused, "abort")
    rolled = until(kube, namespace, lambda o: status(o).get("phase") == "RolledBack", "abort")
    capture("mdep-rolled-back", rolled)
    assert argocd.health(rolled)["status"] == "Degraded"
    assert "aborted by a person" in status(rolled)["lastRollback"]["reason"]
    assert argocd.discover(rolled)["retry"] and not argocd.discover(rolled)["abort"]

    # Argo CD's retry action: the rolled-back revision rolls out again, same spec.
    run_action(kube, argocd, rolled, "retry")
    retried = until(
        kube,
        namespace,
        lambda o: status(o).get("phase") == "Paused" and status(o).get("canaryModel") == "model-b",
        "model-b in flight again",
    )
    assert [(r["model"], r["outcome"]) for r in status(retried)["revisions"]] == [
        ("model-a", "Serving"),
        ("model-b", "Retried"),
    ]
    assert "stt.dev/retry" not in (retried["metadata"].get("annotations") or {})
    assert "RetryRequested" in wait_for(
        lambda: "RetryRequested" in (r := event_reasons(kube, namespace, NAME)) and r, 30, "RetryRequested"
    )

    # Argo CD's pause / resume actions write spec.paused.
    run_action(kube, argocd, retried, "pause")
    held = until(kube, namespace, lambda o: condition(o, "Paused").get("reason") == "RolloutPaused", "paused")
    capture("mdep-paused-by-spec", held)
    assert argocd.health(held)["status"] == "Suspended" and argocd.discover(held)["resume"]
    run_action(kube, argocd, held, "resume")
    resumed = until(
        kube, namespace, lambda o: condition(o, "Paused").get("reason") == "PausedAtStep", "resumed"
    )

    # Argo CD's promote action ends the pause: model-b serves.
    run_action(kube, argocd, resumed, "promote")
    promoted = until(
        kube,
        namespace,
        lambda o: status(o).get("phase") == "Healthy" and status(o).get("stableModel") == "model-b",
        "model-b promoted",
    )
    assert [r["revision"] for r in status(promoted)["revisions"]] == [1, 2, 3]

    # kubectl stt undo --to-revision 1: the operator points spec.model back at model-a.
    assert plugin(kubeconfig, namespace, "undo", NAME, "--to-revision", "1") == 0
    undoing = until(kube, namespace, lambda o: o["spec"]["model"]["name"] == "model-a", "spec.model undone")
    assert "stt.dev/undo-to-revision" not in (undoing["metadata"].get("annotations") or {})
    back = until(
        kube,
        namespace,
        lambda o: status(o).get("phase") == "Paused" and status(o).get("canaryModel") == "model-a",
        "model-a rolling out again",
    )
    assert status(back)["declaredModel"] == "model-a" and status(back)["stableModel"] == "model-b"
    assert plugin(kubeconfig, namespace, "promote", NAME) == 0
    done = until(
        kube,
        namespace,
        lambda o: status(o).get("phase") == "Healthy" and status(o).get("stableModel") == "model-a",
        "model-a promoted again",
    )
    # revisionHistoryLimit 3: revision 1 fell out of the history, so undo to it is refused.
    assert [r["revision"] for r in status(done)["revisions"]] == [2, 3, 4]
    assert plugin(kubeconfig, namespace, "undo", NAME, "--to-revision", "1") == 2  # the plugin checks first
    patch = {"metadata": {"annotations": {"stt.dev/undo-to-revision": "1"}}}
    kube.dynamic.resources.get(api_version=API, kind="ModelDeployment").patch(
        body=patch, name=NAME, namespace=namespace, content_type="application/merge-patch+json"
    )
    wait_for(
        lambda: "UndoFailed" in event_reasons(kube, namespace, NAME), timeout=30, what="UndoFailed Event"
    )
    failed = [
        e["message"]
        for e in kube.list("v1", "Event", namespace)
        if e.get("reason") == "UndoFailed" and e["involvedObject"]["name"] == NAME
    ]
    assert "kept: 2, 3, 4" in failed[0] and "revisionHistoryLimit 3" in failed[0]
    final = until(
        kube,
        namespace,
        lambda o: "stt.dev/undo-to-revision" not in (o["metadata"].get("annotations") or {}),
        "consumed",
    )
    assert final["spec"]["model"]["name"] == "model-a" and status(final)["phase"] == "Healthy"
    wait_for(
        lambda: len(kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: NAME})) == 1,
        timeout=30,
        what="model-b retired",
    )
