"""Prometheus the way users run it: the Prometheus Operator turns the chart's workload
ServiceMonitor and PrometheusRule into a running Prometheus's configuration (on the real node).
Nothing here adds a scrape target: a pod's metrics arrive only because the chart's
ServiceMonitor selects its Service, and the alert fires only because the chart's rule sees the
pod's counter rise."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, CoreV1Api

from stt_harness.cluster import LocalCluster, repo_root
from stt_harness.imagetar import image_tar
from stt_harness.node import REAL_NODE_SELECTOR, REAL_NODE_TOLERATION
from stt_harness.promoperator import PrometheusStack

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (Makefile deps)
IMAGE = "stt.local/busybox:1"
# Labels the operator puts on an evaluator's pods and Service (what the workload ServiceMonitor
# selects).
EVALUATOR_LABELS = {
    "app.kubernetes.io/part-of": "stt-operator",
    "app.kubernetes.io/managed-by": "stt-operator",
    "app.kubernetes.io/component": "evaluator",
    "app.kubernetes.io/name": "asr-eval",
}
# A tiny exporter: every 2 s it rewrites the page with a growing request counter; its rollback
# counter goes from 0 to 1 once /tmp/rolled-back exists (the test creates it with `kubectl exec`
# after Prometheus has seen 0), as the operator's counter does when it rolls a ModelDeployment back.
EXPORTER = r"""
i=0
while true; do
  r=0; [ -e /tmp/rolled-back ] && r=1
  {
    echo '# TYPE stt_eval_requests_total counter'
    echo "stt_eval_requests_total{endpoint=\"asr\",variant=\"stable\",model=\"m\",language=\"en\"} $i"
    echo '# TYPE stt_operator_rollbacks_total counter'
    echo "stt_operator_rollbacks_total{namespace=\"NAMESPACE\",name=\"asr\"} $r"
  } > /tmp/www/metrics.new
  busybox mv /tmp/www/metrics.new /tmp/www/metrics
  i=$((i+1))
  busybox sleep 2
done &
# busybox httpd sends no Content-Type for an extension-less /metrics, which Prometheus 3
# refuses; a persistent nc server answers every request with the page as text/plain 0.0.4.
{
  echo '#!/bin/busybox sh'
  echo 'while read -r l && [ ${#l} -gt 1 ]; do :; done'
  echo "printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\n\r\n'"
  echo 'busybox cat /tmp/www/metrics'
} > /tmp/serve
busybox chmod +x /tmp/serve
exec busybox nc -ll -p 8080 -e /tmp/serve
"""


@pytest.fixture(scope="session")
def busybox_image(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    assert cluster.real_node is not None
    tar = tmp_path_factory.mktemp("busybox") / "busybox.tar"
    image_tar(tar, IMAGE, {"bin/busybox": BUSYBOX}, ["/bin/busybox"])
    cluster.real_node.import_image(tar)
    return IMAGE


def chart_monitoring(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    """The chart's workload ServiceMonitor and PrometheusRule, rendered by helm as installed."""
    root = repo_root()
    assert root is not None
    out = cluster.helm(
        "template",
        "stt",
        str(root / "charts" / "stt-operator"),
        "--namespace",
        namespace,
        "--set",
        "workloadServiceMonitor.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
        "--show-only",
        "templates/workload-servicemonitor.yaml",
        "--show-only",
        "templates/prometheusrule.yaml",
    )
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture
def exporter_pod(kube_api: ApiClient, namespace: str, busybox_image: str) -> Iterator[str]:
    core = CoreV1Api(kube_api)
    script = EXPORTER.replace("NAMESPACE", namespace)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "asr-eval", "labels": EVALUATOR_LABELS},
            "spec": {
                "nodeSelector": dict(REAL_NODE_SELECTOR),
                "tolerations": [dict(REAL_NODE_TOLERATION)],
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "exporter",
                        "image": busybox_image,
                        "imagePullPolicy": "Never",
                        "args": ["sh", "-c", "busybox mkdir -p /tmp/www && " + script],
                        "ports": [{"name": "metrics", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/metrics", "port": 8080}, "periodSeconds": 1},
                    }
                ],
            },
        },
    )
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "asr-eval", "labels": EVALUATOR_LABELS},
            "spec": {
                "selector": EVALUATOR_LABELS,
                "ports": [{"name": "metrics", "port": 9400, "targetPort": 8080}],
            },
        },
    )
    yield "asr-eval"


def test_servicemonitor_brings_pod_metrics_and_chart_alert_fires(
    cluster: LocalCluster, prometheus_stack: PrometheusStack, namespace: str, exporter_pod: str
) -> None:
    prom = prometheus_stack
    chart_objects = {"apiVersion": "v1", "kind": "List", "items": chart_monitoring(cluster, namespace)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(chart_objects))

    # The operator wrote a scrape job for the chart's ServiceMonitor; Prometheus found the pod
    # through the Service's EndpointSlice and scrapes it.
    def target() -> dict[str, Any] | None:
        for t in prom.active_targets():
            labels = t["labels"]
            if labels.get("namespace") == namespace and labels.get("service") == "asr-eval":
                return t if t["health"] == "up" else None
        return None

    t = prom.wait_for(target, "the ServiceMonitor's target to be up", timeout=180)
    assert t["scrapePool"].startswith(f"serviceMonitor/{namespace}/stt-stt-operator-workloads/")
    assert t["labels"]["pod"] == "asr-eval"

    series = prom.wait_for(
        lambda: prom.query(f'stt_eval_requests_total{{namespace="{namespace}",service="asr-eval"}} > 0'),
        "stt_eval_requests_total from the pod",
    )
    assert series[0]["metric"]["endpoint"] == "asr" and series[0]["metric"]["pod"] == "asr-eval"

    # The chart's rules are loaded from the PrometheusRule...
    groups = prom.wait_for(
        lambda: (
            {g["name"] for g in prom.rule_groups()} >= {"stt-operator.operator", "stt-operator.recording"}
            and prom.rule_groups()
        ),
        "the chart's rule groups",
    )
    assert any(r.get("name") == "STTModelDeploymentRolledBack" for g in groups for r in g["rules"])

    # ...and STTModelDeploymentRolledBack fires once the pod's rollback counter rises from 0.
    prom.wait_for(
        lambda: prom.query(f'stt_operator_rollbacks_total{{namespace="{namespace}"}} == 0'),
        "the rollback counter scraped at 0",
    )
    assert not [a for a in prom.alerts() if a["labels"].get("alertname") == "STTModelDeploymentRolledBack"]
    cluster.kubectl("exec", "-n", namespace, "asr-eval", "--", "/bin/busybox", "touch", "/tmp/rolled-back")

    def firing() -> dict[str, Any] | None:
        for a in prom.alerts():
            if a["labels"].get("alertname") == "STTModelDeploymentRolledBack" and a["state"] == "firing":
                return a
        return None

    alert = prom.wait_for(firing, "STTModelDeploymentRolledBack to fire", timeout=180)
    assert alert["labels"]["namespace"] == namespace and alert["labels"]["name"] == "asr"
    assert alert["labels"]["severity"] == "warning"
    # Prometheus saw the counter at 0 before it rose: the alert is the rise, not a constant.
    low = prom.query(f'min_over_time(stt_operator_rollbacks_total{{namespace="{namespace}"}}[15m])')
    assert [float(s["value"][1]) for s in low] == [0.0]
