"""Webhook notifications (services/notify.py) sent to a real HTTP receiver on loopback."""

from __future__ import annotations

import itertools
import time

import pytest

from stt_harness.webhook import WebhookReceiver
from stt_operator.services.notify import NotificationSettings, Notifier, Receiver

MD = {
    "apiVersion": "stt.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "asr", "namespace": "team-a", "uid": "u-1"},
    "status": {"phase": "Degraded"},
}


def notifier(*receivers: Receiver, **settings: float) -> Notifier:
    return Notifier(NotificationSettings(receivers=list(receivers), backoff_s=0.05, **settings))


def test_formats_filters_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    with WebhookReceiver() as hook:
        monkeypatch.setenv("HOOK_URL", f"{hook.url}/slack")
        monkeypatch.setenv("HOOK_TOKEN", "s3cret")
        n = notifier(
            Receiver(name="generic", url=f"{hook.url}/json", events=["rollback"]),
            Receiver(name="slack", format="slack", url_env="HOOK_URL", token_env="HOOK_TOKEN"),
            Receiver(name="teams", format="teams", url=f"{hook.url}/teams", events=["promotion", "winner"]),
        )
        try:
            assert n.publish(MD, "Warning", "RolledBack", "rolled back model-b to model-a: wer Failed") == 2
            assert n.publish(MD, "Normal", "Promoted", "model model-b serves 100%") == 2
            assert n.publish(MD, "Normal", "WeightChanged", "20%") == 0  # not a notification
            hook.wait(lambda: len(hook.requests) == 4)
        finally:
            n.close()
    generic = hook.at("/json")
    assert len(generic) == 1
    body = generic[0].body
    assert body["event"] == "rollback" and body["reason"] == "RolledBack" and body["type"] == "Warning"
    assert body["object"] == {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "ModelDeployment",
        "namespace": "team-a",
        "name": "asr",
        "uid": "u-1",
    }
    assert "authorization" not in generic[0].headers
    slack = hook.at("/slack")
    assert [r.headers["authorization"] for r in slack] == ["Bearer s3cret"] * 2
    assert "*RolledBack: ModelDeployment team-a/asr*" in slack[0].body["text"]
    assert slack[0].body["blocks"][0]["text"]["type"] == "mrkdwn"
    (teams,) = hook.at("/teams")
    card = teams.body["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard" and "Promoted" in card["content"]["body"][0]["text"]


def test_server_errors_are_retried_with_backoff_client_errors_are_not() -> None:
    with WebhookReceiver({"/flaky": [503, 500, 429], "/wrong": [400]}) as hook:
        n = notifier(
            Receiver(name="flaky", url=f"{hook.url}/flaky", max_attempts=5),
            Receiver(name="wrong", url=f"{hook.url}/wrong", max_attempts=5),
        )
        try:
            n.publish(MD, "Warning", "RolledBack", "m")
            hook.wait(lambda: hook.at("/flaky", ok_only=True))
            time.sleep(0.3)
        finally:
            n.close()
    flaky = hook.at("/flaky")
    assert [r.status for r in flaky] == [503, 500, 429, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(flaky)]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09 and gaps[2] >= 0.18  # 0.05, 0.1, 0.2 s: doubling
    assert [r.status for r in hook.at("/wrong")] == [400]  # a refusal is final


def test_gives_up_after_max_attempts() -> None:
    with WebhookReceiver({"/down": [502] * 10}) as hook:
        n = notifier(Receiver(name="down", url=f"{hook.url}/down", max_attempts=3))
        try:
            n.publish(MD, "Warning", "RolledBack", "m")
            hook.wait(lambda: len(hook.at("/down")) == 3)
            time.sleep(0.5)
        finally:
            n.close()
    assert len(hook.at("/down")) == 3


def test_a_slow_receiver_never_blocks_publish_and_duplicates_are_sent_once() -> None:
    with WebhookReceiver(delay_s=1.0) as hook:
        n = notifier(Receiver(name="slow", url=f"{hook.url}/slow", timeout_s=5))
        try:
            started = time.monotonic()
            for i in range(5):
                n.publish(MD, "Warning", "AnalysisNoData", f"no data for wer ({i})")
            n.publish(MD, "Warning", "AnalysisNoData", "no data for wer (0)")  # the same event again
            assert time.monotonic() - started < 0.2
            hook.wait(lambda: len(hook.at("/slow")) == 5, timeout=20)
        finally:
            n.close()
    assert [r.body["event"] for r in hook.at("/slow")] == ["stuck"] * 5


def test_a_receiver_needs_exactly_one_url() -> None:
    with pytest.raises(ValueError, match="exactly one of url and url_env"):
        Receiver(name="x")
    with pytest.raises(ValueError, match="exactly one of url and url_env"):
        Receiver(name="x", url="http://a", url_env="B")
