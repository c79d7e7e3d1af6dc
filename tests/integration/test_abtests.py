"""A/B tests end to end: the real operator process, a real kube-apiserver (kwok makes the
variants' Triton pods Ready), and the measurement chain on real parts: two local tritonservers
(one per variant Service) serving the pocketsphinx recognisers, the real evaluator process
(`stt-operator evaluate`, run with the ConfigMap the operator wrote) replaying a synthesised
labelled set to both, and a real Prometheus scraping the evaluator's `stt_eval_*` series and each
Triton's `nv_inference_*` counters (labelled with the namespace and Service of its variant, as a
ServiceMonitor would).

The verdicts come from the operator's own queries over those real measurements: the degraded
recogniser as control and the baseline as candidate, the candidate wins and is promoted through
the ModelDeployment; the same recogniser on both ends with NoDifference at the duration; a
skewed live split (requests to the Triton servers out of the route's proportions) is a
sample-ratio mismatch that holds the decision. The route carries the split while the test runs,
with the sticky-session rules when stickiness is on, and goes back to the endpoint's stable
revision afterwards, never naming a backend that is not Available.

Why local tritonservers rather than pods on the real node: the variants' Deployments here run on
kwok nodes (fast, no image pulls), and the evaluator and Triton processes are the same binaries
the images carry; the Gateway's part (stickiness, the split) is tested on the real node through
Traefik in test_gateway.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stt_harness.argocd import ArgoCD, Customizations, capture, merge_patch, render_customizations
from stt_harness.cluster import ensure_tools
from stt_harness.kubewait import condition, event_reasons, wait_for, wait_reasons
from stt_harness.prometheus import PrometheusServer, ScrapeTarget, free_port
from stt_harness.resources import API, model_deployment, stt_model
from stt_harness.routewatch import RouteWatch
from stt_harness.triton import BASELINE_MODEL, DEGRADED_MODEL, LocalTriton, local_sphinx_triton
from stt_operator import evalmetrics as em
from stt_operator import kubectl_plugin
from stt_operator.builders.routing import GATEWAY_API_VERSION, route_name, route_weights
from stt_operator.experiments.objects import LABEL_ABTEST
from stt_operator.rollout.transitions import ANNOTATION_HELD_BY
from stt_operator.services.kube import Kube

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MD = "asr"
AB = "ab"
MODELS = {"control": "model-a", "candidate": "model-b"}
UTTERANCES = 16  # per round; the evaluator loops over them until stopped


@pytest.fixture
def namespace(operator_namespace: str) -> str:
    return operator_namespace


@pytest.fixture(scope="module")
def variant_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LocalTriton]]:
    """One tritonserver per variant Service, each serving both recognisers (the test picks which
    one a variant's evaluator target calls), so Triton's counters tell the variants apart."""
    with (
        local_sphinx_triton(tmp_path_factory.mktemp("triton-control")) as control,
        local_sphinx_triton(tmp_path_factory.mktemp("triton-candidate")) as candidate,
    ):
        yield {"control": control, "candidate": candidate}


class LiveEvaluator:
    """The real evaluator process, configured from the operator's ConfigMap, its targets pointed
    at the local tritonservers (the Services' pods are kwok's); scraped with its Tritons."""

    def __init__(
        self,
        kube: Kube,
        prometheus: PrometheusServer,
        servers: dict[str, LocalTriton],
        evalset: Path,
        workdir: Path,
    ) -> None:
        self.kube, self.prometheus, self.servers = kube, prometheus, servers
        self.evalset, self.workdir = evalset, workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.targets: list[ScrapeTarget] = []
        self.services: dict[str, str] = {}

    def start(
        self,
        namespace: str,
        recognisers: dict[str, str],
        before_replay: Callable[[LiveEvaluator], None] | None = None,
    ) -> LiveEvaluator:
        """`recognisers`: variant -> Triton model (sphinx baseline or degraded) it answers with.
        `before_replay` runs once the Tritons are scraped, before the evaluator starts."""
        cm = wait_for(
            lambda: self.kube.list("v1", "ConfigMap", namespace, {LABEL_ABTEST: AB}),
            timeout=60,
            what="the evaluator ConfigMap",
        )
        config = yaml.safe_load(cm[0]["data"]["config.yaml"])
        config_path = self.workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        route = wait_for(
            lambda: (
                len(
                    w := route_weights(
                        self.kube.get(GATEWAY_API_VERSION, "HTTPRoute", route_name(MD), namespace)
                    )
                )
                == 2
                and w
            ),
            timeout=60,
            what="the split route",
        )
        # The route names each variant's Service; its Triton is scraped under that name.
        self.services = {v: next(s for s in route if m in s) for v, m in MODELS.items()}
        self.targets = [
            ScrapeTarget(
                "triton",
                f"127.0.0.1:{self.servers[v].metrics_port}",
                {"namespace": namespace, "service": self.services[v]},
            )
            for v in MODELS
        ]
        self.prometheus.add_targets(self.targets, timeout=60)
        if before_replay is not None:
            before_replay(self)
        port = free_port()
        cmd = [
            sys.executable, "-m", "stt_operator.cli", "evaluate", "--config", str(config_path),
            "--evalset", str(self.evalset), "--max-utterances", str(UTTERANCES),
            *(
                arg
                for v in MODELS
                for arg in ("--target", f"{v}={recognisers[v]}@{self.servers[v].grpc_url}/{MODELS[v]}")
            ),
            "--rounds", "0", "--round-interval", "0", "--concurrency", "4",
            "--metrics-address", "127.0.0.1", "--metrics-port", str(port),
        ]  # fmt: skip
        self.log = (self.workdir / "evaluator.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ))
        evaluator = ScrapeTarget("abtest-evaluator", f"127.0.0.1:{port}", {"namespace": namespace})
        self.targets.append(evaluator)
        self.prometheus.add_targets([evaluator], timeout=60)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.log.close()
        for t in self.targets:
            self.prometheus.remove_target(t.job, t.address)

    def requests(self, namespace: str) -> dict[str, float]:
        """The evaluator's request counter per variant, as Prometheus has it."""
        q = f"sum by (variant) ({em.REQUESTS}{{namespace='{namespace}',endpoint='{MD}'}})"
        return {r["metric"]["variant"]: float(r["value"][1]) for r in self.prometheus.query(q)}


def send_live(server: LocalTriton, triton_model: str, evalset: Path, rounds: int) -> int:
    """Client requests straight to one variant's Triton (what a broken split would send it):
    `rounds` passes over the set; returns how many were answered."""
    from prometheus_client import CollectorRegistry

    from stt_operator.evaluator.model_io import Target
    from stt_operator.evaluator.replay import ReplayConfig, Replayer, TritonTranscriber
    from stt_operator.speech.evalset import load_evalset

    utterances = load_evalset(evalset)[:UTTERANCES]

    async def run() -> int:
        transcriber = TritonTranscriber(timeout_s=30)
        replayer = Replayer(
            [Target("live", triton_model, server.grpc_url)],
            transcriber,
            endpoint="live-clients",  # not this endpoint's series: only Triton counts these
            config=ReplayConfig(concurrency=4),
            metrics=em.build_eval_metrics(CollectorRegistry()),
        )
        try:
            return sum([len(await replayer.run_round(utterances)) for _ in range(rounds)])
        finally:
            await transcriber.close()

    return asyncio.run(run())


@pytest.fixture
def evaluator_factory(
    kube: Kube,
    operator_prometheus: PrometheusServer,
    variant_servers: dict[str, LocalTriton],
    small_evalset: Path,
    tmp_path: Path,
) -> Iterator[Callable[..., LiveEvaluator]]:
    started: list[LiveEvaluator] = []

    def make(
        namespace: str,
        recognisers: dict[str, str],
        before_replay: Callable[[LiveEvaluator], None] | None = None,
    ) -> LiveEvaluator:
        ev = LiveEvaluator(kube, operator_prometheus, variant_servers, small_evalset, tmp_path)
        started.append(ev)
        return ev.start(namespace, recognisers, before_replay)

    yield make
    for ev in started:
        ev.stop()


# The degraded recogniser serves the control, the baseline the candidate: a better candidate.
BETTER = {"control": DEGRADED_MODEL, "candidate": BASELINE_MODEL}
EQUAL = {"control": BASELINE_MODEL, "candidate": BASELINE_MODEL}


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
    kube.apply(
        abtest(
            namespace,
            duration="3m",
            minDuration="3s",
            promotion={"auto": True},
            stickiness={"enabled": True, "sessionHeader": "x-session-id"},
        )
    )
    watch = Watch(kube, namespace)
    running = watch.until(lambda t: (t.get("status") or {}).get("phase") == "Running" and t, 60, "Running")
    evaluator = evaluator_factory(namespace, BETTER)
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
    # Stickiness on: after the split, one rule per variant matching its session-header buckets.
    route = kube.get(GATEWAY_API_VERSION, "HTTPRoute", route_name(MD), namespace)
    # The endpoint's alias path (/v2/models/<endpoint>) gets the same sticky rules as the plain one.
    sticky = [r for r in route["spec"]["rules"] if "headers" in r["matches"][0]]
    by_path: dict[str, list[str]] = {}
    for rule in sticky:
        by_path.setdefault(rule["matches"][0]["path"]["value"], []).append(rule["backendRefs"][0]["name"])
    assert by_path and len(by_path) <= 2, by_path
    for services in by_path.values():
        assert sorted(services) == sorted(evaluator.services.values()), by_path
    assert {r["matches"][0]["headers"][0]["name"] for r in sticky} == {"x-session-id"}
    done = watch.until(lambda t: t["status"].get("phase") == "Promoted" and t, 180, "winner promoted")
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
    # Real measurements: the paired effect is the recognisers' WER gap, and every sample the
    # decision used was a real request the evaluator sent (and Prometheus scraped).
    assert by_name["control"]["wer"] - by_name["candidate"]["wer"] > 0.05
    assert decision["effect"] == pytest.approx(
        by_name["candidate"]["wer"] - by_name["control"]["wer"], abs=0.02
    )
    sent = evaluator.requests(namespace)
    assert min(sent.values()) >= by_name["candidate"]["samples"], sent
    print(f"A/B verdict on real measurements: {decision}; variants {status['variants']}; requests {sent}")
    # Promotion went through the ModelDeployment: spec.model switched, hold released.
    md = md_of(kube, namespace)
    assert md["spec"]["model"]["name"] == "model-b"
    assert ANNOTATION_HELD_BY not in (md["metadata"].get("annotations") or {})
    wait_reasons(kube, namespace, AB, "TestStarted", "WinnerFound", "WinnerPromoted")
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
    kube.apply(abtest(namespace, (60, 40), duration="100s", minDuration="5s", significanceLevel=0.01))
    watch = Watch(kube, namespace)
    running = watch.until(lambda t: (t.get("status") or {}).get("phase") == "Running" and t, 60, "Running")
    evaluator_factory(namespace, EQUAL)
    watch.until(
        lambda t: watch.split_seen({"model-a": 60, "model-b": 40}), 30, "the 60/40 split in the route"
    )
    # A restarted operator resumes the running test from its status (same start, same split).
    operator.stop()
    operator.start()
    done = watch.until(
        lambda t: t["status"].get("phase") == "Concluded" and t, 150, "concluded at the duration"
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
    wait_reasons(kube, namespace, AB, "DurationReached")


def test_sample_ratio_mismatch_holds_the_decision(operator, kube, namespace, evaluator_factory):
    """The evaluator replays evenly, but live clients reach the control's Triton seven times as
    often as the candidate's under a 50/50 route: Triton's counters (less the replay) are a
    sample-ratio mismatch, and a clearly better candidate is not declared the winner."""
    serve_endpoint(kube, namespace)
    # srmThreshold 0.05: the always-valid test needs a few hundred requests to reach 0.001, more
    # than this machine sends in the test's time. The duration leaves room for a loaded machine.
    kube.apply(
        abtest(namespace, duration="90s", minDuration="2s", promotion={"auto": True}, srmThreshold=0.05)
    )
    watch = Watch(kube, namespace)
    watch.until(lambda t: (t.get("status") or {}).get("phase") == "Running" and t, 60, "Running")

    def skewed_clients(ev: LiveEvaluator) -> None:
        for variant, rounds in (("control", 7), ("candidate", 1)):
            before = ev.servers[variant].metric_by_model("nv_inference_request_success")
            n = send_live(ev.servers[variant], BETTER[variant], ev.evalset, rounds)
            assert n == rounds * UTTERANCES
            total = sum(before.values()) + n
            sel = f"namespace='{namespace}',service='{ev.services[variant]}'"
            ev.prometheus.wait_for(
                f"sum(nv_inference_request_success{{{sel}}})",
                lambda r, total=total: bool(r) and float(r[0]["value"][1]) >= total,
                timeout=30,
            )

    evaluator_factory(namespace, BETTER, before_replay=skewed_clients)
    held = watch.until(
        lambda t: condition(t, "SampleRatioMismatch").get("status") == "True" and t, 80, "sample-ratio alarm"
    )
    status = held["status"]
    assert status["phase"] == "Running" and "winner" not in status
    assert status["sampleRatio"]["detected"] is True and status["sampleRatio"]["pValue"] < 0.05
    message = condition(held, "SampleRatioMismatch")["message"]
    assert "decision held" in message and "live sample ratio mismatch" in message, message
    print(f"live sample-ratio alarm: {status['sampleRatio']}: {message}")
    done = watch.until(lambda t: t["status"].get("phase") == "Concluded" and t, 120, "end of the duration")
    # A clearly better candidate, but the split was broken: no winner, nothing promoted.
    assert "winner" not in done["status"] and done["status"]["decision"]["outcome"] == "Inconclusive"
    wait_reasons(kube, namespace, AB, "SampleRatioMismatch")
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
    assert done["status"]["decision"]["outcome"] == "Stopped"
    wait_reasons(kube, namespace, AB, "StoppedByUser")
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
    kube.apply(
        abtest(namespace, duration="3m", minDuration="3s", promotion={"auto": True, "mode": "Announce"})
    )
    watch = Watch(kube, namespace)
    running = watch.until(lambda t: (t.get("status") or {}).get("phase") == "Running" and t, 60, "Running")
    evaluator_factory(namespace, BETTER)
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
        180,
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
