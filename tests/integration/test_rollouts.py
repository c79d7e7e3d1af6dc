"""Progressive rollouts end to end: the real operator process, a real kube-apiserver (kwok makes
the Triton pods Ready) and a real Prometheus scraping a prometheus_client exporter that exports
the evaluator's `stt_eval_*` series for the stable and canary variants of an endpoint.

The analysis verdicts come from the operator's own queries against that Prometheus: a canary
whose replayed WER equals the stable one's is promoted; one whose WER is clearly worse is
rolled back; an endpoint without series pauses."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from stt_harness.evalsim import record_paired_utterance
from stt_harness.kubewait import condition, wait_for
from stt_harness.prometheus import Exporter, PrometheusServer
from stt_harness.resources import API, stt_model
from stt_harness.routewatch import RouteWatch as BaseRouteWatch
from stt_harness.routewatch import serve_then_switch
from stt_operator import evalmetrics as em
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.services.kube import Kube

pytestmark = pytest.mark.integration

NAME = "asr"
WER_METRIC = {"name": "wer", "preset": "wer", "nonInferiorityMargin": 0.03, "minSamples": 50}


@pytest.fixture
def namespace(operator_namespace: str) -> str:
    """Every test here runs in a namespace the session's operator watches."""
    return operator_namespace


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


class Evaluator:
    """Replays a synthetic labelled set to both variants forever, as the evaluator would, with a
    chosen extra error rate for the canary (0 = as good as stable)."""

    def __init__(self, exporter: Exporter, metrics: em.EvalMetrics, extra: float, candidate: str) -> None:
        self.exporter, self.metrics, self.extra, self.candidate = exporter, metrics, extra, candidate
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.count = 0

    def labels(self, variant: str) -> dict[str, str]:
        model = "model-a" if variant == "stable" else "model-b"
        return {
            "endpoint": NAME,
            "variant": variant,
            "model": model,
            "language": "en-US",
            "baseline": "stable",
        }

    def _run(self) -> None:
        rng = np.random.default_rng(7)
        stable, canary = self.labels("stable"), self.labels(self.candidate)
        m = self.metrics
        while not self.stop.is_set():
            for _ in range(40):
                words = int(rng.integers(4, 25))
                b = int(rng.binomial(words, rng.beta(2, 16)))
                c = max(0, b + int(rng.binomial(words, self.extra)) - int(rng.binomial(b, 0.05)))
                m.record_request(stable)
                m.record_request(canary)
                record_paired_utterance(m, stable, canary, words=words, baseline_errors=b, candidate_errors=c)
                self.count += 1
            self.stop.wait(0.5)


@pytest.fixture
def evaluator_factory(
    operator_prometheus: PrometheusServer, exporter_factory: Callable[..., Exporter]
) -> Iterator[Callable[..., Evaluator]]:
    started: list[Evaluator] = []

    def make(namespace: str, extra: float, candidate: str = "canary") -> Evaluator:
        """`candidate`: the variant label of the new revision (canary, or preview for blue-green)."""
        registry = CollectorRegistry()
        metrics = em.build_eval_metrics(registry)
        exporter = exporter_factory(registry)
        ev = Evaluator(exporter, metrics, extra, candidate)
        for variant in ("stable", candidate):
            metrics.init_variant(ev.labels(variant))
        metrics.init_pair(ev.labels(candidate))
        ev.thread.start()
        # As a ServiceMonitor would, the target carries the namespace of the evaluator's Service.
        operator_prometheus.add_target("evaluator", exporter.address, labels={"namespace": namespace})
        started.append(ev)
        return ev

    yield make
    for ev in started:
        ev.stop.set()
        ev.thread.join(5)
        operator_prometheus.remove_target("evaluator", ev.exporter.address)


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
    kube.apply(stt_model("model-a", namespace))
    model_b = stt_model("model-b", namespace, language="en-GB")
    if evalset:
        model_b["spec"]["validation"]["evaluationSet"] = {"uri": evalset}
    kube.apply(model_b)
    watch = RouteWatch(kube, namespace)
    serve_then_switch(kube, manifest, watch)
    return watch


def test_canary_healthy_is_promoted_through_every_step(operator, kube, namespace, evaluator_factory):
    evaluator_factory(namespace, 0.0)
    manifest = deployment(
        namespace,
        {
            "type": "Canary",
            "canary": {"steps": [{"setWeight": 20}, {"analysis": {}}, {"setWeight": 50}, {"analysis": {}}]},
        },
        analysis={"interval": "2s", "metrics": [WER_METRIC]},
    )
    watch = start_rollout(kube, namespace, manifest, evalset="file:///data/evalset-en")
    # While model-b is in flight the endpoint owns an evaluator replaying the set to both revisions.
    config_map = wait_for(
        lambda: kube.get("v1", "ConfigMap", f"{NAME}-evaluator", namespace), timeout=60, what="evaluator"
    )
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert [t["variant"] for t in config["targets"]] == ["stable", "canary"]
    assert config["evalset"] == "file:///data/evalset-en" and config["endpoint"] == NAME
    assert kube.get("apps/v1", "Deployment", f"{NAME}-evaluator", namespace) is not None
    md = watch.until(
        lambda md: md["status"].get("stableModel") == "model-b" and md["status"]["phase"] == "Healthy" and md,
        timeout=90,
        what="canary promoted",
    )
    # Every step was visible in the route: 20 %, 50 %, then all traffic.
    assert watch.canary_weights()[-3:] == [20, 50, 100], watch.seen
    status = md["status"]
    assert [(r["model"], r["outcome"]) for r in status["revisions"]] == [
        ("model-a", "Superseded"),
        ("model-b", "Serving"),
    ]
    passed = [r for r in status["analysisRuns"] if r["outcome"] == "Passed"]
    assert {r["step"] for r in passed} == {1, 3}
    assert all(r["metric"] == "wer" and r["value"] <= r["baseline"] + 0.03 for r in passed)
    # Kopf posts Events after the status patch lands, so the last one may trail it a little.
    wanted = {"RolloutStarted", "WeightChanged", "AnalysisPassed", "StepAdvanced", "Promoted"}
    reasons = wait_for(
        lambda: wanted <= set(found := [r for _, r in events(kube, namespace)]) and found,
        timeout=30,
        what=f"events {sorted(wanted)}",
    )
    assert "RolledBack" not in reasons
    # The old revision and the evaluator go (scaleDownDelay 0s).
    watch.until(
        lambda md: len(kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: NAME})) == 1,
        timeout=30,
        what="model-a and the evaluator removed",
    )
    assert kube.get("v1", "ConfigMap", f"{NAME}-evaluator", namespace) is None


def test_canary_with_regressed_wer_rolls_back(operator, kube, namespace, evaluator_factory):
    evaluator_factory(namespace, 0.15)
    before = _rollbacks(operator, namespace)
    manifest = deployment(
        namespace,
        {"type": "Canary", "canary": {"steps": [{"setWeight": 30}, {"analysis": {}}, {"setWeight": 100}]}},
        analysis={"interval": "2s", "metrics": [WER_METRIC]},
    )
    watch = start_rollout(kube, namespace, manifest)
    md = watch.until(
        lambda md: (md.get("status") or {}).get("phase") == "RolledBack" and md,
        timeout=90,
        what="automatic rollback",
    )
    status = md["status"]
    assert status["stableModel"] == "model-a"
    assert status["lastRollback"]["fromModel"] == "model-b" and status["lastRollback"]["toModel"] == "model-a"
    assert "wer Failed" in status["lastRollback"]["reason"]
    assert [(r["model"], r["outcome"]) for r in status["revisions"]] == [
        ("model-a", "Serving"),
        ("model-b", "RolledBack"),
    ]
    assert condition(md, "Degraded")["status"] == "True" and condition(md, "Ready")["status"] == "True"
    failed = [r for r in status["analysisRuns"] if r["outcome"] == "Failed"]
    assert failed and failed[-1]["value"] > failed[-1]["baseline"] + 0.05
    # Traffic went 30 % to the canary, then all back to stable, and the canary is gone.
    assert watch.canary_weights()[-2:] == [30, 0], watch.seen
    deps = kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: NAME})
    assert [d["metadata"]["name"] for d in deps] == [n for n, _ in watch.seen[-1]]
    assert ("Warning", "RolledBack") in events(kube, namespace)
    assert _rollbacks(operator, namespace) == before + 1
    # Not retried while the spec stays on the rolled-back model.
    time.sleep(4)
    md = watch.poll()
    assert md["status"]["phase"] == "RolledBack" and "canaryRevision" not in md["status"]
    assert [r for _, r in events(kube, namespace)].count("RolloutStarted") == 1


def test_no_data_pauses_and_never_rolls_back(operator, kube, namespace):
    manifest = deployment(
        namespace,
        {"type": "Canary", "canary": {"steps": [{"setWeight": 10}, {"analysis": {}}]}},
        analysis={"interval": "2s", "metrics": [WER_METRIC]},
    )
    watch = start_rollout(kube, namespace, manifest)
    md = watch.until(
        lambda md: condition(md, "Paused").get("reason") == "AnalysisNoData" and md,
        timeout=90,
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


def test_blue_green_preview_analysed_then_switched(operator, kube, namespace, evaluator_factory):
    evaluator_factory(namespace, 0.0, candidate="preview")
    manifest = deployment(
        namespace,
        {"type": "BlueGreen", "blueGreen": {"prePromotionAnalysis": True, "scaleDownDelaySeconds": 0}},
        analysis={"interval": "2s", "metrics": [WER_METRIC]},
    )
    watch = start_rollout(kube, namespace, manifest)
    md = watch.until(
        lambda md: md["status"].get("stableModel") == "model-b" and md["status"]["phase"] == "Healthy" and md,
        timeout=90,
        what="blue-green promotion",
    )
    # The preview was routed at weight 0 before the switch moved everything at once.
    assert watch.canary_weights()[-2:] == [0, 100], watch.seen
    assert any(len(w) == 2 and ("model-b" in w[0][0] or "model-b" in w[1][0]) for w in watch.seen)
    assert md["status"]["revisions"][-1]["outcome"] == "Serving"
    assert any(r["outcome"] == "Passed" and r["step"] == 0 for r in md["status"]["analysisRuns"])
    wanted = {"PreviewReady", "AnalysisPassed", "Promoted"}  # Events may trail the status patch
    wait_for(
        lambda: wanted <= {r for _, r in events(kube, namespace)}, timeout=30, what=f"events {sorted(wanted)}"
    )


def test_gradual_progression(operator, kube, namespace):
    manifest = deployment(namespace, {"type": "Gradual", "gradual": {"stepWeight": 40, "interval": "2s"}})
    watch = start_rollout(kube, namespace, manifest)
    watch.until(
        lambda md: md["status"].get("stableModel") == "model-b" and md["status"]["phase"] == "Healthy",
        timeout=90,
        what="gradual promotion",
    )
    assert watch.canary_weights()[-3:] == [40, 80, 100], watch.seen


def _rollbacks(operator: Any, namespace: str) -> float:
    for line in operator.metrics().splitlines():
        if line.startswith("stt_operator_rollbacks_total{") and f'namespace="{namespace}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_restarted_operator_resumes_from_status(operator, kube, namespace):
    steps = [{"setWeight": 25}, {"pause": {"duration": "6s"}}, {"setWeight": 60}, {"pause": {}}]
    manifest = deployment(namespace, {"type": "Canary", "canary": {"steps": steps}})
    watch = start_rollout(kube, namespace, manifest)
    watch.until(
        lambda md: md["status"].get("currentWeight") == 25 and md["status"].get("currentStepIndex") == 1,
        timeout=60,
        what="canary at 25 %",
    )
    operator.stop()  # everything the rollout knows is in status now
    time.sleep(1)
    operator.start()
    md = watch.until(
        lambda md: condition(md, "Paused").get("reason") == "PausedAtStep" and md,
        timeout=60,
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


def test_selector_serves_the_best_measured_model(operator, kube, namespace):
    """The validation Jobs' verdicts are written into STTModel status here (that path has its own
    tests); what is under test is the endpoint following the best measured model."""
    sttmodels = kube.dynamic.resources.get(api_version=API, kind="STTModel")

    def measured(name: str, wer: float) -> None:
        body = {"status": {"validation": {"wer": wer, "latencyP95Ms": 50.0}}}
        sttmodels.status.patch(
            body=body, name=name, namespace=namespace, content_type="application/merge-patch+json"
        )

    for name in ("model-a", "model-b"):
        kube.apply(stt_model(name, namespace))
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
        lambda md: (md.get("status") or {}).get("stableModel") == "model-b" and md, 90, "model-b"
    )
    assert md["status"]["selectedModel"] == "model-b"
    assert "ModelSelected" in [r for _, r in events(kube, namespace)]
    # A better measurement of model-a moves the endpoint to it.
    measured("model-a", 0.05)
    md = watch.until(lambda md: md["status"].get("stableModel") == "model-a" and md, 60, "model-a")
    assert md["status"]["selectedModel"] == "model-a"
    assert [r["model"] for r in md["status"]["revisions"]] == ["model-b", "model-a"]
