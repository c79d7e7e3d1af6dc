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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stt_harness import closedloop as cl
from stt_harness.cluster import LocalCluster
from stt_harness.cluster_fixtures import namespace_name, scratch_namespace
from stt_harness.gateway import TraefikGateway
from stt_harness.images import BuiltImage, build_images
from stt_harness.kubewait import wait_for
from stt_harness.operator import OperatorProcess
from stt_harness.promoperator import PrometheusStack
from stt_operator.builders.common import LABEL_COMPONENT
from stt_operator.evaluator.manifests import evaluator_name
from stt_operator.services.kube import Kube
from stt_operator.speech.evalset import load_evalset

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BASELINE, DEGRADED, BASELINE_B = "sphinx-base", "sphinx-degraded", "sphinx-base-b"
MARGIN = 0.03  # WER points the canary may lose before it fails (non-inferiority)


@pytest.fixture(scope="module")
def loop_images(cluster: LocalCluster) -> dict[str, BuiltImage]:
    """Build (or reuse) the images and import them into the real node's containerd."""
    assert cluster.real_node is not None
    built = build_images()
    present = set(cluster.real_node.images())
    for image in built.values():
        if image.ref not in present:
            cluster.real_node.import_image(image.archive)
    return built


@pytest.fixture(scope="module")
def loop_operator(
    cluster: LocalCluster,
    loop_images: dict[str, BuiltImage],
    prometheus_stack: PrometheusStack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with cl.loop_operator(
        cluster, loop_images, prometheus_stack.url, tmp_path_factory.mktemp("loop-operator")
    ) as proc:
        yield proc
        assert proc.process is not None and proc.process.poll() is None, proc.log_tail()


@pytest.fixture(scope="module")
def loop_evalset(small_evalset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cl.readable_copy(small_evalset, tmp_path_factory.mktemp("loop-evalset"))


@pytest.fixture
def loop_ns(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    kube_api: Any,
    traefik: TraefikGateway,
    loop_operator: OperatorProcess,
    loop_evalset: Path,
) -> Iterator[str]:
    name = namespace_name(f"{cl.NAMESPACE_PREFIX}{request.node.name.removeprefix('test_')}")
    with scratch_namespace(kube_api, name):
        cl.prepare_namespace(cluster, traefik, name, loop_evalset)
        try:
            yield name
        finally:
            cl.delete_volume(cluster, name)


def client(traefik: TraefikGateway, evalset: Path) -> cl.LoadGenerator:
    """A client transcribing the set's shortest utterance: bounded to 600 requests / 420 s."""
    shortest = min(load_evalset(evalset), key=lambda u: u.duration_s)
    return cl.LoadGenerator(traefik.url, shortest.audio, period_s=0.5, max_requests=600, max_seconds=420)


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


def test_worse_model_canary_rolls_back_on_real_wer(
    cluster: LocalCluster,
    kube: Kube,
    loop_ns: str,
    traefik: TraefikGateway,
    prometheus_stack: PrometheusStack,
    loop_evalset: Path,
    loop_images: dict[str, BuiltImage],
) -> None:
    ns = loop_ns
    kube.apply(cl.sphinx_model(BASELINE, ns))
    kube.apply(cl.sphinx_model(DEGRADED, ns, degraded=True))
    manifest = cl.canary_endpoint(
        ns, BASELINE, [{"setWeight": 50}, {"analysis": {}}], margin=MARGIN, min_samples=20
    )
    observer = cl.RolloutObserver(kube, ns)
    serve_stable(kube, ns, manifest, observer)
    load = client(traefik, loop_evalset)
    start_load(load)
    try:
        manifest["spec"]["model"]["name"] = DEGRADED
        kube.apply(manifest)
        switched_at = time.time()
        targets: dict[str, str] = {}
        evaluator_pods: dict[str, tuple[str, str]] = {}  # pod -> (image, node)

        def rolled_back(md: dict[str, Any]) -> Any:
            for pod in kube.list("v1", "Pod", ns, {LABEL_COMPONENT: "evaluator"}):
                (container,) = pod["spec"]["containers"]
                evaluator_pods[pod["metadata"]["name"]] = (
                    container["image"],
                    pod["spec"].get("nodeName", ""),
                )
            # While the evaluator runs, note how Prometheus scrapes it (the ServiceMonitor's pool).
            with contextlib.suppress(OSError, ValueError):
                for t in prometheus_stack.active_targets():
                    labels = t["labels"]
                    if labels.get("namespace") == ns and labels.get("service") == evaluator_name(cl.ENDPOINT):
                        targets[t["scrapePool"]] = t["health"]
            return (md.get("status") or {}).get("lastRollback") and md

        md = observer.until(rolled_back, timeout=360, what="the degraded canary rolled back")
        final = observer.until(
            lambda md: len(observer.changes[-1].weights) == 1 and md,
            timeout=60,
            what="the route back on the stable revision alone",
        )
        after_switch(load)
        sent_before_stop = len(load.requests)
    finally:
        load.stop()

    status = final["status"]
    # The analysis failed on WER measured by the evaluator, and the endpoint is back on stable.
    failed = [r for r in status["analysisRuns"] if r["outcome"] == "Failed"]
    assert failed and failed[-1]["metric"] == "wer", status["analysisRuns"]
    assert failed[-1]["value"] > failed[-1]["baseline"] + MARGIN, failed[-1]
    assert md["status"]["lastRollback"]["toModel"] == BASELINE
    assert "wer" in md["status"]["lastRollback"]["reason"], md["status"]["lastRollback"]
    assert status["stableModel"] == BASELINE and status["phase"] == "RolledBack", status
    (only,) = observer.changes[-1].weights.items()
    assert BASELINE in only[0] and only[1] == 100, observer.changes[-1]
    assert observer.candidate_weights(DEGRADED) == [0, 50, 0], [c.weights for c in observer.changes]
    wait_for(lambda: "RolledBack" in reasons(kube, ns), 30, "the RolledBack event")

    # Zero failed client requests through every switch; the route never weighted an unready pod.
    rows = cl.switches(observer, load)
    sent, failed_requests = load.counts()
    print(f"client requests {sent}, failed {failed_requests}; per route: {rows}")
    assert sent >= 20 and sent_before_stop <= 600
    assert failed_requests == 0, [r for r in load.requests if load.failed(r)][:5]
    assert any(r["requests"] > 0 and len(r["route"]) == 2 for r in rows), rows
    assert rows[-1]["requests"] > 0, rows  # requests after the rollback, on stable alone
    assert observer.violations == [], observer.violations[:5]

    # The evaluator that decided ran in the jobs image on the real node (it is gone after the
    # rollback, so its pod is checked through Prometheus' labels); its series carry the
    # namespace the ServiceMonitor's target gives them.
    series = prometheus_stack.query(f'stt_eval_pairs_total{{namespace="{ns}",unit="word"}}')
    assert series, "no stt_eval_pairs_total in the Prometheus Operator's Prometheus"
    labels = series[0]["metric"]
    assert labels["namespace"] == ns and labels["endpoint"] == cl.ENDPOINT and labels["variant"] == "canary"
    assert labels["service"] == evaluator_name(cl.ENDPOINT) and labels["pod"].startswith(
        evaluator_name(cl.ENDPOINT)
    )
    assert evaluator_pods, "no evaluator pod was seen during the rollout"
    assert cluster.real_node is not None
    assert set(evaluator_pods.values()) == {(loop_images["jobs"].ref, cluster.real_node.name)}, evaluator_pods
    assert labels["pod"] in evaluator_pods, (labels, evaluator_pods)
    assert targets and all(p.startswith(f"serviceMonitor/{ns}/") for p in targets), targets
    assert "up" in targets.values(), targets
    pairs = float(series[0]["value"][1])
    assert pairs >= 20, series

    decided_at = cl.epoch(md["status"]["lastRollback"]["at"])
    cl.record(
        "canary-degraded-rollback",
        {
            "detection_s": round(decided_at - switched_at, 1),
            "utterances_at_decision": cl.pairs_at(prometheus_stack.url, ns, decided_at),
            "wer_canary": failed[-1]["value"],
            "wer_stable": failed[-1]["baseline"],
            "requests": sent,
            "failed": failed_requests,
            "per_route": rows,
        },
    )


def test_healthy_canary_is_promoted_through_every_step(
    kube: Kube,
    loop_ns: str,
    traefik: TraefikGateway,
    prometheus_stack: PrometheusStack,
    loop_evalset: Path,
) -> None:
    ns = loop_ns
    kube.apply(cl.sphinx_model(BASELINE, ns))
    kube.apply(cl.sphinx_model(BASELINE_B, ns))
    steps = [{"setWeight": 25}, {"analysis": {}}, {"setWeight": 50}, {"analysis": {}}]
    manifest = cl.canary_endpoint(ns, BASELINE, steps, margin=0.05, min_samples=20)
    observer = cl.RolloutObserver(kube, ns)
    serve_stable(kube, ns, manifest, observer)
    load = client(traefik, loop_evalset)
    start_load(load)
    try:
        manifest["spec"]["model"]["name"] = BASELINE_B
        kube.apply(manifest)
        switched_at = time.time()
        md = observer.until(
            lambda md: (
                (md.get("status") or {}).get("stableModel") == BASELINE_B
                and md["status"].get("phase") == "Healthy"
                and md
            ),
            timeout=420,
            what="the canary promoted",
        )
        observer.until(
            lambda md: len(observer.changes[-1].weights) == 1 and md,
            timeout=60,
            what="the old revision retired",
        )
        after_switch(load)
    finally:
        load.stop()

    status = md["status"]
    assert observer.candidate_weights(BASELINE_B) == [0, 25, 50, 100], [c.weights for c in observer.changes]
    passed = [r for r in status["analysisRuns"] if r["outcome"] == "Passed"]
    assert {r["step"] for r in passed} == {1, 3}, status["analysisRuns"]
    assert all(r["metric"] == "wer" and r["value"] <= r["baseline"] + 0.05 for r in passed)
    assert not status.get("lastRollback")

    rows = cl.switches(observer, load)
    sent, failed_requests = load.counts()
    print(f"client requests {sent}, failed {failed_requests}; per route: {rows}")
    assert sent >= 20
    assert failed_requests == 0, [r for r in load.requests if load.failed(r)][:5]
    assert sum(r["requests"] for r in rows if len(r["route"]) == 2) > 0, rows
    assert rows[-1]["requests"] > 0, rows  # requests after the promotion, on the new model alone
    assert observer.violations == [], observer.violations[:5]

    promoted_at = cl.epoch(next(r for r in status["revisions"] if r["model"] == BASELINE_B)["promotedAt"])
    last_pass = max(cl.epoch(r["at"]) for r in passed)
    cl.record(
        "canary-healthy-promoted",
        {
            "promotion_s": round(promoted_at - switched_at, 1),
            "utterances_at_decision": cl.pairs_at(prometheus_stack.url, ns, last_pass),
            "wer_canary": passed[-1]["value"],
            "wer_stable": passed[-1]["baseline"],
            "requests": sent,
            "failed": failed_requests,
            "per_route": rows,
        },
    )
