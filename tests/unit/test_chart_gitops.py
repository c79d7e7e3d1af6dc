"""What the chart renders for notifications and Argo CD, read back by the operator's own
settings model and by the Lua runner (real helm, no cluster)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from stt_harness.argocd import CHART, Customizations
from stt_harness.cluster import ensure_tools
from stt_operator.settings import OperatorSettings


def render(*args: str) -> list[dict[str, Any]]:
    helm = str(ensure_tools() / "bin" / "helm")
    out = subprocess.run(
        [helm, "template", "stt", str(CHART), "-n", "stt-system", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


RECEIVERS = [
    "--set", "notifications.receivers[0].name=oncall",
    "--set", "notifications.receivers[0].format=slack",
    "--set", "notifications.receivers[0].urlSecret.name=stt-notifications",
    "--set", "notifications.receivers[0].urlSecret.key=slack-url",
    "--set", "notifications.receivers[0].events={rollback,stuck}",
    "--set", "notifications.receivers[1].name=audit",
    "--set", "notifications.receivers[1].url=http://audit.example.svc/hook",
    "--set", "notifications.receivers[1].tokenSecret.name=stt-notifications",
    "--set", "notifications.receivers[1].tokenSecret.key=audit-token",
]  # fmt: skip


def test_receivers_render_into_settings_and_secret_env(tmp_path: Path) -> None:
    docs = render(*RECEIVERS)
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config"))
    path = tmp_path / "config.yaml"
    path.write_text(config["data"]["config.yaml"])
    notifications = OperatorSettings.load(str(path)).notifications
    oncall, audit = notifications.receivers
    assert (oncall.format, oncall.url, oncall.url_env, oncall.events) == (
        "slack",
        None,
        "STT_NOTIFY_0_URL",
        ["rollback", "stuck"],
    )
    assert audit.url == "http://audit.example.svc/hook" and audit.token_env == "STT_NOTIFY_1_TOKEN"
    assert audit.events == ["rollback", "promotion", "winner", "stuck"]
    env = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    by_name = {e["name"]: e for e in env}
    assert by_name["STT_NOTIFY_0_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "stt-notifications",
        "key": "slack-url",
    }
    assert by_name["STT_NOTIFY_1_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "audit-token"
    assert "STT_NOTIFY_1_URL" not in by_name  # a plain URL needs no Secret


def test_no_receivers_by_default(tmp_path: Path) -> None:
    config = next(
        d for d in render() if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")
    )
    path = tmp_path / "config.yaml"
    path.write_text(config["data"]["config.yaml"])
    assert OperatorSettings.load(str(path)).notifications.receivers == []


def test_a_bad_receiver_is_rejected_by_the_schema() -> None:
    helm = str(ensure_tools() / "bin" / "helm")
    res = subprocess.run(
        [helm, "template", "stt", str(CHART), "--set", "notifications.receivers[0].name=x",
         "--set", "notifications.receivers[0].format=email"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode != 0 and "format" in res.stderr


def test_argocd_snippet_is_off_by_default_and_complete_when_on() -> None:
    assert not [d for d in render() if d["metadata"]["name"].endswith("-argocd-cm")]
    for fmt in ("split", "legacy"):
        args = [f"argocd.customizations.{k}" for k in ("enabled=true", f"format={fmt}", "namespace=argocd")]
        docs = render(*[a for arg in args for a in ("--set", arg)])
        (cm,) = [d for d in docs if d["metadata"]["name"].endswith("-argocd-cm")]
        assert cm["metadata"]["namespace"] == "argocd"
        c = Customizations(cm["data"])
        assert sorted(c.health) == ["ABTest", "ModelDeployment", "STTModel"]
        assert sorted(c.actions["ModelDeployment"]) == ["abort", "pause", "promote", "resume", "retry"]
        assert sorted(c.actions["ABTest"]) == ["abort"]
        if fmt == "split":
            assert set(cm["data"]) == {
                "resource.customizations.health.stt.dev_ModelDeployment",
                "resource.customizations.health.stt.dev_STTModel",
                "resource.customizations.health.stt.dev_ABTest",
                "resource.customizations.actions.stt.dev_ModelDeployment",
                "resource.customizations.actions.stt.dev_ABTest",
            }
        else:
            assert set(cm["data"]) == {"resource.customizations"}
