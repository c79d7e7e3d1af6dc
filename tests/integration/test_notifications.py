"""Webhook notifications from the real operator process: a rollout on the real control plane
(kwok nodes) is aborted, retried and promoted, and a real HTTP receiver on loopback gets the
rollback and promotion as generic JSON, a Slack message and a Teams card, each receiver only
what it subscribed to, with the URL and token from the environment (as the chart fills it from
a Secret) and a server error retried."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from stt_harness.cluster import LocalCluster
from stt_harness.cluster_fixtures import namespace_name, scratch_namespace
from stt_harness.kubewait import wait_for
from stt_harness.operator import OperatorProcess
from stt_harness.resources import API, PAUSED_CANARY, model_deployment, stt_model
from stt_harness.webhook import WebhookReceiver
from stt_operator.services.kube import Kube

pytestmark = pytest.mark.integration

NAME = "asr"
PREFIX = "stt-notify-"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver({"/slack": [503]}) as hook:
        yield hook


@pytest.fixture
def notifying_operator(
    cluster: LocalCluster, receiver: WebhookReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OperatorProcess]:
    """An operator of its own (namespaces stt-notify-*), with three receivers in its settings file."""
    monkeypatch.setenv("STT_NOTIFY_0_URL", f"{receiver.url}/slack")
    monkeypatch.setenv("STT_NOTIFY_0_TOKEN", "t0ken")
    config = {
        "notifications": {
            "backoff_s": 0.2,
            "receivers": [
                {
                    "name": "oncall",
                    "format": "slack",
                    "url_env": "STT_NOTIFY_0_URL",
                    "token_env": "STT_NOTIFY_0_TOKEN",
                },
                {"name": "audit", "format": "json", "url": f"{receiver.url}/json", "events": ["rollback"]},
                {
                    "name": "channel",
                    "format": "teams",
                    "url": f"{receiver.url}/teams",
                    "events": ["promotion"],
                },
            ],
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = OperatorProcess(
        cluster.kubeconfig,
        reconcile_interval_s=1.0,
        namespaces=[f"{PREFIX}*"],
        extra_args=["--config", str(path)],
    )
    proc.start()
    yield proc
    alive = proc.process is not None and proc.process.poll() is None
    proc.stop()
    assert alive, f"the operator died:\n{proc.log_tail()}"


def annotate(kube: Kube, namespace: str, key: str, value: str = "true") -> None:
    kube.dynamic.resources.get(api_version=API, kind="ModelDeployment").patch(
        body={"metadata": {"annotations": {key: value}}},
        name=NAME,
        namespace=namespace,
        content_type="application/merge-patch+json",
    )


def phase(kube: Kube, namespace: str) -> str | None:
    return ((kube.get(API, "ModelDeployment", NAME, namespace) or {}).get("status") or {}).get("phase")


def explain(kube: Kube, namespace: str, operator: OperatorProcess) -> str:
    """The endpoint's and models' status, the namespace's pods and the operator's log tail."""
    md = kube.get(API, "ModelDeployment", NAME, namespace) or {}
    models = {
        m: (kube.get(API, "STTModel", m, namespace) or {}).get("status") for m in ("model-a", "model-b")
    }
    pods = [
        (p["metadata"]["name"], (p.get("spec") or {}).get("nodeName"), (p.get("status") or {}).get("phase"))
        for p in kube.list("v1", "Pod", namespace)
    ]
    return (
        f"ModelDeployment status: {md.get('status')}\nSTTModel status: {models}\npods: {pods}\n"
        f"operator log:\n{operator.log_tail(80)}"
    )


def test_rollback_and_promotion_reach_the_subscribed_receivers(notifying_operator, receiver, kube, kube_api):
    with scratch_namespace(kube_api, namespace_name(f"{PREFIX}rollout")) as namespace:
        kube.apply(stt_model("model-a", namespace))
        kube.apply(stt_model("model-b", namespace, language="en-GB"))
        kube.apply(model_deployment(NAME, namespace, "model-a", PAUSED_CANARY))
        # 180 s: this test starts its own operator process, slow to come up on a loaded machine.
        wait_for(
            lambda: phase(kube, namespace) == "Healthy",
            timeout=180,
            what="model-a serving",
            explain=lambda: explain(kube, namespace, notifying_operator),
        )
        kube.apply(model_deployment(NAME, namespace, "model-b", PAUSED_CANARY))
        wait_for(lambda: phase(kube, namespace) == "Paused", timeout=90, what="canary at its pause")
        annotate(kube, namespace, "stt.dev/abort")
        wait_for(lambda: phase(kube, namespace) == "RolledBack", timeout=60, what="rolled back")
        audit = receiver.wait(lambda: receiver.at("/json"))
        annotate(kube, namespace, "stt.dev/retry")
        wait_for(lambda: phase(kube, namespace) == "Paused", timeout=60, what="retried")
        annotate(kube, namespace, "stt.dev/promote")
        wait_for(lambda: phase(kube, namespace) == "Healthy", timeout=60, what="promoted")
        receiver.wait(lambda: [r for r in receiver.at("/teams") if "model-b" in str(r.body)], timeout=30)
        receiver.wait(lambda: len(receiver.at("/slack", ok_only=True)) >= 2, timeout=30)

    # The audit receiver subscribed to rollbacks only: the abort, as generic JSON.
    assert all(r.body["event"] == "rollback" for r in receiver.at("/json"))
    (rollback,) = [r.body for r in audit]
    assert rollback["reason"] == "RolledBack" and rollback["type"] == "Warning"
    assert rollback["object"]["kind"] == "ModelDeployment" and rollback["object"]["name"] == NAME
    assert "aborted by a person" in rollback["message"]
    # The Teams channel: promotions only, as Adaptive Cards.
    cards = [r.body["attachments"][0]["content"] for r in receiver.at("/teams")]
    assert cards and all("Promoted" in c["body"][0]["text"] for c in cards)
    assert any("model-b" in c["body"][1]["text"] for c in cards)
    # On-call (Slack, every category): its first delivery met a 503 and was retried; the token
    # from the environment went along as a bearer token.
    slack = receiver.at("/slack")
    assert slack[0].status == 503 and slack[1].body == slack[0].body and slack[1].status == 200
    assert {r.headers["authorization"] for r in slack} == {"Bearer t0ken"}
    texts = [r.body["text"] for r in receiver.at("/slack", ok_only=True)]
    assert any("RolledBack" in t for t in texts) and any("Promoted" in t and "model-b" in t for t in texts)
    assert "stt_operator_notifications_total" in notifying_operator.metrics()
