"""An analysis with no Prometheus it may ask (the operator process against the real apiserver).

The session's operator has a default Prometheus, but no source named `absent`: a canary whose
analysis names it holds at its step's weight, neither promoted nor rolled back, with one
AnalysisUnavailable condition (reason PrometheusNotAllowed, naming the setting), one Event,
and no Error looks piling up in status."""

from __future__ import annotations

import time

import pytest

from stt_harness.kubewait import condition, event_reasons, wait_for
from stt_harness.resources import API, model_deployment, stt_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ANALYSIS = {
    "interval": "2s",
    "prometheus": {"source": "absent"},
    "metrics": [{"name": "errors", "preset": "error-rate", "thresholdRange": {"max": 0.05}}],
}
CANARY = {"type": "Canary", "canary": {"steps": [{"setWeight": 30}, {"analysis": {}}]}}


@pytest.fixture
def namespace(operator_namespace: str) -> str:
    return operator_namespace


def test_canary_holds_when_its_prometheus_is_not_allowed(operator, kube, namespace):
    kube.apply(stt_model("model-a", namespace))
    kube.apply(stt_model("model-b", namespace, language="en-GB"))
    kube.apply(model_deployment("asr", namespace, "model-a"))

    def serving_a():
        md = kube.get(API, "ModelDeployment", "asr", namespace) or {}
        return (md.get("status") or {}).get("stableModel") == "model-a" and md

    wait_for(serving_a, timeout=180, what="model-a serving")
    kube.apply(model_deployment("asr", namespace, "model-b", CANARY, analysis=ANALYSIS))

    def held():
        md = kube.get(API, "ModelDeployment", "asr", namespace)
        return md if condition(md, "AnalysisUnavailable").get("status") == "True" else None

    md = wait_for(held, timeout=120, what="AnalysisUnavailable")
    unavailable = condition(md, "AnalysisUnavailable")
    assert unavailable["reason"] == "PrometheusNotAllowed"
    assert "prometheusSources" in unavailable["message"] and "holds" in unavailable["message"]
    wait_for(
        lambda: (
            condition(kube.get(API, "ModelDeployment", "asr", namespace), "Paused").get("reason")
            == "AnalysisUnavailable"
        ),
        timeout=30,
        what="Paused AnalysisUnavailable",
    )
    time.sleep(8)  # four analysis intervals
    md = kube.get(API, "ModelDeployment", "asr", namespace)
    status = md["status"]
    assert status["phase"] == "Paused" and status["stableModel"] == "model-a"
    assert status["currentWeight"] == 30 and "lastRollback" not in status
    assert not status.get("analysisRuns")  # no Error looks: nothing was asked
    route = kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "asr", namespace)
    assert sorted(r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]) == [30, 70]
    assert event_reasons(kube, namespace, "asr").count("PrometheusNotAllowed") == 1
