"""The closed loop on real parts: a rollout decided by real WER, with real client traffic.

On the real node: Triton pods (CPU Triton image) serving the pocketsphinx recogniser, baseline
or degraded (noisy input, narrow beams: really worse); the evaluator Deployment the operator
creates (jobs image) replaying a labelled espeak-ng set to the stable and the canary revision
through their Services; Prometheus run by the Prometheus Operator, scraping the evaluator only
because the chart's workload ServiceMonitor selects its Service. The operator (host process,
configured as a Helm install would be) reads WER from that Prometheus through the Prometheus
source its administrator configured. Nothing synthesises a series or adds a scrape target.

Meanwhile a bounded client sends transcriptions through Traefik (the Gateway the HTTPRoute
names) to `/v2/models/<endpoint>/infer`: none may fail while the route moves, and the route
must never weight a revision without a ready Triton pod (readiness = model ready).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stt_harness import closedloop as cl
from stt_harness.cluster import LocalCluster
from stt_harness.cluster_fixtures import namespace_name, scratch_namespace
from stt_harness.gateway import TraefikGateway
from stt_harness.images import BuiltImage
from stt_harness.kubewait import condition, wait_for, wait_reasons
from stt_harness.operator import OperatorProcess
from stt_harness.promoperator import PrometheusStack
from stt_operator.builders.metadata import LABEL_COMPONENT, LABEL_DEPLOYMENT
from stt_operator.evaluator.manifests import evaluator_name
from stt_operator.services.kube import Kube
from stt_operator.speech.evalset import load_evalset

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BASELINE, DEGRADED, BASELINE_B = "sphinx-base", "sphinx-degraded", "sphinx-base-b"
CTC = "ctc"  # the project's ONNX CTC model (its INT8 twin comes from the quantization Job)
MARGIN = 0.03  # WER points the canary may lose before it fails (non-inferiority)


@pytest.fixture(scope="module")
def loop_operator(
    cluster: LocalCluster,
    node_images: dict[str, BuiltImage],
    prometheus_stack: PrometheusStack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with cl.loop_operator(
        cluster, node_images, prometheus_stack.url, tmp_path_factory.mktemp("loop-operator")
    ) as proc:
        yield proc
        assert proc.process is not None and proc.process.poll() is None, proc.log_tail()


@pytest.fixture
def loop_ns(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    kube_api: Any,
    traefik: TraefikGateway,
    loop_operator: OperatorProcess,
    node_evalset: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    name = namespace_name(f"{cl.NAMESPACE_PREFIX}{request.node.name.removeprefix('test_')}")
    with scratch_namespace(kube_api, name):
        models = tmp_path_factory.mktemp("models")  # the writable claim quantized artifacts go to
        cl.prepare_namespace(cluster, traefik, name, node_evalset, models)
        try:
            yield name
        finally:
            # pytest shows this only for a failed test: what the operator said meanwhile.
            print(f"operator log (last lines):\n{loop_operator.log_tail(80)}")
            cl.delete_volume(cluster, name)


def client(
    traefik: TraefikGateway, evalset: Path, vocabulary: list[str] | None = None, seconds: float = 420
) -> cl.LoadGenerator:
    """A client transcribing the set's shortest utterance every 0.5 s, bounded to `seconds` and
    to as many requests as fit in them (`vocabulary`: it speaks the ONNX CTC model's protocol)."""
    shortest = min(load_evalset(evalset), key=lambda u: u.duration_s)
    return cl.LoadGenerator(
        traefik.url,
        shortest.audio,
        period_s=CLIENT_PERIOD_S,
        max_requests=math.ceil(seconds / CLIENT_PERIOD_S),
        max_seconds=seconds,
        vocabulary=vocabulary,
    )


CLIENT_PERIOD_S = 0.5


def serve_stable(kube: Kube, ns: str, manifest: dict[str, Any], observer: cl.RolloutObserver) -> None:
    kube.apply(manifest)
    observer.until(
        lambda md: (
            (md.get("status") or {}).get("phase") == "Healthy"
            and md["status"].get("stableModel") == manifest["spec"]["model"]["name"]
        ),
        timeout=300,
        what="the first model Healthy (Triton pod Ready on the real node)",
    )


def start_load(load: cl.LoadGenerator) -> None:
    """Start the client once a request through the Gateway is transcribed."""
    deadline = time.monotonic() + 60
    while load.failed(r := load.send()):
        assert time.monotonic() < deadline, f"no transcription through the Gateway: {r}"
        time.sleep(1)
    load.start()


def after_switch(load: cl.LoadGenerator, requests: int = 6, timeout: float = 30) -> None:
    """Keep the client going until it has sent `requests` more on the route now in force."""
    target = len(load.requests) + requests
    wait_for(lambda: len(load.requests) >= target, timeout, "client requests after the last switch")


def reasons(kube: Kube, ns: str) -> list[str]:
    return [
        e["reason"] for e in kube.list("v1", "Event", ns) if e["involvedObject"].get("name") == cl.ENDPOINT
    ]


def settled_rolled_back(kube: Kube, ns: str) -> dict[str, Any]:
    """The status once the rolled-back revision is gone: until its Deployment is deleted the
    phase is Degraded (a revision besides stable still runs), then RolledBack."""

    def rolled_back() -> dict[str, Any] | None:
        status = (kube.get(cl.API, "ModelDeployment", cl.ENDPOINT, ns) or {}).get("status") or {}
        return status if status.get("phase") == "RolledBack" else None

    settled: dict[str, Any] = wait_for(rolled_back, 60, "phase RolledBack, the old revision deleted")
    return settled


@dataclass
class Rollout:
    """What one rollout under client load left: the ModelDeployment when its decision was seen,
    the one whose route names a single revision again, the routes and the client."""

    decided: dict[str, Any]
    final: dict[str, Any]
    observer: cl.RolloutObserver
    load: cl.LoadGenerator
    started_at: float  # epoch seconds of the spec.model change


def roll_out(
    kube: Kube,
    traefik: TraefikGateway,
    evalset: Path,
    manifest: dict[str, Any],
    new_model: str,
    decided: Callable[[dict[str, Any]], Any],
    *,
    timeout: float,
    what: str,
    vocabulary: list[str] | None = None,
) -> Rollout:
    """Serve `manifest`'s model, start the client, change the model to `new_model`, wait for the
    decision and for the route to name one revision again, then let the client send a few more
    requests on that route."""
    ns = manifest["metadata"]["namespace"]
    observer = cl.RolloutObserver(kube, ns)
    serve_stable(kube, ns, manifest, observer)
    # The client outlasts the longest rollout this call allows: the decision, the route on one
    # revision (60 s) and the requests after the switch (30 s), with a minute to spare.
    load = client(traefik, evalset, vocabulary, seconds=timeout + 60 + 30 + 60)
    start_load(load)
    try:
        manifest["spec"]["model"]["name"] = new_model
        kube.apply(manifest)
        started_at = time.time()
        md = observer.until(decided, timeout=timeout, what=what)
        final = observer.until(
            lambda md: len(observer.changes[-1].weights) == 1 and md,
            timeout=60,
            what="the route on one revision again",
        )
        after_switch(load)
    finally:
        load.stop()
    return Rollout(md, final, observer, load, started_at)


def promoted(model: str) -> Callable[[dict[str, Any]], Any]:
    def check(md: dict[str, Any]) -> Any:
        status = md.get("status") or {}
        return status.get("stableModel") == model and status.get("phase") == "Healthy" and md

    return check


def served_through_every_switch(run: Rollout) -> list[dict[str, Any]]:
    """Zero failed client requests on every route the rollout put in place, requests on the
    last one, and never a weighted revision without a ready Triton pod; the per-route rows."""
    rows = cl.switches(run.observer, run.load)
    sent, failed_requests = run.load.counts()
    print(f"client requests {sent}, failed {failed_requests}; per route: {rows}")
    assert sent >= 20
    assert failed_requests == 0, [r for r in run.load.requests if run.load.failed(r)][:5]
    assert rows[-1]["requests"] > 0, rows  # requests on the route the rollout ended with
    assert run.observer.violations == [], run.observer.violations[:5]
    return rows


def analysis_runs(md: dict[str, Any], outcome: str) -> list[dict[str, Any]]:
    return [r for r in md["status"]["analysisRuns"] if r["outcome"] == outcome]


def promoted_at(md: dict[str, Any], model: str) -> float:
    return cl.epoch(next(r for r in md["status"]["revisions"] if r["model"] == model)["promotedAt"])


def record(
    scenario: str, run: Rollout, rows: list[dict[str, Any]], prometheus_url: str, at: float, decided_at: float
) -> None:
    """The scenario's figures for bench/e2e: the decision's delay after the model change, the
    pairs Prometheus had at the analysis that decided (`at`), the WERs compared, the requests."""
    last = (analysis_runs(run.final, "Failed") or analysis_runs(run.final, "Passed"))[-1]
    sent, failed_requests = run.load.counts()
    cl.record(
        scenario,
        {
            "decision_s": round(decided_at - run.started_at, 1),
            "utterances_at_decision": cl.pairs_at(prometheus_url, run.final["metadata"]["namespace"], at),
            "wer_canary": last["value"],
            "wer_stable": last["baseline"],
            "requests": sent,
            "failed": failed_requests,
            "per_route": rows,
        },
    )


def promoted_step_by_step(
    run: Rollout, weights: list[int], scenario: str, prometheus_url: str, model: str = BASELINE_B
) -> None:
    """A healthy rollout of `model`: weighted `weights` in turn, a passed WER analysis (within
    0.05 of the stable) at steps 1 and 3, no rollback, no failed request, some requests while
    both revisions were weighted; its figures recorded for bench/e2e."""
    status = run.decided["status"]
    assert run.observer.candidate_weights(model) == weights, [c.weights for c in run.observer.changes]
    passed = analysis_runs(run.decided, "Passed")
    assert {r["step"] for r in passed} == {1, 3}, status["analysisRuns"]
    assert all(r["metric"] == "wer" and r["value"] <= r["baseline"] + 0.05 for r in passed)
    assert not status.get("lastRollback")
    rows = served_through_every_switch(run)
    assert sum(r["requests"] for r in rows if len(r["route"]) == 2) > 0, rows
    last_pass = max(cl.epoch(r["at"]) for r in passed)
    record(scenario, run, rows, prometheus_url, last_pass, promoted_at(run.decided, model))


def canary_promoted_step_by_step(
    kube: Kube,
    traefik: TraefikGateway,
    evalset: Path,
    ns: str,
    stable: str,
    new: str,
    scenario: str,
    prometheus_url: str,
    vocabulary: list[str] | None = None,
) -> Rollout:
    """Serve `stable`, roll `new` out as a canary (25 %, analysis, 50 %, analysis) under client
    load and check it was promoted step by step (`promoted_step_by_step`)."""
    steps = [{"setWeight": 25}, {"analysis": {}}, {"setWeight": 50}, {"analysis": {}}]
    manifest = cl.canary_endpoint(ns, stable, steps, margin=0.05, min_samples=20)
    run = roll_out(
        kube,
        traefik,
        evalset,
        manifest,
        new,
        promoted(new),
        timeout=480,
        what=f"the canary of {new} promoted",
        vocabulary=vocabulary,
    )
    promoted_step_by_step(run, [0, 25, 50, 100], scenario, prometheus_url, new)
    return run


def test_worse_model_canary_rolls_back_on_real_wer(
    cluster: LocalCluster,
    kube: Kube,
    loop_ns: str,
    traefik: TraefikGateway,
    prometheus_stack: PrometheusStack,
    node_evalset: Path,
    node_images: dict[str, BuiltImage],
) -> None:
    ns = loop_ns
    kube.apply(cl.sphinx_model(BASELINE, ns))
    kube.apply(cl.sphinx_model(DEGRADED, ns, degraded=True))
    manifest = cl.canary_endpoint(
        ns, BASELINE, [{"setWeight": 50}, {"analysis": {}}], margin=MARGIN, min_samples=20
    )
    targets: dict[str, set[str]] = {}  # scrape pool -> every health seen
    evaluator_pods: dict[str, tuple[str, str]] = {}  # pod -> (image, node)

    def rolled_back(md: dict[str, Any]) -> Any:
        for pod in kube.list("v1", "Pod", ns, {LABEL_COMPONENT: "evaluator"}):
            (container,) = pod["spec"]["containers"]
            evaluator_pods[pod["metadata"]["name"]] = (container["image"], pod["spec"].get("nodeName", ""))
        # While the evaluator runs, note how Prometheus scrapes it (the ServiceMonitor's pool).
        with contextlib.suppress(OSError, ValueError):
            for t in prometheus_stack.active_targets():
                labels = t["labels"]
                if labels.get("namespace") == ns and labels.get("service") == evaluator_name(cl.ENDPOINT):
                    targets.setdefault(t["scrapePool"], set()).add(t["health"])
        return (md.get("status") or {}).get("lastRollback") and md

    run = roll_out(
        kube,
        traefik,
        node_evalset,
        manifest,
        DEGRADED,
        rolled_back,
        timeout=360,
        what="the degraded canary rolled back",
    )
    md, status = run.decided, run.final["status"]
    # The analysis failed on WER measured by the evaluator, and the endpoint is back on stable.
    failed = analysis_runs(run.final, "Failed")
    assert failed and failed[-1]["metric"] == "wer", status["analysisRuns"]
    assert failed[-1]["value"] > failed[-1]["baseline"] + MARGIN, failed[-1]
    assert md["status"]["lastRollback"]["toModel"] == BASELINE
    assert "wer" in md["status"]["lastRollback"]["reason"], md["status"]["lastRollback"]
    assert status["stableModel"] == BASELINE and status["phase"] in ("Degraded", "RolledBack"), status
    assert settled_rolled_back(kube, ns)["stableModel"] == BASELINE
    (only,) = run.observer.changes[-1].weights.items()
    assert BASELINE in only[0] and only[1] == 100, run.observer.changes[-1]
    assert run.observer.candidate_weights(DEGRADED) == [0, 50, 0], [c.weights for c in run.observer.changes]
    wait_for(lambda: "RolledBack" in reasons(kube, ns), 30, "the RolledBack event")
    settled = settled_rolled_back(kube, ns)
    assert [(r["model"], r["outcome"]) for r in settled["revisions"]] == [
        (BASELINE, "Serving"),
        (DEGRADED, "RolledBack"),
    ], settled["revisions"]
    conditions = {c["type"]: c["status"] for c in settled["conditions"]}
    assert conditions["Degraded"] == "True" and conditions["Ready"] == "True", settled["conditions"]
    # Not tried again while spec.model stays on the rolled-back model.
    time.sleep(4)
    again = kube.get(cl.API, "ModelDeployment", cl.ENDPOINT, ns)["status"]
    assert again["phase"] == "RolledBack" and not again.get("canaryRevision"), again
    assert reasons(kube, ns).count("RolloutStarted") == 1

    # Zero failed client requests through every switch; the route never weighted an unready pod.
    rows = served_through_every_switch(run)
    assert len(run.load.requests) <= 600
    assert any(r["requests"] > 0 and len(r["route"]) == 2 for r in rows), rows

    # The evaluator that decided ran in the jobs image on the real node (it is gone after the
    # rollback, so its pod is checked through Prometheus' labels); its series carry the
    # namespace the ServiceMonitor's target gives them.
    # last_over_time: once the evaluator's target is gone Prometheus marks its series stale, and
    # an instant query would find nothing; the range keeps the last real sample.
    series = prometheus_stack.query(
        f'last_over_time(stt_eval_pairs_total{{namespace="{ns}",unit="word"}}[15m])'
    )
    assert series, "no stt_eval_pairs_total in the Prometheus Operator's Prometheus"
    labels = series[0]["metric"]
    assert labels["namespace"] == ns and labels["endpoint"] == cl.ENDPOINT and labels["variant"] == "canary"
    assert labels["service"] == evaluator_name(cl.ENDPOINT) and labels["pod"].startswith(
        evaluator_name(cl.ENDPOINT)
    )
    assert evaluator_pods, "no evaluator pod was seen during the rollout"
    assert cluster.real_node is not None
    assert set(evaluator_pods.values()) == {(node_images["jobs"].ref, cluster.real_node.name)}, evaluator_pods
    assert labels["pod"] in evaluator_pods, (labels, evaluator_pods)
    assert targets and all(p.startswith(f"serviceMonitor/{ns}/") for p in targets), targets
    # Seen up while it ran (once the rollback deletes the evaluator its target turns down).
    assert any("up" in seen for seen in targets.values()), targets
    assert float(series[0]["value"][1]) >= 20, series

    decided_at = cl.epoch(md["status"]["lastRollback"]["at"])
    record("canary-degraded-rollback", run, rows, prometheus_stack.url, decided_at, decided_at)


def test_healthy_canary_is_promoted_through_every_step(
    kube: Kube,
    loop_ns: str,
    traefik: TraefikGateway,
    prometheus_stack: PrometheusStack,
    node_evalset: Path,
) -> None:
    ns = loop_ns
    kube.apply(cl.sphinx_model(BASELINE, ns))
    kube.apply(cl.sphinx_model(BASELINE_B, ns))
    run = canary_promoted_step_by_step(
        kube, traefik, node_evalset, ns, BASELINE, BASELINE_B, "canary-healthy-promoted", prometheus_stack.url
    )
    revisions = run.decided["status"]["revisions"]
    assert [(r["model"], r["outcome"]) for r in revisions] == [
        (BASELINE, "Superseded"),
        (BASELINE_B, "Serving"),
    ]
    # Events are posted apart from the status patch and may trail it.
    found = wait_reasons(
        kube, ns, cl.ENDPOINT, "RolloutStarted", "WeightChanged", "AnalysisPassed", "StepAdvanced", "Promoted"
    )
    assert "RolledBack" not in found and found.count("RolloutStarted") == 1, found
    # The old revision and the evaluator go once the canary is promoted (scaleDownDelay 0s).
    promoted_backends = set(run.observer.changes[-1].weights)
    wait_for(
        lambda: (
            {
                d["metadata"]["name"]
                for d in kube.list("apps/v1", "Deployment", ns, {LABEL_DEPLOYMENT: cl.ENDPOINT})
            }
            == promoted_backends
            and kube.get("apps/v1", "Deployment", evaluator_name(cl.ENDPOINT), ns) is None
        ),
        60,
        "only the promoted revision's Deployment left, the evaluator gone",
    )
    assert kube.get("v1", "ConfigMap", evaluator_name(cl.ENDPOINT), ns) is None


BLUE_GREEN = {"type": "BlueGreen", "blueGreen": {"prePromotionAnalysis": True, "scaleDownDelaySeconds": 0}}


def test_blue_green_preview_analysed_on_real_wer_then_switched_at_once(
    kube: Kube,
    loop_ns: str,
    traefik: TraefikGateway,
    prometheus_stack: PrometheusStack,
    node_evalset: Path,
) -> None:
    ns = loop_ns
    kube.apply(cl.sphinx_model(BASELINE, ns))
    kube.apply(cl.sphinx_model(BASELINE_B, ns))
    manifest = cl.analysed_endpoint(ns, BASELINE, BLUE_GREEN, margin=0.05, min_samples=20)
    run = roll_out(
        kube,
        traefik,
        node_evalset,
        manifest,
        BASELINE_B,
        promoted(BASELINE_B),
        timeout=420,
        what="the preview switched",
    )

    status = run.decided["status"]
    # The preview stood at weight 0 while the evaluator measured it, then took everything at once.
    assert run.observer.candidate_weights(BASELINE_B) == [0, 100], [c.weights for c in run.observer.changes]
    passed = analysis_runs(run.decided, "Passed")
    assert passed and all(r["step"] == 0 and r["metric"] == "wer" for r in passed), status["analysisRuns"]
    assert passed[-1]["value"] <= passed[-1]["baseline"] + 0.05, passed[-1]
    assert not status.get("lastRollback")
    rows = served_through_every_switch(run)
    # The analysis passed before the switch: the preview was judged while it served no client.
    switched = promoted_at(run.decided, BASELINE_B)
    assert cl.epoch(passed[-1]["at"]) <= switched, (passed[-1], switched)
    assert status["revisions"][-1]["model"] == BASELINE_B and status["revisions"][-1]["outcome"] == "Serving"
    wait_reasons(kube, ns, cl.ENDPOINT, "PreviewReady", "AnalysisPassed", "Promoted")

    record(
        "bluegreen-preview-analysed-switched",
        run,
        rows,
        prometheus_stack.url,
        cl.epoch(passed[-1]["at"]),
        switched,
    )


def test_blue_green_worse_preview_never_gets_traffic(
    kube: Kube,
    loop_ns: str,
    traefik: TraefikGateway,
    prometheus_stack: PrometheusStack,
    node_evalset: Path,
) -> None:
    ns = loop_ns
    kube.apply(cl.sphinx_model(BASELINE, ns))
    kube.apply(cl.sphinx_model(DEGRADED, ns, degraded=True))
    manifest = cl.analysed_endpoint(ns, BASELINE, BLUE_GREEN, margin=MARGIN, min_samples=20)
    run = roll_out(
        kube,
        traefik,
        node_evalset,
        manifest,
        DEGRADED,
        lambda md: (md.get("status") or {}).get("lastRollback") and md,
        timeout=360,
        what="the degraded preview rejected",
    )

    status = run.final["status"]
    failed = analysis_runs(run.final, "Failed")
    assert failed and failed[-1]["metric"] == "wer" and failed[-1]["step"] == 0, status["analysisRuns"]
    assert failed[-1]["value"] > failed[-1]["baseline"] + MARGIN, failed[-1]
    assert status["stableModel"] == BASELINE and status["phase"] in ("Degraded", "RolledBack"), status
    assert settled_rolled_back(kube, ns)["stableModel"] == BASELINE
    assert run.decided["status"]["lastRollback"]["toModel"] == BASELINE
    # The degraded preview was listed at weight 0 and never weighted: no client request reached it.
    assert run.observer.candidate_weights(DEGRADED) == [0], [c.weights for c in run.observer.changes]
    rows = served_through_every_switch(run)
    wait_for(lambda: "RolledBack" in reasons(kube, ns), 30, "the RolledBack event")

    decided_at = cl.epoch(run.decided["status"]["lastRollback"]["at"])
    record("bluegreen-degraded-preview-rejected", run, rows, prometheus_stack.url, decided_at, decided_at)


def test_gradual_steps_analysed_on_real_wer_then_promoted(
    kube: Kube,
    loop_ns: str,
    traefik: TraefikGateway,
    prometheus_stack: PrometheusStack,
    node_evalset: Path,
) -> None:
    ns = loop_ns
    kube.apply(cl.sphinx_model(BASELINE, ns))
    kube.apply(cl.sphinx_model(BASELINE_B, ns))
    strategy = {"type": "Gradual", "gradual": {"stepWeight": 50, "interval": "5s"}}
    manifest = cl.analysed_endpoint(ns, BASELINE, strategy, margin=0.05, min_samples=20)
    run = roll_out(
        kube,
        traefik,
        node_evalset,
        manifest,
        BASELINE_B,
        promoted(BASELINE_B),
        timeout=420,
        what="the gradual rollout promoted",
    )

    # stepWeight 50: 50 % then 100 %, each step held for an analysis of real WER.
    promoted_step_by_step(run, [0, 50, 100], "gradual-healthy-promoted", prometheus_stack.url)


@pytest.mark.timeout(1200)
def test_int8_canary_made_by_the_quantization_job_is_promoted(
    kube: Kube,
    loop_ns: str,
    traefik: TraefikGateway,
    prometheus_stack: PrometheusStack,
    node_evalset: Path,
) -> None:
    """The project's ONNX CTC model, validated by its Job on the real node, quantized to dynamic
    INT8 by the quantization Job (WER-gated on the labelled set, published to the `models`
    claim); the derived STTModel it becomes goes out as a canary, judged on real WER by the
    evaluator replaying the set to both revisions, and is promoted through every step."""
    ns = loop_ns
    kube.apply(cl.ctc_model(CTC, ns, quantize_to="ctc-int8.onnx"))
    verdict = wait_for(
        lambda: (
            (m := kube.get(cl.API, "STTModel", CTC, ns))
            and (
                (m.get("status") or {}).get("quantizedModel")
                or condition(m, "Quantized").get("status") == "False"
                or condition(m, "Validated").get("status") == "False"
            )
            and m
        ),
        600,
        "the float model validated and quantized by its Jobs",
    )
    status = verdict["status"]
    assert condition(verdict, "Validated")["status"] == "True", condition(verdict, "Validated")
    assert condition(verdict, "Quantized")["status"] == "True", condition(verdict, "Quantized")
    quantization = status["quantization"]
    derived_name = status["quantizedModel"]
    assert derived_name == f"{CTC}-int8"
    derived = kube.get(cl.API, "STTModel", derived_name, ns)
    assert (
        derived is not None and derived["spec"]["source"]["uri"] == f"pvc://{cl.MODELS_CLAIM}/ctc-int8.onnx"
    )
    assert derived["spec"]["source"]["sha256"] == quantization["outputDigest"], (
        derived["spec"],
        quantization,
    )
    print(f"quantization: {quantization}")

    canary_promoted_step_by_step(
        kube,
        traefik,
        node_evalset,
        ns,
        CTC,
        derived_name,
        "canary-int8-promoted",
        prometheus_stack.url,
        vocabulary=cl.ctc_vocabulary(),
    )


def monitored_endpoint(ns: str, model: str) -> dict[str, Any]:
    """An Immediate endpoint whose served revision is checked after promotion: at most 5 % of
    requests may fail; a breach rolls back to the previous good revision."""
    return {
        "apiVersion": cl.API,
        "kind": "ModelDeployment",
        "metadata": {"name": cl.ENDPOINT, "namespace": ns},
        "spec": {
            "model": {"name": model},
            "replicas": 1,
            "strategy": {"type": "Immediate"},
            "scaleDownDelay": "0s",
            "endpoint": {"gatewayRef": {"name": "stt-gateway"}, "hostnames": [cl.HOST]},
            "monitoring": {
                "interval": "20s",
                "prometheus": {"source": cl.PROMETHEUS_SOURCE},
                "metrics": [{"name": "errors", "preset": "error-rate", "thresholdRange": {"max": 0.05}}],
                "minSamples": 20,
                "maxFalseAlarmsPerDay": 1,
                "rollback": True,
            },
        },
    }


def test_a_promoted_model_that_starts_failing_is_rolled_back_by_monitoring(
    kube: Kube,
    loop_ns: str,
    traefik: TraefikGateway,
    node_evalset: Path,
) -> None:
    """After promotion nobody else watches: the operator's monitoring reads Triton's request
    counters of the served revision from Prometheus every interval. A healthy model passes its
    looks; a model that fails half its requests (the recogniser's fault knob) is judged over
    its SLO and rolled back to the last good revision, and the client's requests succeed again."""
    ns = loop_ns
    faulty = "sphinx-faulty"
    kube.apply(cl.sphinx_model(BASELINE, ns))
    kube.apply(cl.sphinx_model(faulty, ns, parameters={"fault_error_fraction": "0.5"}))
    manifest = monitored_endpoint(ns, BASELINE)
    observer = cl.RolloutObserver(kube, ns)
    serve_stable(kube, ns, manifest, observer)
    load = client(traefik, node_evalset)
    start_load(load)
    try:
        # The healthy model: its looks pass (condition Monitoring True, WithinSLO).
        observer.until(
            lambda md: condition(md, "Monitoring").get("reason") == "WithinSLO" and md,
            timeout=180,
            what="a passed monitoring look on the healthy model",
        )
        healthy = observer.last["status"]["monitoring"]
        assert healthy["lastOutcome"] == "Passed" and healthy.get("verdict") != "Degraded", healthy

        manifest["spec"]["model"]["name"] = faulty
        kube.apply(manifest)
        switched_at = time.monotonic()
        observer.until(promoted(faulty), timeout=300, what="the faulty model promoted (Immediate)")
        md = observer.until(
            lambda md: (
                ((md.get("status") or {}).get("lastRollback") or {}).get("code") == "MonitoringRollback"
                and md
            ),
            timeout=300,
            what="the monitoring rollback",
        )
        detected_s = time.monotonic() - switched_at
        back = observer.until(
            lambda md: md["spec"]["model"]["name"] == BASELINE and promoted(BASELINE)(md),
            timeout=300,
            what="the previous good model serving again",
        )
        after_switch(load, requests=10, timeout=60)
    finally:
        load.stop()

    status = md["status"]
    assert status["lastRollback"]["fromModel"] == faulty and status["lastRollback"]["toModel"] == BASELINE
    looks = status["monitoring"].get("metrics", [])
    print(f"monitoring at the verdict: {status['monitoring']}; detected after {detected_s:.0f}s")
    assert status["monitoring"]["verdict"] == "Degraded", status["monitoring"]
    breached = [m for m in looks if m.get("outcome") == "Breached"]
    assert breached and all(m["observed"] > 0.05 for m in breached), looks
    # The rollback went back to the previous revision's model (a new history entry serving it);
    # the faulty revision has one entry, RolledBack.
    history = back["status"]["revisions"]
    assert history[-1]["model"] == BASELINE and history[-1]["outcome"] == "Serving", history
    assert [r["outcome"] for r in history if r["model"] == faulty] == ["RolledBack"], history
    wait_for(
        lambda: {"SLOBreached", "MonitoringRollback"} <= set(reasons(kube, ns)),
        30,
        "the SLOBreached and MonitoringRollback events",
    )
    # The route never weighted a revision without a ready Triton pod, and once the good model
    # serves again the client's requests succeed.
    assert observer.violations == [], observer.violations[:5]
    last_route_start = observer.changes[-1].t
    sent, failed_requests = load.counts(last_route_start + 2)
    assert sent >= 5 and failed_requests == 0, (sent, failed_requests)
    total, failures = load.counts()
    print(f"client requests {total}, failed {failures} (the faulty model's injected errors)")
    assert failures > 0  # the faulty model really failed requests while it served
    cl.record(
        "monitoring-rollback-after-promotion",
        {
            "detection_s": round(detected_s, 1),
            "looks": status["monitoring"].get("looks"),
            "error_rate_at_verdict": breached[-1]["observed"],
            "requests_at_verdict": breached[-1]["trials"],
            "requests": total,
            "failed": failures,
            "per_route": cl.switches(observer, load),
        },
    )
