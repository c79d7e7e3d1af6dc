"""Faults, with invariants checked on every observed state (stt_harness.faults): the real
operator process SIGKILLed mid-rollout, Prometheus gone for several analysis intervals, the
kube-apiserver and etcd restarted mid-rollout, 409s from a concurrent writer during an A/B test.
Each test runs its own operator (the session's shared one is never killed) on its own namespaces.

What the operator creates runs on the real node: Triton pods serving the built-in recogniser,
and the evaluator pod whose real WER the analyses read from a real Prometheus.

The sample is small so that `make test` stays short; bench/faults/ runs the long version.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from kubernetes.dynamic.exceptions import ConflictError

from stt_harness import closedloop as cl
from stt_harness.cluster import LocalCluster
from stt_harness.cluster_fixtures import namespace_name, scratch_namespace
from stt_harness.faults import (
    CANARY,
    ENDPOINT,
    EvaluatorScrape,
    InvariantWatch,
    abtest_under_kills,
    converged,
    endpoint_manifest,
    fault_operator,
    prepare_models,
    prepare_namespace,
    rollout_under_kills,
    start_component,
    stop_component,
    wait_apiserver,
    wait_controllers_back,
    wait_exit,
)
from stt_harness.gateway import TraefikGateway
from stt_harness.images import BuiltImage
from stt_harness.kubewait import condition, wait_for
from stt_harness.operator import OperatorProcess
from stt_harness.resources import API
from stt_operator.rollout.transitions import ANNOTATION_HELD_BY

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

KILLS = int(os.environ.get("STT_FAULT_KILLS", "2"))  # per strategy; bench/faults runs hundreds
SEED = int(os.environ.get("STT_FAULT_SEED", "13"))
NAMESPACE_PREFIX = "stt-fault-"  # watched by no other operator of the session


@pytest.fixture
def namespaces(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    kube_api,
    traefik: TraefikGateway,
    node_evalset: Path,
) -> Iterator[list[str]]:
    """Three namespaces with a Gateway and the labelled set's claim."""
    with ExitStack() as stack:
        names = []
        for i in range(3):
            name = namespace_name(f"{NAMESPACE_PREFIX}{request.node.name.removeprefix('test_')}-{i}")
            stack.enter_context(scratch_namespace(kube_api, name))
            stack.callback(cl.delete_volume, cluster, name)
            prepare_namespace(cluster, traefik, name, node_evalset)
            names.append(name)
        yield names


@pytest.fixture
def make_operator(cluster: LocalCluster, node_images: dict[str, BuiltImage], tmp_path: Path):
    made: list[OperatorProcess] = []

    def make(namespaces: list[str], prometheus_url: str, name: str = "operator") -> OperatorProcess:
        op = fault_operator(cluster, node_images, prometheus_url, namespaces, tmp_path / name)
        made.append(op)
        return op

    yield make
    for op in made:
        op.stop()


def test_sigkill_at_random_points_of_each_strategy(kube, namespaces, operator_prometheus, make_operator):
    rng = random.Random(SEED)
    op = make_operator(namespaces, operator_prometheus.url).start()
    scrapes = []
    reports = []
    try:
        for namespace, strategy in zip(namespaces, ("Immediate", "Canary", "BlueGreen"), strict=True):
            prepare_models(kube, namespace)
            scrapes.append(EvaluatorScrape(operator_prometheus, kube, namespace))
            reports.append(rollout_under_kills(kube, op, namespace, strategy, KILLS, rng))
    finally:
        for scrape in scrapes:
            scrape.close()
    for report in reports:
        assert report.kills == KILLS
        assert report.violations == [], (report.strategy, report.violations)
        assert report.polls > 10  # the invariants were looked at all along, not once
        print(f"{report.strategy}: {report.kills} kills, converged in {report.converged_s:.1f}s")
    # The analysed strategies were decided on the evaluator pod's own series.
    assert [bool(s.seen) for s in scrapes] == [False, True, True], [s.seen for s in scrapes]


def test_prometheus_down_holds_the_canary_then_it_resumes(
    kube, namespaces, prometheus_factory, make_operator
):
    namespace = namespaces[0]
    prometheus = prometheus_factory()
    scrape = EvaluatorScrape(prometheus, kube, namespace)
    prepare_models(kube, namespace)
    manifest = endpoint_manifest(namespace, CANARY)
    kube.apply(manifest)
    make_operator([namespace], prometheus.url).start()
    try:
        watch = InvariantWatch(kube, namespace, CANARY)
        watch.until(
            lambda md: (md.get("status") or {}).get("stableModel") == "model-a", 300, "model-a stable"
        )
        manifest["spec"]["model"]["name"] = "model-b"
        kube.apply(manifest)
        watch.until(lambda md: md["status"].get("currentWeight") == 20, 300, "canary at 20 %")
        # The evaluator runs and Prometheus has scraped it before it goes away.
        wait_for(lambda: scrape.seen, 120, "the evaluator pod scraped")
        prometheus.stop()
        try:
            # Several analysis intervals (2 s) with every query failing: the rollout holds.
            md = watch.until(
                lambda md: condition(md, "Paused").get("reason") == "AnalysisPaused" and md,
                timeout=60,
                what="paused on Prometheus errors",
            )
            time.sleep(6)
            md = watch.poll()
            assert md["status"]["stableModel"] == "model-a" and "lastRollback" not in md["status"]
            assert max(w for _t, w, _s in watch.seen) <= 20
            assert all(
                r["outcome"] != "Passed" for r in md["status"].get("analysisRuns") or [] if r["step"] == 1
            )
        finally:
            prometheus.start()
        md = watch.until(
            lambda md: converged(kube, namespace, md),
            timeout=300,
            what="resumed and promoted after Prometheus came back",
        )
    finally:
        scrape.close()
    assert watch.check_final(md) == []


def test_apiserver_and_etcd_restart_mid_rollout(
    cluster, kube, namespaces, operator_prometheus, make_operator
):
    """The control plane goes away for a while in the middle of a canary: the operator logs a
    bounded number of lines, a second operator told to stop during the outage exits within its
    shutdown timeout, and after the restart the rollout carries on to promotion, invariants kept."""
    rollout_ns, idle_ns = namespaces[0], namespaces[1]
    scrape = EvaluatorScrape(operator_prometheus, kube, rollout_ns)
    prepare_models(kube, rollout_ns)
    manifest = endpoint_manifest(rollout_ns, CANARY)
    kube.apply(manifest)
    op = make_operator([rollout_ns], operator_prometheus.url).start()
    other = make_operator([idle_ns], operator_prometheus.url, name="idle-operator").start()
    try:
        watch = InvariantWatch(kube, rollout_ns, CANARY)
        watch.until(
            lambda md: (md.get("status") or {}).get("stableModel") == "model-a", 300, "model-a stable"
        )
        manifest["spec"]["model"]["name"] = "model-b"
        kube.apply(manifest)
        watch.until(lambda md: md["status"].get("currentWeight") == 20, 300, "canary at 20 %")
        lines_before = len(op.log_path.read_text(errors="replace").splitlines())
        stop_component(cluster, "kube-apiserver")
        stop_component(cluster, "etcd")
        outage_started = time.monotonic()
        try:
            time.sleep(3)
            assert other.process is not None
            other.process.terminate()  # SIGTERM while nothing answers
            exited_after = wait_exit(other.process, 15)
            assert exited_after is not None, f"operator still running 15 s after SIGTERM:\n{other.log_tail()}"
            assert exited_after <= 5 + 3, exited_after  # --shutdown-timeout 5, plus interpreter exit
            time.sleep(max(0.0, 20 - (time.monotonic() - outage_started)))
        finally:
            start_component(cluster, "etcd")
            start_component(cluster, "kube-apiserver")
            wait_apiserver(kube)
        outage_lines = op.log_path.read_text(errors="replace").splitlines()[lines_before:]
        # 20 s without an apiserver: at most 10 lines a minute per kind of line (observability.py)
        # and one per object and error, not a line per retry and watch stream.
        assert len(outage_lines) <= 60, "\n".join(outage_lines[-40:])
        md = watch.until(
            lambda md: converged(kube, rollout_ns, md),
            timeout=300,
            what="promotion after the control plane came back",
        )
        assert watch.check_final(md) == []
        assert op.process is not None and op.process.poll() is None
        # The controllers are back too (a new namespace gets its ServiceAccount), so the next
        # test does not pay for this one's outage.
        print(f"kube-controller-manager acting again {wait_controllers_back(kube):.1f} s after promotion")
    finally:
        scrape.close()


def test_abtest_through_kills_and_409s_from_a_concurrent_writer(
    kube, namespaces, operator_prometheus, make_operator
):
    """An A/B test runs while another client rewrites the ModelDeployment every 50 ms (so the
    test's optimistic hold hits 409 Conflicts) and the operator is SIGKILLed twice. The
    candidate (the recogniser) really beats the control (its degraded variant) on the evaluator
    pod's WER."""
    namespace = namespaces[0]
    prepare_models(kube, namespace, worse_a=True)
    scrape = EvaluatorScrape(operator_prometheus, kube, namespace)
    op = make_operator([namespace], operator_prometheus.url).start()
    stop = threading.Event()
    writes = {"ok": 0, "conflict": 0}

    def writer() -> None:
        resource = kube.dynamic.resources.get(api_version=API, kind="ModelDeployment")
        i = 0
        give_up = time.monotonic() + 900  # bounded even if the test never sets `stop`
        while not stop.is_set() and time.monotonic() < give_up:
            md = kube.get(API, "ModelDeployment", ENDPOINT, namespace)
            if md is not None:
                i += 1
                body = {
                    "metadata": {
                        "labels": {"fault-tick": str(i % 7)},
                        "resourceVersion": md["metadata"]["resourceVersion"],
                    }
                }
                try:
                    resource.patch(
                        body=body,
                        name=ENDPOINT,
                        namespace=namespace,
                        content_type="application/merge-patch+json",
                    )
                    writes["ok"] += 1
                except ConflictError:
                    writes["conflict"] += 1
            stop.wait(0.05)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        report = abtest_under_kills(kube, op, namespace, 2, random.Random(SEED))
    finally:
        stop.set()
        thread.join(5)
        scrape.close()
    assert report.kills == 2
    assert report.violations == [], report.violations
    assert scrape.seen, "the A/B evaluator pod was never scraped"
    test = kube.get(API, "ABTest", "ab", namespace)
    assert test["status"]["phase"] == "Promoted" and test["status"]["winner"] == "candidate", test["status"]
    md = kube.get(API, "ModelDeployment", ENDPOINT, namespace)
    assert md["spec"]["model"]["name"] == "model-b"
    assert ANNOTATION_HELD_BY not in (md["metadata"].get("annotations") or {})
    assert writes["ok"] > 20  # the writer really competed for the object all along
    conflicts = [x for x in op.metrics().splitlines() if x.startswith("stt_operator_conflicts_total{")]
    print(f"writer: {writes}; operator conflicts seen (since its last restart): {conflicts}")
