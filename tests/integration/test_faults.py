"""Faults, with invariants checked on every observed state (stt_harness.faults): the real
operator process SIGKILLed mid-rollout, Prometheus gone for several analysis intervals, the
kube-apiserver and etcd restarted mid-rollout, 409s from a concurrent writer during an A/B test.
Each test runs its own operator (the session's shared one is never killed) on its own namespaces.

The sample is small so that `make test` stays short; bench/faults/ runs the long version.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from kubernetes.dynamic.exceptions import ConflictError

from stt_harness.cluster_fixtures import namespace_name, scratch_namespace
from stt_harness.faults import (
    CANARY,
    ENDPOINT,
    ABFeed,
    EvalFeed,
    InvariantWatch,
    abtest_manifest,
    converged,
    endpoint_manifest,
    prepare_models,
    rollout_under_kills,
    sigkill,
    start_component,
    stop_component,
    wait_apiserver,
    wait_controllers_back,
    wait_exit,
)
from stt_harness.kubewait import condition, wait_for
from stt_harness.operator import OperatorProcess
from stt_harness.resources import API
from stt_harness.routewatch import RouteWatch
from stt_operator.rollout.transitions import ANNOTATION_HELD_BY

pytestmark = pytest.mark.integration

KILLS = int(os.environ.get("STT_FAULT_KILLS", "2"))  # per strategy; bench/faults runs hundreds
SEED = int(os.environ.get("STT_FAULT_SEED", "13"))


@pytest.fixture
def namespaces(request: pytest.FixtureRequest, kube_api) -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(scratch_namespace(kube_api, namespace_name(f"{request.node.name}-{i}")))
            for i in range(3)
        ]


def operator_for(cluster, namespaces: list[str], prometheus_url: str, *extra: str) -> OperatorProcess:
    return OperatorProcess(
        cluster.kubeconfig,
        reconcile_interval_s=1.0,
        namespaces=namespaces,
        extra_args=["--prometheus-url", prometheus_url, "--shutdown-timeout", "5", *extra],
    )


def test_sigkill_at_random_points_of_each_strategy(cluster, kube, namespaces, operator_prometheus):
    rng = random.Random(SEED)
    op = operator_for(cluster, namespaces, operator_prometheus.url).start()
    feeds = []
    reports = []
    try:
        for namespace, strategy in zip(namespaces, ("Immediate", "Canary", "BlueGreen"), strict=True):
            prepare_models(kube, namespace)
            if strategy != "Immediate":
                candidate = "preview" if strategy == "BlueGreen" else "canary"
                feeds.append(EvalFeed(operator_prometheus, namespace, candidate=candidate))
            reports.append(rollout_under_kills(kube, op, namespace, strategy, KILLS, rng))
    finally:
        for feed in feeds:
            feed.close()
        op.stop()
    for report in reports:
        assert report.kills == KILLS
        assert report.violations == [], (report.strategy, report.violations)
        assert report.polls > 10  # the invariants were looked at all along, not once
        print(f"{report.strategy}: {report.kills} kills, converged in {report.converged_s:.1f}s")


def test_prometheus_down_holds_the_canary_then_it_resumes(cluster, kube, namespace, prometheus_factory):
    prometheus = prometheus_factory()
    feed = EvalFeed(prometheus, namespace)
    prepare_models(kube, namespace)
    manifest = endpoint_manifest(namespace, CANARY)
    kube.apply(manifest)
    with operator_for(cluster, [namespace], prometheus.url) as _op:
        watch = InvariantWatch(kube, namespace, CANARY)
        watch.until(lambda md: (md.get("status") or {}).get("stableModel") == "model-a", 90, "model-a stable")
        manifest["spec"]["model"]["name"] = "model-b"
        kube.apply(manifest)
        watch.until(lambda md: md["status"].get("currentWeight") == 20, 60, "canary at 20 %")
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
            timeout=120,
            what="resumed and promoted after Prometheus came back",
        )
    feed.close()
    assert watch.check_final(md) == []


def test_apiserver_and_etcd_restart_mid_rollout(cluster, kube, namespaces, operator_prometheus):
    """The control plane goes away for a while in the middle of a canary: the operator logs a
    bounded number of lines, a second operator told to stop during the outage exits within its
    shutdown timeout, and after the restart the rollout carries on to promotion, invariants kept."""
    rollout_ns, idle_ns = namespaces[0], namespaces[1]
    feed = EvalFeed(operator_prometheus, rollout_ns)
    prepare_models(kube, rollout_ns)
    manifest = endpoint_manifest(rollout_ns, CANARY)
    kube.apply(manifest)
    op = operator_for(cluster, [rollout_ns], operator_prometheus.url).start()
    other = operator_for(cluster, [idle_ns], operator_prometheus.url).start()
    try:
        watch = InvariantWatch(kube, rollout_ns, CANARY)
        watch.until(lambda md: (md.get("status") or {}).get("stableModel") == "model-a", 90, "model-a stable")
        manifest["spec"]["model"]["name"] = "model-b"
        kube.apply(manifest)
        watch.until(lambda md: md["status"].get("currentWeight") == 20, 60, "canary at 20 %")
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
            timeout=150,
            what="promotion after the control plane came back",
        )
        assert watch.check_final(md) == []
        assert op.process is not None and op.process.poll() is None
        # The controllers are back too (a new namespace gets its ServiceAccount), so the next
        # test does not pay for this one's outage.
        print(f"kube-controller-manager acting again {wait_controllers_back(kube):.1f} s after promotion")
    finally:
        feed.close()
        op.stop()
        other.stop()


def test_abtest_through_kills_and_409s_from_a_concurrent_writer(
    cluster, kube, namespace, operator_prometheus
):
    """An A/B test runs while another client rewrites the ModelDeployment every 50 ms (so the
    test's optimistic hold hits 409 Conflicts) and the operator is SIGKILLed twice."""
    prepare_models(kube, namespace)
    kube.apply(endpoint_manifest(namespace, {"type": "Immediate"}))
    feed = ABFeed(operator_prometheus, namespace)
    op = operator_for(cluster, [namespace], operator_prometheus.url).start()
    stop = threading.Event()
    writes = {"ok": 0, "conflict": 0}

    def writer() -> None:
        resource = kube.dynamic.resources.get(api_version=API, kind="ModelDeployment")
        i = 0
        while not stop.is_set():
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
    try:
        wait_for(
            lambda: (
                ((kube.get(API, "ModelDeployment", ENDPOINT, namespace) or {}).get("status") or {}).get(
                    "phase"
                )
                == "Healthy"
            ),
            timeout=90,
            what="model-a serving",
        )
        thread.start()
        kube.apply(abtest_manifest(namespace))
        watch = RouteWatch(kube, namespace, ENDPOINT, (API, "ABTest", "ab"))
        watch.until(lambda t: (t.get("status") or {}).get("phase") == "Running", 60, "Running")
        for _ in range(2):
            deadline = time.monotonic() + random.Random(SEED).uniform(0.5, 3)
            while time.monotonic() < deadline:
                watch.poll()
                time.sleep(0.1)
            sigkill(op)
            op.start()
        done = watch.until(lambda t: t["status"].get("phase") == "Promoted" and t, 240, "winner promoted")
        assert done["status"]["winner"] == "candidate"
        md = kube.get(API, "ModelDeployment", ENDPOINT, namespace)
        assert md["spec"]["model"]["name"] == "model-b"
        assert ANNOTATION_HELD_BY not in (md["metadata"].get("annotations") or {})
        assert writes["ok"] > 20  # the writer really competed for the object all along
        conflicts = [x for x in op.metrics().splitlines() if x.startswith("stt_operator_conflicts_total{")]
        print(f"writer: {writes}; operator conflicts seen (since its last restart): {conflicts}")
    finally:
        stop.set()
        thread.join(5)
        feed.close()
        op.stop()
