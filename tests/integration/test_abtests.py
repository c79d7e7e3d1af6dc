"""A/B tests end to end, everything the operator creates running on the real node.

The real operator process (configured as a Helm install would be: images, placement on the real
node, the Prometheus it reads) against a real kube-apiserver. The endpoint's stable revision and
the test's candidate variant are Triton pods from the CPU Triton image serving the pocketsphinx
recogniser (baseline, or degraded: noisy input and narrow beams, really worse). The evaluator is
the Deployment the operator creates (jobs image), replaying the labelled set from its claim to
both variants' Services. Prometheus, run by the Prometheus Operator, scrapes the evaluator's
`stt_eval_*` series and each Triton's `nv_inference_*` counters through the chart's workload
ServiceMonitor (so they carry the `namespace` and `service` labels the operator selects arms by).
Nothing synthesises a series or adds a scrape target.

The verdicts come from the operator's own queries over those real measurements: with the
degraded recogniser as control and the baseline as candidate, the candidate wins and is promoted
through the ModelDeployment; the same recogniser on both ends ends NoDifference at the duration;
clients that reach the control's Triton pod seven times as often as the candidate's under a
50/50 route are a sample-ratio mismatch that holds the decision. The route carries the split
while the test runs, with the sticky-session rules when stickiness is on, and goes back to the
endpoint's stable revision afterwards, never naming a backend that was not Available."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from stt_harness import closedloop as cl
from stt_harness.argocd import ArgoCD, Customizations, capture, merge_patch, render_customizations
from stt_harness.cluster import ensure_tools
from stt_harness.faults import IMMEDIATE, SERVE_TIMEOUT_S, endpoint_manifest
from stt_harness.kubewait import condition, event_reasons, wait_for, wait_reasons
from stt_harness.promoperator import PrometheusStack
from stt_harness.resources import API
from stt_harness.routewatch import RouteWatch
from stt_operator import evalmetrics as em
from stt_operator import kubectl_plugin
from stt_operator.builders.routing import GATEWAY_API_VERSION, route_name, route_weights
from stt_operator.evaluator.cli import target_from_mapping
from stt_operator.experiments.objects import LABEL_ABTEST
from stt_operator.rollout.transitions import ANNOTATION_HELD_BY
from stt_operator.services.kube import Kube
from stt_operator.triton.pod import TRITON_GRPC_PORT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MD = "asr"
AB = "ab"
MODELS = {"control": "model-a", "candidate": "model-b"}
UTTERANCES = 16  # per round of the live clients
# Real Triton pods on a 2-core node shared with Prometheus and the evaluator: a variant's pod
# takes tens of seconds to be Ready, more under load.
START_TIMEOUT_S = 240.0


@pytest.fixture
def namespace(node_namespace: str) -> str:
    return node_namespace


def split_services(kube: Kube, namespace: str) -> dict[str, str]:
    """variant -> the Service the split route names for it, once the route carries the split."""
    weights = wait_for(
        lambda: (
            len(w := route_weights(kube.get(GATEWAY_API_VERSION, "HTTPRoute", route_name(MD), namespace)))
            == 2
            and w
        ),
        timeout=START_TIMEOUT_S,
        what="the split route",
    )
    return {v: next(s for s in weights if m in s) for v, m in MODELS.items()}


def replayed(prometheus: PrometheusStack, namespace: str) -> dict[str, float]:
    """The evaluator's request counter per variant, as Prometheus scraped it."""
    q = f"sum by (variant) ({em.REQUESTS}{{namespace='{namespace}',endpoint='{MD}'}})"
    return {r["metric"]["variant"]: float(r["value"][1]) for r in prometheus.query(q)}


def triton_successes(prometheus: PrometheusStack, namespace: str, service: str) -> float:
    q = f"sum(nv_inference_request_success{{namespace='{namespace}',service='{service}'}})"
    result = prometheus.query(q)
    return float(result[0]["value"][1]) if result else 0.0


def evaluator_config(kube: Kube, namespace: str) -> dict[str, Any]:
    """The config file the operator wrote for the A/B test's evaluator (its ConfigMap)."""
    cm = wait_for(
        lambda: kube.list("v1", "ConfigMap", namespace, {LABEL_ABTEST: AB}),
        timeout=60,
        what="evaluator config",
    )
    return dict(yaml.safe_load(cm[0]["data"]["config.yaml"]))


def pod_address(kube: Kube, namespace: str, service: str) -> str:
    """host:port of the gRPC port of a ready pod behind `service` (the pod network is this
    machine's bridge, so the test reaches it as a client in the cluster would)."""

    def ready_ip() -> str | None:
        for slice_ in kube.list(
            "discovery.k8s.io/v1", "EndpointSlice", namespace, {"kubernetes.io/service-name": service}
        ):
            for endpoint in slice_.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") and endpoint.get("addresses"):
                    return str(endpoint["addresses"][0])
        return None

    ip = wait_for(ready_ip, timeout=60, what=f"a ready pod behind {service}")
    return f"{ip}:{TRITON_GRPC_PORT}"


def send_live(kube: Kube, namespace: str, variant: str, evalset: Path, rounds: int) -> int:
    """Client requests straight to one variant's Triton pod (what a broken split would send
    it), speaking the model's protocol as the evaluator's target for it does: `rounds` passes
    over the set; returns how many were answered."""
    from dataclasses import replace

    from prometheus_client import CollectorRegistry

    from stt_operator.evaluator.replay import ReplayConfig, Replayer, TritonTranscriber
    from stt_operator.speech.evalset import load_evalset

    (mapping,) = [t for t in evaluator_config(kube, namespace)["targets"] if t["variant"] == variant]
    target = target_from_mapping(mapping, f"target {variant}")
    service = target.url.rpartition(":")[0].split(".")[0]  # <service>[.<namespace>...]:<port>
    target = replace(target, variant="live", url=pod_address(kube, namespace, service))
    utterances = load_evalset(evalset)[:UTTERANCES]

    async def run() -> int:
        transcriber = TritonTranscriber(timeout_s=30)
        replayer = Replayer(
            [target],
            transcriber,
            endpoint="live-clients",  # not this endpoint's series: only Triton counts these
            config=ReplayConfig(concurrency=2),
            metrics=em.build_eval_metrics(CollectorRegistry()),
        )
        try:
            return sum([len(await replayer.run_round(utterances)) for _ in range(rounds)])
        finally:
            await transcriber.close()

    return asyncio.run(run())


# The degraded recogniser serves the control, the baseline the candidate: a better candidate.
BETTER = {"control": True, "candidate": False}  # variant -> degraded recogniser
EQUAL = {"control": False, "candidate": False}


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

    def running(self) -> dict[str, Any]:
        return self.until(
            lambda t: (t.get("status") or {}).get("phase") == "Running" and t, START_TIMEOUT_S, "Running"
        )


def serve_endpoint(kube: Kube, namespace: str, degraded: dict[str, bool], *, evaluate: bool = True) -> None:
    """model-a serves the endpoint (a Triton pod on the real node); model-b is a Ready catalogue
    entry. `degraded`: which variant's model is the worse recogniser. With `evaluate` model-a
    names the labelled set on the claim, so an A/B test on it gets an evaluator."""
    for variant, model in MODELS.items():
        manifest = cl.sphinx_model(model, namespace, degraded=degraded[variant])
        if not evaluate:
            del manifest["spec"]["validation"]["evaluationSet"]
        kube.apply(manifest)
    kube.apply(endpoint_manifest(namespace, IMMEDIATE))
    wait_for(
        lambda: (
            ((kube.get(API, "ModelDeployment", MD, namespace) or {}).get("status") or {}).get("phase")
            == "Healthy"
        ),
        timeout=SERVE_TIMEOUT_S,
        what="model-a serving the endpoint",
    )


def abtest(
    namespace: str, weights: tuple[int, int] = (50, 50), min_samples: int = 30, **spec: Any
) -> dict[str, Any]:
    """The A/B test of model-a (control) against model-b on the endpoint. The evaluator pod
    scores about a third of a pair a second on the shared 2-core node: 30 pairs take ~1.5 min."""
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
            "primaryMetric": {
                "name": "wer",
                "preset": "wer",
                "maxRelativeIncrease": 0.05,
                "minSamples": min_samples,
            },
            "minSamplesPerVariant": min_samples,
            **spec,
        },
    }


def md_of(kube: Kube, namespace: str) -> dict[str, Any]:
    return kube.get(API, "ModelDeployment", MD, namespace) or {}


def test_better_candidate_wins_and_is_promoted(kube, namespace, prometheus_stack):
    serve_endpoint(kube, namespace, BETTER)
    kube.apply(
        abtest(
            namespace,
            duration="4m",
            minDuration="3s",
            promotion={"auto": True},
            stickiness={"enabled": True, "sessionHeader": "x-session-id"},
        )
    )
    watch = Watch(kube, namespace)
    running = watch.running()
    assert md_of(kube, namespace)["metadata"]["annotations"][ANNOTATION_HELD_BY] == AB
    # The ModelDeployment reports the hold (and leaves the route alone meanwhile).
    wait_for(lambda: md_of(kube, namespace)["status"].get("heldBy") == AB, timeout=10, what="status.heldBy")
    assert condition(running, "Running")["status"] == "True"
    assert running["status"]["variantSummary"] == "control=50% candidate=50%"
    # The evaluator replays to both variants: the endpoint's stable revision and the test's own.
    config = evaluator_config(kube, namespace)
    assert [t["variant"] for t in config["targets"]] == ["control", "candidate"]
    assert config["endpoint"] == MD and config["baseline"] == "control"
    services = split_services(kube, namespace)
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
    for names in by_path.values():
        assert sorted(names) == sorted(services.values()), by_path
    assert {r["matches"][0]["headers"][0]["name"] for r in sticky} == {"x-session-id"}
    done = watch.until(lambda t: t["status"].get("phase") == "Promoted" and t, 300, "winner promoted")
    status = done["status"]
    assert status["winner"] == "candidate"
    decision = status["decision"]
    assert decision["outcome"] == "Winner" and decision["metric"] == "wer"
    assert decision["pValue"] < 0.05 and decision["effect"] < 0
    assert decision["confidenceInterval"]["upper"] < 0 and decision["confidenceInterval"]["level"] == 0.95
    by_name = {v["name"]: v for v in status["variants"]}
    assert by_name["candidate"]["wer"] < by_name["control"]["wer"]
    assert by_name["candidate"]["samples"] >= 30 and by_name["control"]["samples"] >= 30
    assert condition(done, "Concluded")["status"] == "True" and status["sampleRatio"]["detected"] is False
    # Real measurements: the paired effect is the recognisers' WER gap, and every sample the
    # decision used was a real request the evaluator pod sent (and Prometheus scraped).
    assert by_name["control"]["wer"] - by_name["candidate"]["wer"] > 0.05
    assert decision["effect"] == pytest.approx(
        by_name["candidate"]["wer"] - by_name["control"]["wer"], abs=0.02
    )
    sent = replayed(prometheus_stack, namespace)
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
        60,
        "variants removed",
    )
    wait_for(
        lambda: (md_of(kube, namespace).get("status") or {}).get("stableModel") == "model-b",
        timeout=SERVE_TIMEOUT_S,
        what="the endpoint serving the winner",
    )


def test_equal_variants_end_with_no_difference_and_route_goes_back(node_operator, kube, namespace):
    serve_endpoint(kube, namespace, EQUAL)
    # 30 pairs within the duration, with room for a loaded machine.
    kube.apply(abtest(namespace, (60, 40), duration="240s", minDuration="5s", significanceLevel=0.01))
    watch = Watch(kube, namespace)
    running = watch.running()
    watch.until(
        lambda t: watch.split_seen({"model-a": 60, "model-b": 40}),
        START_TIMEOUT_S,
        "the 60/40 split in the route",
    )
    # A restarted operator resumes the running test from its status (same start, same split).
    node_operator.stop()
    node_operator.start()
    done = watch.until(
        lambda t: t["status"].get("phase") == "Concluded" and t, 360, "concluded at the duration"
    )
    status = done["status"]
    assert "winner" not in status
    assert status["decision"]["outcome"] == "NoDifference", status["decision"]
    assert condition(done, "Concluded")["reason"] == "DurationReached"
    assert "alpha=0.01" in status["decision"]["reason"]
    assert all(v["samples"] >= 30 for v in status["variants"])
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
        60,
        "variants removed",
    )
    wait_reasons(kube, namespace, AB, "DurationReached")


def test_sample_ratio_mismatch_holds_the_decision(kube, namespace, prometheus_stack, node_evalset):
    """The evaluator replays evenly, but live clients reach the control's Triton pod seven times
    as often as the candidate's under a 50/50 route: Triton's counters (less the replay) are a
    sample-ratio mismatch, and a clearly better candidate is not declared the winner."""
    serve_endpoint(kube, namespace, BETTER)
    # srmThreshold 0.05: the always-valid test needs a few hundred requests to reach 0.001, more
    # than this machine sends in the test's time. minDuration: no decision before the skewed
    # clients' requests are scraped, and 50 pairs (not the default 30) keep the sequential test
    # from deciding before the skew is in; the duration leaves room for a loaded machine.
    kube.apply(
        abtest(
            namespace,
            min_samples=50,
            duration="150s",
            minDuration="75s",
            promotion={"auto": True},
            srmThreshold=0.05,
        )
    )
    watch = Watch(kube, namespace)
    watch.running()
    services = split_services(kube, namespace)
    for variant, rounds in (("control", 7), ("candidate", 1)):
        before = triton_successes(prometheus_stack, namespace, services[variant])
        n = send_live(kube, namespace, variant, node_evalset, rounds)
        assert n == rounds * UTTERANCES
        prometheus_stack.wait_for(
            lambda v=variant, total=before + n: (
                triton_successes(prometheus_stack, namespace, services[v]) >= total
            ),
            f"{n} live requests to {variant} scraped",
            timeout=60,
        )
    held = watch.until(
        lambda t: condition(t, "SampleRatioMismatch").get("status") == "True" and t, 120, "sample-ratio alarm"
    )
    status = held["status"]
    assert status["phase"] == "Running" and "winner" not in status
    assert status["sampleRatio"]["detected"] is True and status["sampleRatio"]["pValue"] < 0.05
    message = condition(held, "SampleRatioMismatch")["message"]
    assert "decision held" in message and "live sample ratio mismatch" in message, message
    print(f"live sample-ratio alarm: {status['sampleRatio']}: {message}")
    done = watch.until(lambda t: t["status"].get("phase") == "Concluded" and t, 240, "end of the duration")
    # A clearly better candidate, but the split was broken: no winner, nothing promoted.
    assert "winner" not in done["status"] and done["status"]["decision"]["outcome"] == "Inconclusive"
    wait_reasons(kube, namespace, AB, "SampleRatioMismatch")
    wait_for(
        lambda: ANNOTATION_HELD_BY not in (md_of(kube, namespace)["metadata"].get("annotations") or {}),
        timeout=20,
        what="hold released",
    )
    assert md_of(kube, namespace)["spec"]["model"]["name"] == "model-a"


def test_no_data_pauses_then_a_person_stops_the_test(kube, namespace):
    """No labelled set, so no evaluator: the variants serve, but no series ever arrives."""
    serve_endpoint(kube, namespace, EQUAL, evaluate=False)
    manifest = abtest(namespace, duration="10m", promotion={"auto": True})
    kube.apply(manifest)
    watch = Watch(kube, namespace)
    paused = watch.until(
        lambda t: condition(t, "Paused").get("status") == "True" and t, START_TIMEOUT_S, "paused on no data"
    )
    assert (
        condition(paused, "Paused")["reason"] == "NoData"
        and "no series" in condition(paused, "Paused")["message"]
    )
    assert paused["status"]["phase"] == "Running" and "winner" not in paused["status"]
    assert not kube.list("v1", "ConfigMap", namespace, {LABEL_ABTEST: AB})  # no evaluator config
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


def test_gitops_winner_is_announced_not_written(kube, kubeconfig, namespace, argocd, capsys):
    """promotion.mode Announce: the spec Git owns is never written; the winner and the change to
    make are in status and an Event, `kubectl stt promotion` prints it, and applying that change
    (as a Git sync would) rolls the winner out. Argo CD's health follows each phase."""
    serve_endpoint(kube, namespace, BETTER)
    kube.apply(
        abtest(namespace, duration="4m", minDuration="3s", promotion={"auto": True, "mode": "Announce"})
    )
    watch = Watch(kube, namespace)
    running = watch.running()
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
        300,
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
        timeout=SERVE_TIMEOUT_S,
        what="the endpoint serving the winner after the Git change",
    )


def test_argocd_abort_action_stops_a_running_test(kube, namespace, argocd):
    serve_endpoint(kube, namespace, EQUAL)
    kube.apply(abtest(namespace, duration="10m"))
    watch = Watch(kube, namespace)
    running = watch.running()
    patch = merge_patch(running, argocd.act(running, "abort"))
    assert patch == {"spec": {"stop": True}}
    kube.dynamic.resources.get(api_version=API, kind="ABTest").patch(
        body=patch, name=AB, namespace=namespace, content_type="application/merge-patch+json"
    )
    stopped = watch.until(lambda t: t["status"].get("phase") == "Stopped" and t, 30, "stopped")
    capture("abtest-stopped", stopped)
    assert argocd.health(stopped)["status"] == "Healthy" and argocd.discover(stopped) == {"abort": False}
