"""A/B tests end to end: the real operator process, a real kube-apiserver (kwok makes the Triton
pods Ready) and a real Prometheus scraping a prometheus_client exporter that exports the
evaluator's `stt_eval_*` series for each variant of the endpoint (labels endpoint / variant /
model / language, pairs against the control).

The verdicts come from the operator's own queries: a clearly better candidate wins and is
promoted through the ModelDeployment; equal variants end with NoDifference at the duration; a
sample-ratio mismatch holds the decision. The route carries the split while the test runs and
goes back to the endpoint's stable revision afterwards, never naming a backend that is not
Available."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from stt_harness.argocd import ArgoCD, Customizations, capture, merge_patch, render_customizations
from stt_harness.cluster import ensure_tools
from stt_harness.evalsim import record_paired_utterance
from stt_harness.kubewait import condition, event_reasons, wait_for
from stt_harness.prometheus import Exporter, PrometheusServer
from stt_harness.resources import API, model_deployment, stt_model
from stt_harness.routewatch import RouteWatch
from stt_operator import evalmetrics as em
from stt_operator import kubectl_plugin
from stt_operator.experiments.objects import LABEL_ABTEST
from stt_operator.rollout.common import ANNOTATION_HELD_BY
from stt_operator.services.kube import Kube

pytestmark = pytest.mark.integration

MD = "asr"
AB = "ab"
MODELS = {"control": "model-a", "candidate": "model-b"}


@pytest.fixture
def namespace(operator_namespace: str) -> str:
    return operator_namespace


class Evaluator:
    """Replays a synthetic labelled set to both variants, as the evaluator does: every utterance
    to both (paired), the candidate `gain` fewer errors (0 = the same difficulty model), and
    `control_requests` requests to the control per candidate request (1 = as configured)."""

    def __init__(
        self, exporter: Exporter, metrics: em.EvalMetrics, gain: float, control_requests: int
    ) -> None:
        self.exporter, self.metrics = exporter, metrics
        self.gain, self.control_requests = gain, control_requests
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def labels(variant: str) -> dict[str, str]:
        return {
            "endpoint": MD,
            "variant": variant,
            "model": MODELS[variant],
            "language": "en-US",
            "baseline": "control",
        }

    def _run(self) -> None:
        rng = np.random.default_rng(11)
        control, candidate = self.labels("control"), self.labels("candidate")
        m = self.metrics
        while not self.stop.is_set():
            for _ in range(40):
                words = int(rng.integers(4, 25))
                difficulty = rng.beta(2, 16)
                b = int(rng.binomial(words, difficulty))
                # gain 0: the same model, an independent draw at the same difficulty
                c = b - int(rng.binomial(b, self.gain)) if self.gain else int(rng.binomial(words, difficulty))
                for _ in range(self.control_requests):
                    m.record_request(control)
                m.record_request(candidate)
                record_paired_utterance(
                    m, control, candidate, words=words, baseline_errors=b, candidate_errors=c
                )
            self.stop.wait(0.5)


@pytest.fixture
def evaluator_factory(
    operator_prometheus: PrometheusServer, exporter_factory: Callable[..., Exporter]
) -> Iterator[Callable[..., Evaluator]]:
    started: list[Evaluator] = []

    def make(namespace: str, gain: float = 0.0, control_requests: int = 1) -> Evaluator:
        registry = CollectorRegistry()
        metrics = em.build_eval_metrics(registry)
        ev = Evaluator(exporter_factory(registry), metrics, gain, control_requests)
        for variant in MODELS:
            metrics.init_variant(ev.labels(variant))
        metrics.init_pair(ev.labels("candidate"))
        # As a ServiceMonitor would, the target carries the namespace of the evaluator's Service.
        operator_prometheus.add_target(
            "abtest-evaluator", ev.exporter.address, labels={"namespace": namespace}
        )
        ev.thread.start()
        started.append(ev)
        return ev

    yield make
    for ev in started:
        ev.stop.set()
        ev.thread.join(5)
        operator_prometheus.remove_target("abtest-evaluator", ev.exporter.address)


class Watch(RouteWatch):
    """The endpoint's route while the ABTest moves it; each poll returns the ABTest."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        super().__init__(kube, namespace, MD, (API, "ABTest", AB))

    def split_seen(self, weights: dict[str, int]) -> bool:
        """Was a route with exactly these model -> weight shares observed?"""
        for seen in self.seen:
            by_model = {}
            for service, weight in seen:
                model = next((m for m in MODELS.values() if m in service), service)
                by_model[model] = weight
            if by_model == weights:
                return True
        return False


def serve_endpoint(kube: Kube, namespace: str) -> None:
    """model-a serves the endpoint; model-b is a Ready catalogue entry. model-a names an
    evaluation set, so the test creates its evaluator."""
    model_a = stt_model("model-a", namespace)
    model_a["spec"]["validation"]["evaluationSet"] = {"uri": "file:///data/evalset.tar.gz"}
    kube.apply(model_a)
    kube.apply(stt_model("model-b", namespace))
    kube.apply(model_deployment(MD, namespace, "model-a"))
    wait_for(
        lambda: (
            ((kube.get(API, "ModelDeployment", MD, namespace) or {}).get("status") or {}).get("phase")
            == "Healthy"
        ),
        timeout=90,
        what="model-a serving the endpoint",
    )


def abtest(namespace: str, weights: tuple[int, int] = (50, 50), **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ABTest",
        "metadata": {"name": AB, "namespace": namespace},
        "spec": {
            "endpoint": {"modelDeploymentRef": {"name": MD}},
            "variants": [
                {"name": "control", "model": {"name": "model-a"}, "weight": weights[0]},
                {"name": "candidate", "model": {"name": "model-b"}, "weight": weights[1]},
            ],
            "primaryMetric": {"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.05, "minSamples": 50},
            "minSamplesPerVariant": 50,
            **spec,
        },
    }


def md_of(kube: Kube, namespace: str) -> dict[str, Any]:
    return kube.get(API, "ModelDeployment", MD, namespace) or {}


def test_better_candidate_wins_and_is_promoted(operator, kube, namespace, evaluator_factory):
    serve_endpoint(kube, namespace)
    evaluator_factory(namespace, gain=0.5)
    kube.apply(abtest(namespace, duration="2m", minDuration="3s", promotion={"auto": True}))
    watch = Watch(kube, namespace)
    running = watch.until(lambda t: (t.get("status") or {}).get("phase") == "Running" and t, 60, "Running")
    assert md_of(kube, namespace)["metadata"]["annotations"][ANNOTATION_HELD_BY] == AB
    # The ModelDeployment reports the hold (and leaves the route alone meanwhile).
    wait_for(lambda: md_of(kube, namespace)["status"].get("heldBy") == AB, timeout=10, what="status.heldBy")
    assert condition(running, "Running")["status"] == "True"
    assert running["status"]["variantSummary"] == "control=50% candidate=50%"
    # The evaluator replays to both variants: the endpoint's stable revision and the test's own.
    cm = kube.list("v1", "ConfigMap", namespace, {LABEL_ABTEST: AB})
    config = yaml.safe_load(cm[0]["data"]["config.yaml"])
    assert [t["variant"] for t in config["targets"]] == ["control", "candidate"]
    assert config["endpoint"] == MD and config["baseline"] == "control"
    watch.until(
        lambda t: watch.split_seen({"model-a": 50, "model-b": 50}), 30, "the 50/50 split in the route"
    )
    done = watch.until(lambda t: t["status"].get("phase") == "Promoted" and t, 90, "winner promoted")
    status = done["status"]
    assert status["winner"] == "candidate"
    decision = status["decision"]
    assert decision["outcome"] == "Winner" and decision["metric"] == "wer"
    assert decision["pValue"] < 0.05 and decision["effect"] < 0
    assert decision["confidenceInterval"]["upper"] < 0 and decision["confidenceInterval"]["level"] == 0.95
    by_name = {v["name"]: v for v in status["variants"]}
    assert by_name["candidate"]["wer"] < by_name["control"]["wer"]
    assert by_name["candidate"]["samples"] >= 50 and by_name["control"]["samples"] >= 50
    assert condition(done, "Concluded")["status"] == "True" and status["sampleRatio"]["detected"] is False
    # Promotion went through the ModelDeployment: spec.model switched, hold released.
    md = md_of(kube, namespace)
    assert md["spec"]["model"]["name"] == "model-b"
    assert ANNOTATION_HELD_BY not in (md["metadata"].get("annotations") or {})
    reasons = event_reasons(kube, namespace, AB)
    for reason in ("TestStarted", "WinnerFound", "WinnerPromoted"):
        assert reason in reasons, reasons
    # The test's variant Deployment and evaluator go; the endpoint rolls model-b out itself.
    watch.until(
        lambda t: not kube.list("apps/v1", "Deployment", namespace, {LABEL_ABTEST: AB}),
        30,
        "variants removed",
    )
    wait_for(
        lambda: (md_of(kube, namespace).get("status") or {}).get("stableModel") == "model-b",
        timeout=60,
        what="the endpoint serving the winner",
    )


def test_equal_variants_end_with_no_difference_and_route_goes_back(
    operator, kube, namespace, evaluator_factory
):
    serve_endpoint(kube, namespace)
    evaluator_factory(namespace)
    kube.apply(abtest(namespace, (60, 40), duration="20s", minDuration="5s", significanceLevel=0.01))
    watch = Watch(kube, namespace)
    running = watch.until(lambda t: (t.get("status") or {}).get("phase") == "Running" and t, 60, "Running")
    watch.until(
        lambda t: watch.split_seen({"model-a": 60, "model-b": 40}), 30, "the 60/40 split in the route"
    )
    # A restarted operator resumes the running test from its status (same start, same split).
    operator.stop()
    operator.start()
    done = watch.until(
        lambda t: t["status"].get("phase") == "Concluded" and t, 60, "concluded at the duration"
    )
    status = done["status"]
    assert "winner" not in status
    assert status["decision"]["outcome"] == "NoDifference", status["decision"]
    assert condition(done, "Concluded")["reason"] == "DurationReached"
    assert "alpha=0.01" in status["decision"]["reason"]
    assert all(v["samples"] >= 50 for v in status["variants"])
    assert status["startedAt"] == running["status"]["startedAt"]
    assert event_reasons(kube, namespace, AB).count("TestStarted") == 1
    # Back to the stable revision only, hold released, the spec untouched. While the test held
    # the route nobody else wrote it: the endpoint's route went stable -> split -> stable.
    watch.until(lambda t: len(watch.seen) >= 3, 30, "route back")
    stable = watch.seen[0]
    assert len(watch.seen) == 3 and watch.seen[2] == stable and [w for _, w in stable] == [100], watch.seen
    assert "model-a" in stable[0][0] and sorted(w for _, w in watch.seen[1]) == [40, 60], watch.seen
    wait_for(lambda: "heldBy" not in md_of(kube, namespace)["status"], timeout=10, what="heldBy cleared")
    md = md_of(kube, namespace)
    assert md["spec"]["model"]["name"] == "model-a"
    assert ANNOTATION_HELD_BY not in (md["metadata"].get("annotations") or {})
    watch.until(
        lambda t: not kube.list("apps/v1", "Deployment", namespace, {LABEL_ABTEST: AB}),
        30,
        "variants removed",
    )
    assert "DurationReached" in event_reasons(kube, namespace, AB)


def test_sample_ratio_mismatch_holds_the_decision(operator, kube, namespace, evaluator_factory):
    serve_endpoint(kube, namespace)
    evaluator_factory(namespace, gain=0.5, control_requests=2)
    # The duration leaves room for a loaded machine: the alarm must come before the test ends.
    kube.apply(abtest(namespace, duration="60s", minDuration="2s", promotion={"auto": True}))
    watch = Watch(kube, namespace)
    held = watch.until(
        lambda t: condition(t, "SampleRatioMismatch").get("status") == "True" and t, 55, "sample-ratio alarm"
    )
    status = held["status"]
    assert status["phase"] == "Running" and "winner" not in status
    assert status["sampleRatio"]["detected"] is True and status["sampleRatio"]["pValue"] < 0.001
    assert "decision held" in condition(held, "SampleRatioMismatch")["message"]
    done = watch.until(lambda t: t["status"].get("phase") == "Concluded" and t, 90, "end of the duration")
    # A clearly better candidate, but the split was broken: no winner, nothing promoted.
    assert "winner" not in done["status"] and done["status"]["decision"]["outcome"] == "Inconclusive"
    assert "SampleRatioMismatch" in event_reasons(kube, namespace, AB)
    wait_for(
        lambda: ANNOTATION_HELD_BY not in (md_of(kube, namespace)["metadata"].get("annotations") or {}),
        timeout=20,
        what="hold released",
    )
    assert md_of(kube, namespace)["spec"]["model"]["name"] == "model-a"


def test_no_data_pauses_then_a_person_stops_the_test(operator, kube, namespace):
    serve_endpoint(kube, namespace)
    manifest = abtest(namespace, duration="10m", promotion={"auto": True})
    kube.apply(manifest)
    watch = Watch(kube, namespace)
    paused = watch.until(
        lambda t: condition(t, "Paused").get("status") == "True" and t, 60, "paused on no data"
    )
    assert (
        condition(paused, "Paused")["reason"] == "NoData"
        and "no series" in condition(paused, "Paused")["message"]
    )
    assert paused["status"]["phase"] == "Running" and "winner" not in paused["status"]
    manifest["spec"]["stop"] = True
    kube.apply(manifest)
    done = watch.until(lambda t: t["status"].get("phase") == "Stopped" and t, 30, "stopped")
    assert done["status"]["decision"]["outcome"] == "Stopped" and "StoppedByUser" in event_reasons(
        kube, namespace, AB
    )
    watch.until(
        lambda t: [w for _, w in watch.seen[-1]] == [100] and "model-a" in watch.seen[-1][0][0],
        20,
        "route back",
    )
    wait_for(
        lambda: ANNOTATION_HELD_BY not in (md_of(kube, namespace)["metadata"].get("annotations") or {}),
        timeout=20,
        what="hold released",
    )
    assert md_of(kube, namespace)["spec"]["model"]["name"] == "model-a"  # never promoted


@pytest.fixture(scope="module")
def argocd() -> ArgoCD:
    return ArgoCD(Customizations(render_customizations(str(ensure_tools() / "bin" / "helm"))))


def test_gitops_winner_is_announced_not_written(
    operator, kube, kubeconfig, namespace, evaluator_factory, argocd, capsys
):
    """promotion.mode Announce: the spec Git owns is never written; the winner and the change to
    make are in status and an Event, `kubectl stt promotion` prints it, and applying that change
    (as a Git sync would) rolls the winner out. Argo CD's health follows each phase."""
    serve_endpoint(kube, namespace)
    evaluator_factory(namespace, gain=0.5)
    kube.apply(
        abtest(namespace, duration="2m", minDuration="3s", promotion={"auto": True, "mode": "Announce"})
    )
    watch = Watch(kube, namespace)
    running = watch.until(lambda t: (t.get("status") or {}).get("phase") == "Running" and t, 60, "Running")
    capture("abtest-running", running)
    assert argocd.health(running)["status"] == "Progressing" and argocd.discover(running) == {"abort": True}
    held = wait_for(lambda: (m := md_of(kube, namespace))["status"].get("heldBy") == AB and m, 10, "held")
    capture("mdep-held-by-abtest", held)
    assert (
        argocd.health(held)["status"] == "Healthy"
        and f"held by ABTest {AB}" in argocd.health(held)["message"]
    )
    assert not argocd.discover(held)["promote"]
    done = watch.until(
        lambda t: t["status"].get("phase") == "Concluded" and t["status"].get("promotion") and t,
        90,
        "announced",
    )
    capture("abtest-concluded-announced", done)
    status = done["status"]
    assert status["winner"] == "candidate" and status["promotion"]["mode"] == "Announce"
    assert status["promotion"]["model"] == "model-b" and status["promotion"]["endpoint"] == MD
    assert json.loads(status["promotion"]["patch"]) == {"spec": {"model": {"name": "model-b"}}}
    assert condition(done, "Ready")["reason"] == "WinnerAnnounced"
    health = argocd.health(done)
    assert health["status"] == "Healthy" and "winner candidate" in health["message"]
    assert not argocd.discover(done)["abort"]
    reasons = wait_for(
        lambda: "WinnerAnnounced" in (r := event_reasons(kube, namespace, AB)) and r, 30, "Event"
    )
    assert "WinnerPromoted" not in reasons
    # The hold is released and the endpoint keeps serving what Git declares.
    md = wait_for(
        lambda: (
            ANNOTATION_HELD_BY not in ((m := md_of(kube, namespace))["metadata"].get("annotations") or {})
            and not m["status"].get("heldBy")
            and m
        ),
        timeout=30,
        what="hold released",
    )
    assert md["spec"]["model"]["name"] == "model-a"
    assert md["status"]["declaredModel"] == md["status"]["stableModel"] == "model-a"
    time.sleep(3)  # more reconciles of the concluded test: still never written
    assert md_of(kube, namespace)["spec"]["model"]["name"] == "model-a"
    assert watch.poll()["status"]["phase"] == "Concluded"
    # kubectl stt promotion: the change for Git, as YAML (for a PR) and as a merge patch.
    args = ["-n", namespace, "--kubeconfig", str(kubeconfig)]
    capsys.readouterr()
    assert kubectl_plugin.main(["promotion", f"abt/{AB}", *args]) == 0
    text = capsys.readouterr().out
    manifest = yaml.safe_load(text)
    assert manifest["kind"] == "ModelDeployment" and manifest["metadata"]["name"] == MD
    assert manifest["spec"] == {"model": {"name": "model-b"}} and "winner candidate" in text
    assert kubectl_plugin.main(["promotion", f"abt/{AB}", "-o", "json", *args]) == 0
    patch = json.loads(capsys.readouterr().out)
    # Git takes the change (here: the same merge patch a sync would apply); the endpoint rolls it out.
    kube.dynamic.resources.get(api_version=API, kind="ModelDeployment").patch(
        body=patch, name=MD, namespace=namespace, content_type="application/merge-patch+json"
    )
    wait_for(
        lambda: (md_of(kube, namespace).get("status") or {}).get("stableModel") == "model-b",
        timeout=60,
        what="the endpoint serving the winner after the Git change",
    )


def test_argocd_abort_action_stops_a_running_test(operator, kube, namespace, argocd):
    serve_endpoint(kube, namespace)
    kube.apply(abtest(namespace, duration="10m"))
    watch = Watch(kube, namespace)
    running = watch.until(lambda t: (t.get("status") or {}).get("phase") == "Running" and t, 60, "Running")
    patch = merge_patch(running, argocd.act(running, "abort"))
    assert patch == {"spec": {"stop": True}}
    kube.dynamic.resources.get(api_version=API, kind="ABTest").patch(
        body=patch, name=AB, namespace=namespace, content_type="application/merge-patch+json"
    )
    stopped = watch.until(lambda t: t["status"].get("phase") == "Stopped" and t, 30, "stopped")
    capture("abtest-stopped", stopped)
    assert argocd.health(stopped)["status"] == "Healthy" and argocd.discover(stopped) == {"abort": False}
