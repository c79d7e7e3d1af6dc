"""STTModel.status.analytics from a real Prometheus scraping real evaluator metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from stt_harness.kubewait import wait_for
from stt_harness.resources import API, stt_model
from stt_operator.evalmetrics import build_eval_metrics
from stt_operator.kubectl_plugin import main as kubectl_stt

pytestmark = pytest.mark.integration


@pytest.fixture
def namespace(operator_namespace: str) -> str:
    """Every test here runs in a namespace the session's operator watches."""
    return operator_namespace


def test_analytics_summarised_into_status(
    operator, operator_prometheus, exporter_factory, kube, namespace, cluster, capsys
):
    registry = CollectorRegistry()
    metrics = build_eval_metrics(registry)
    labels = {"endpoint": "asr", "variant": "stable", "model": "live-model", "language": "en-US"}
    metrics.init_variant(labels)  # series start at zero, so increase() sees every utterance

    def replay(n: int) -> None:
        for _ in range(n):
            metrics.record_request(labels)
            metrics.record_utterance(
                labels,
                word_errors=1,
                ref_words=10,
                char_errors=2,
                ref_chars=50,
                latency_seconds=0.2,
                audio_seconds=2.0,
                confidence=0.9,
            )

    exporter = exporter_factory(registry)
    # As a ServiceMonitor would, the target carries the namespace of the evaluator's Service.
    operator_prometheus.add_target("evaluator", exporter.address, labels={"namespace": namespace})
    replay(20)

    model_body = stt_model("live-model", namespace)
    model_body["spec"]["languagePair"] = "en>es"
    kube.apply(model_body)

    def analytics():
        model = kube.get(API, "STTModel", "live-model", namespace)
        entries = (model.get("status") or {}).get("analytics") or []
        return entries if entries and "latencyP95Ms" in entries[0] else None

    (entry,) = wait_for(analytics, timeout=60, what="status.analytics from Prometheus")
    assert entry["language"] == "en-US" and entry["languagePair"] == "en>es"
    assert entry["wer"] == pytest.approx(0.1)
    assert entry["cer"] == pytest.approx(0.04)
    assert entry["confidence"] == pytest.approx(0.9)
    assert 100 <= entry["latencyP95Ms"] <= 250  # p95 of 0.2 s observations, interpolated in its bucket
    assert entry["updatedAt"].endswith("Z")

    # What a person sees: `kubectl stt metrics` prints the same summary.
    assert (
        kubectl_stt(["metrics", "live-model", "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)]) == 0
    )
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["MODEL", "LANGUAGE", "PAIR", "WER", "CER"]
    assert row.split()[:5] == ["live-model", "en-US", "en>es", "0.1", "0.04"]
    # `kubectl stt compare` groups by pair and ranks with the selector's selection (its WER from
    # the live analytics here): the only Ready model of en>es is its best.
    assert kubectl_stt(["compare", "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:7] == ["PAIR", "MODEL", "WER", "CER", "P95", "MS", "RANK"]
    assert row.split()[:3] == ["en>es", "live-model", "0.1"] and row.split()[-2:] == ["1", "*"]
    operator_prometheus.remove_target("evaluator", exporter.address)
