"""Prometheus the way users run it: the Prometheus Operator turns the chart's ServiceMonitor and
PrometheusRule into a running Prometheus's configuration (on the real node).

The scraped pod is the operator itself, installed by `helm install` from the built operator
image: its `/metrics` arrive only because the chart's ServiceMonitor selects its Service (no
test adds a scrape target), and the chart's `STTModelDeploymentRolledBack` alert fires only
because the operator really rolled a ModelDeployment back (a person's abort of a paused canary).
The Triton Deployments of that ModelDeployment run on kwok nodes (their readiness is simulated;
the real Triton pod is covered by test_images_on_node.py): the rollback is the operator's own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from stt_harness.cluster import LocalCluster, repo_root
from stt_harness.images import build_images
from stt_harness.kubewait import condition, wait_for
from stt_harness.node import REAL_NODE_SELECTOR, REAL_NODE_TOLERATION
from stt_harness.promoperator import PrometheusStack
from stt_harness.samples import sphinx_spec
from stt_operator.services.kube import Kube

pytestmark = pytest.mark.integration

API = "stt.dev/v1alpha1"
ALERT = "STTModelDeploymentRolledBack"


@dataclass
class Release:
    name: str
    namespace: str


@pytest.fixture
def operator_release(
    cluster: LocalCluster, prometheus_stack: PrometheusStack, namespace: str, tmp_path: Path
) -> Iterator[Release]:
    """The chart, from the built operator image, with its ServiceMonitor and PrometheusRule."""
    node = cluster.real_node
    assert node is not None
    image = build_images(("operator",))["operator"]
    if image.ref not in set(node.images()):
        node.import_image(image.archive)
    repository, tag = image.ref.rsplit(":", 1)
    release = Release("stt", namespace)
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "watchNamespaces": [namespace],
        "peering": {"enabled": False},
        "nodeSelector": dict(REAL_NODE_SELECTOR),
        "tolerations": [dict(REAL_NODE_TOLERATION)],
        "serviceMonitor": {"enabled": True, "interval": "5s", "scrapeTimeout": "4s"},
        "prometheusRule": {"enabled": True},
        "config": {"logFormat": "text"},
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    root = repo_root()
    assert root is not None
    chart = str(root / "charts" / "stt-operator")
    t0 = time.monotonic()
    cluster.helm(
        "install",
        release.name,
        chart,
        "-n",
        namespace,
        "-f",
        str(values_file),
        "--wait",
        "--timeout",
        "240s",
        timeout=300,
    )
    print(f"helm install of the operator image: {time.monotonic() - t0:.1f}s")
    try:
        yield release
    finally:
        cluster.helm("uninstall", release.name, "-n", namespace, "--wait", "--timeout", "120s", check=False)


def _model(name: str, ns: str, parameters: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "STTModel",
        "metadata": {"name": name, "namespace": ns},
        "spec": sphinx_spec(parameters),
    }


def _deployment(ns: str, model: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": "asr", "namespace": ns, **({"annotations": annotations} if annotations else {})},
        "spec": {
            "model": {"name": model},
            "replicas": 1,
            # A canary that waits at 10 % for a person (no analysis: this test needs no evaluator).
            "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}},
        },
    }


def test_chart_servicemonitor_scrapes_the_operator_pod_and_rollback_alert_fires(
    cluster: LocalCluster,
    prometheus_stack: PrometheusStack,
    operator_release: Release,
    kube_api: Any,
) -> None:
    prom, ns = prometheus_stack, operator_release.namespace
    kube = Kube(kube_api)

    # The Prometheus Operator wrote a scrape job for the chart's ServiceMonitor; Prometheus found
    # the operator pod through its Service's EndpointSlice and scrapes it.
    def target() -> dict[str, Any] | None:
        for t in prom.active_targets():
            if t["labels"].get("namespace") == ns and t["scrapePool"].startswith(f"serviceMonitor/{ns}/"):
                return t if t["health"] == "up" else None
        return None

    t = prom.wait_for(target, "the operator pod's target to be up", timeout=180)
    (pod,) = [p for p in kube.list("v1", "Pod", ns) if p["metadata"]["name"] == t["labels"]["pod"]]
    assert pod["spec"]["nodeName"] == cluster.real_node.name  # type: ignore[union-attr]
    # The scrape pool is the chart's ServiceMonitor (named after the release), the target its
    # metrics Service.
    fullname = f"{operator_release.name}-stt-operator"
    assert t["scrapePool"] == f"serviceMonitor/{ns}/{fullname}/0", t["scrapePool"]
    assert t["labels"]["service"] == f"{fullname}-metrics", t["labels"]

    # The chart's rules are loaded from the PrometheusRule.
    groups = prom.wait_for(
        lambda: {g["name"] for g in prom.rule_groups()} >= {"stt-operator.operator"} and prom.rule_groups(),
        "the chart's rule groups",
    )
    assert any(r.get("name") == ALERT for g in groups for r in g["rules"])

    # A real rollout: model a serves, model b starts as a canary and waits at 10 %.
    kube.apply(_model("sphinx-a", ns))
    kube.apply(_model("sphinx-b", ns, {"noise_snr_db": "20"}))
    kube.apply(_deployment(ns, "sphinx-a"))

    def md() -> dict[str, Any]:
        return kube.get(API, "ModelDeployment", "asr", ns) or {}

    wait_for(lambda: md().get("status", {}).get("phase") == "Healthy", 180, "model a to serve")
    # The operator pod's own series, as scraped (the reconciles it has just done).
    series = prom.wait_for(
        lambda: prom.query(f'stt_operator_reconciles_total{{pod="{pod["metadata"]["name"]}"}} > 0'),
        "the operator's own series",
    )
    assert {s["metric"]["kind"] for s in series} >= {"ModelDeployment", "STTModel"}, series
    # The operator exports its rollback counter at 0 from the first reconcile, so the rise is seen.
    prom.wait_for(
        lambda: prom.query(f'stt_operator_rollbacks_total{{namespace="{ns}",name="asr"}} == 0'),
        "the rollback counter scraped at 0",
    )
    kube.apply(_deployment(ns, "sphinx-b"))
    wait_for(
        lambda: (s := md().get("status", {})).get("phase") == "Paused" and s.get("currentWeight") == 10,
        180,
        "the canary paused at 10 %",
    )
    # (This test's namespace only: the closed-loop tests' operator is scraped by the same
    # Prometheus, and its rollbacks fire the same alert for their own namespaces.)
    assert not [
        a
        for a in prom.alerts()
        if a["labels"].get("alertname") == ALERT and a["labels"].get("namespace") == ns
    ]

    # A person aborts; the operator rolls back and counts it.
    kube.apply(_deployment(ns, "sphinx-b", {"stt.dev/abort": "true"}))
    rolled = wait_for(
        lambda: (m := md()).get("status", {}).get("phase") == "RolledBack" and m, 120, "the rollback"
    )
    assert rolled["status"]["stableModel"] == "sphinx-a"
    assert condition(rolled, "Degraded")["reason"] == "RolledBack"

    def firing() -> dict[str, Any] | None:
        for a in prom.alerts():
            if (
                a["labels"].get("alertname") == ALERT
                and a["state"] == "firing"
                and a["labels"].get("namespace") == ns
            ):
                return a
        return None

    alert = prom.wait_for(firing, f"{ALERT} to fire", timeout=180)
    assert alert["labels"]["namespace"] == ns and alert["labels"]["name"] == "asr"
    assert alert["labels"]["severity"] == "warning"
    # Prometheus saw the counter at 0 before it rose: the alert is the rise, not a constant.
    low = prom.query(f'min_over_time(stt_operator_rollbacks_total{{namespace="{ns}",name="asr"}}[15m])')
    high = prom.query(f'max_over_time(stt_operator_rollbacks_total{{namespace="{ns}",name="asr"}}[15m])')
    assert [float(s["value"][1]) for s in low] == [0.0] and [float(s["value"][1]) for s in high] == [1.0]
