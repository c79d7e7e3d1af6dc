"""Rollout mechanics that need no measurement, end to end: the real operator process and a real
kube-apiserver, the revisions' Triton pods running on the real node (the CPU Triton image serving
the built-in recogniser under two names, so readiness is Triton's own): an analysis without series
pauses and a person aborts, Gradual steps, a restarted operator resumes from status, a selector
follows the best measured model.

Rollouts decided on measured WER (canary promoted, canary rolled back, BlueGreen preview
analysed) run on the real node with the operator's own evaluator pod measuring real Triton
pods: tests/integration/test_closed_loop.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from stt_harness import closedloop as cl
from stt_harness.faults import SERVE_TIMEOUT_S
from stt_harness.kubewait import condition, wait_for
from stt_harness.resources import API
from stt_harness.routewatch import RouteWatch as BaseRouteWatch
from stt_harness.routewatch import serve_then_switch
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.services.kube import Kube

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAME = "asr"
WER_METRIC = {"name": "wer", "preset": "wer", "nonInferiorityMargin": 0.03, "minSamples": 50}


@pytest.fixture
def namespace(node_namespace: str) -> str:
    """Every test here runs in a namespace the real-node operator watches."""
    return node_namespace


def node_model(name: str, namespace: str, language: str = "en-US") -> dict[str, Any]:
    """The built-in recogniser as `name`, no labelled set: nothing measures it, so an analysis
    finds no series."""
    manifest = cl.sphinx_model(name, namespace)
    del manifest["spec"]["validation"]["evaluationSet"]
    manifest["spec"]["language"] = language
    return manifest


def deployment(namespace: str, strategy: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"name": "model-a"},
            "replicas": 1,
            "strategy": strategy,
            "scaleDownDelay": "0s",
            "endpoint": {"gatewayRef": {"name": "stt-gateway"}, "hostnames": ["stt.example.test"]},
            **spec,
        },
    }


class RouteWatch(BaseRouteWatch):
    """The endpoint's route while the rollout moves it; each poll returns the ModelDeployment."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        super().__init__(kube, namespace, NAME, (API, "ModelDeployment", NAME), {LABEL_DEPLOYMENT: NAME})

    def canary_weights(self) -> list[int]:
        """The canary (model-b) weight of each route seen, in order, repeats folded."""
        out: list[int] = []
        for weights in self.seen:
            w = [wt for n, wt in weights if "model-b" in n]
            if not out or out[-1] != (w[0] if w else 0):
                out.append(w[0] if w else 0)
        return out


def events(kube: Kube, namespace: str) -> list[tuple[str, str]]:
    items = [
        e for e in kube.list("v1", "Event", namespace) if (e.get("involvedObject") or {}).get("name") == NAME
    ]
    items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return [(e["type"], e["reason"]) for e in items]


def start_rollout(
    kube: Kube, namespace: str, manifest: dict[str, Any], evalset: str | None = None
) -> RouteWatch:
    """model-a becomes stable, then spec.model moves to model-b (with a labelled set: `evalset`)."""
    kube.apply(node_model("model-a", namespace))
    model_b = node_model("model-b", namespace, language="en-GB")
    if evalset:
        model_b["spec"]["validation"]["evaluationSet"] = {"uri": evalset}
    kube.apply(model_b)
    watch = RouteWatch(kube, namespace)
    serve_then_switch(kube, manifest, watch, timeout=SERVE_TIMEOUT_S)
    return watch


def test_no_data_pauses_and_never_rolls_back(kube, namespace):
    manifest = deployment(
        namespace,
        {"type": "Canary", "canary": {"steps": [{"setWeight": 10}, {"analysis": {}}]}},
        analysis={"interval": "2s", "metrics": [WER_METRIC]},
    )
    watch = start_rollout(kube, namespace, manifest)
    md = watch.until(
        lambda md: condition(md, "Paused").get("reason") == "AnalysisNoData" and md,
        timeout=SERVE_TIMEOUT_S,
        what="paused on no data",
    )
    assert md["status"]["phase"] == "Paused"
    assert "no data" in condition(md, "Paused")["message"]
    time.sleep(6)  # several more looks: still paused, nothing rolled back or promoted
    md = watch.poll()
    assert md["status"]["phase"] == "Paused" and md["status"]["stableModel"] == "model-a"
    assert "lastRollback" not in md["status"]
    assert md["status"]["analysis"]["noData"] >= 3
    assert watch.canary_weights()[-1] == 10
    # A person aborts: the same rollback path as an automatic one, and the request is consumed.
    manifest["metadata"]["annotations"] = {"stt.dev/abort": "true"}
    kube.apply(manifest)
    md = watch.until(lambda md: md["status"].get("phase") == "RolledBack" and md, timeout=30, what="abort")
    assert "aborted by a person" in md["status"]["lastRollback"]["reason"]
    assert "stt.dev/abort" not in (md["metadata"].get("annotations") or {})
    assert watch.canary_weights()[-1] == 0


def test_gradual_progression(kube, namespace):
    manifest = deployment(namespace, {"type": "Gradual", "gradual": {"stepWeight": 40, "interval": "2s"}})
    watch = start_rollout(kube, namespace, manifest)
    watch.until(
        lambda md: md["status"].get("stableModel") == "model-b" and md["status"]["phase"] == "Healthy",
        timeout=SERVE_TIMEOUT_S,
        what="gradual promotion",
    )
    assert watch.canary_weights()[-3:] == [40, 80, 100], watch.seen


def test_restarted_operator_resumes_from_status(node_operator, kube, namespace):
    steps = [{"setWeight": 25}, {"pause": {"duration": "6s"}}, {"setWeight": 60}, {"pause": {}}]
    manifest = deployment(namespace, {"type": "Canary", "canary": {"steps": steps}})
    watch = start_rollout(kube, namespace, manifest)
    watch.until(
        lambda md: md["status"].get("currentWeight") == 25 and md["status"].get("currentStepIndex") == 1,
        timeout=SERVE_TIMEOUT_S,
        what="canary at 25 %",
    )
    node_operator.stop()  # everything the rollout knows is in status now
    time.sleep(1)
    node_operator.start()
    md = watch.until(
        lambda md: condition(md, "Paused").get("reason") == "PausedAtStep" and md,
        timeout=120,
        what="resumed to the indefinite pause",
    )
    assert md["status"]["currentWeight"] == 60 and md["status"]["currentStepIndex"] == 3
    assert watch.canary_weights()[-3:] == [0, 25, 60], watch.seen  # never restarted from 0
    assert [r for _, r in events(kube, namespace)].count("RolloutStarted") == 1
    # A person promotes; the operator consumes the annotation.
    manifest["metadata"]["annotations"] = {"stt.dev/promote": "true"}
    kube.apply(manifest)
    md = watch.until(
        lambda md: md["status"].get("stableModel") == "model-b" and md, timeout=30, what="promotion"
    )
    assert "stt.dev/promote" not in (md["metadata"].get("annotations") or {})
    assert "StepSkipped" in [r for _, r in events(kube, namespace)]


def test_selector_serves_the_best_measured_model(kube, namespace):
    """The validation Jobs' verdicts are written into STTModel status here (that path has its own
    tests); what is under test is the endpoint following the best measured model."""
    sttmodels = kube.dynamic.resources.get(api_version=API, kind="STTModel")

    def measured(name: str, wer: float) -> None:
        body = {"status": {"validation": {"wer": wer, "latencyP95Ms": 50.0}}}
        sttmodels.status.patch(
            body=body, name=name, namespace=namespace, content_type="application/merge-patch+json"
        )

    for name in ("model-a", "model-b"):
        kube.apply(node_model(name, namespace))
        wait_for(
            lambda n=name: (
                condition(kube.get(API, "STTModel", n, namespace), "Ready").get("status") == "True"
            ),
            what=f"{name} Ready",
        )
    measured("model-a", 0.12)
    measured("model-b", 0.08)
    manifest = deployment(namespace, {"type": "Immediate"})
    del manifest["spec"]["model"]
    manifest["spec"]["selector"] = {"language": "en-US", "criteria": {"maxWer": 0.2}}
    kube.apply(manifest)
    watch = RouteWatch(kube, namespace)
    md = watch.until(
        lambda md: (md.get("status") or {}).get("stableModel") == "model-b" and md, SERVE_TIMEOUT_S, "model-b"
    )
    assert md["status"]["selectedModel"] == "model-b"
    assert "ModelSelected" in [r for _, r in events(kube, namespace)]
    # A better measurement of model-a moves the endpoint to it.
    measured("model-a", 0.05)
    md = watch.until(
        lambda md: md["status"].get("stableModel") == "model-a" and md, SERVE_TIMEOUT_S, "model-a"
    )
    assert md["status"]["selectedModel"] == "model-a"
    assert [r["model"] for r in md["status"]["revisions"]] == ["model-b", "model-a"]
