"""Fault injection against the real operator process and the local control plane, with the
invariants every observed state must keep (tests/integration/test_faults.py, bench/faults/).

What the operator creates runs: the Triton pods and the evaluator pod run on the cluster's real
node (stt_harness.node) from the images the Dockerfiles build, serving the built-in pocketsphinx
recogniser. `model-a` and `model-b` are that recogniser under two names, so the evaluator
measures the same WER for both and every analysis passes on real transcripts (for the A/B test
`model-a` is its degraded variant, so `model-b` really wins). Analysis reads a real Prometheus
(Debian's, a host process a test can stop) that scrapes the evaluator pods the operator runs:
`EvaluatorScrape` finds them by label and pod IP, as a ServiceMonitor would, because that
Prometheus has no Kubernetes discovery.

Invariants (checked on every poll and once more on the final state):
- the route never names a backend whose Deployment was never Available (RouteWatch);
- the canary weight never exceeds what passed analyses allowed: a weight set by a step after an
  analysis step is only legal once that analysis has a Passed run in status;
- nothing is promoted without a Passed verdict for every analysis step, nothing is rolled back
  (the candidate is as good as stable);
- the rollout converges; at the end there is one Deployment and one Service per serving
  revision, one route, no leftovers.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stt_harness import closedloop as cl
from stt_harness.cluster import LocalCluster
from stt_harness.images import BuiltImage
from stt_harness.operator import OperatorProcess
from stt_harness.prometheus import PrometheusServer, ScrapeTarget
from stt_harness.resources import API
from stt_harness.routewatch import RouteWatch, serve_then_switch
from stt_operator.builders.metadata import LABEL_COMPONENT, LABEL_DEPLOYMENT, LABEL_REVISION
from stt_operator.evaluator.manifests import METRICS_PORT
from stt_operator.rollout.transitions import ANNOTATION_HELD_BY
from stt_operator.services.kube import Kube

# The evaluator replays the 24-utterance set to both variants at 2 per second: 20 pairs take
# about 10 s, so each analysis step decides within a few intervals.
MIN_SAMPLES = 20
WER_METRIC = {
    "name": "wer",
    "preset": "wer",
    "nonInferiorityMargin": 0.03,
    "minSamples": MIN_SAMPLES,
}
ENDPOINT = "asr"

CANARY = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 20}, {"analysis": {}}, {"setWeight": 50}, {"analysis": {}}]},
}
BLUE_GREEN = {"type": "BlueGreen", "blueGreen": {"prePromotionAnalysis": True, "scaleDownDelaySeconds": 0}}
IMMEDIATE = {"type": "Immediate"}
STRATEGIES = {"Immediate": IMMEDIATE, "Canary": CANARY, "BlueGreen": BLUE_GREEN}

# Real pods on a 2-core node: starting a Triton pod (image already imported) and its first
# Ready takes tens of seconds, more under load.
SERVE_TIMEOUT_S = 300.0


def endpoint_manifest(namespace: str, strategy: Mapping[str, Any], model: str = "model-a") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": model},
        "replicas": 1,
        "strategy": dict(strategy),
        "scaleDownDelay": "0s",
        "endpoint": {"gatewayRef": {"name": "stt-gateway"}, "hostnames": [cl.HOST]},
    }
    if strategy["type"] != "Immediate":
        spec["analysis"] = {
            "interval": "2s",
            "prometheus": {"source": cl.PROMETHEUS_SOURCE},
            "metrics": [WER_METRIC],
        }
    return {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": ENDPOINT, "namespace": namespace},
        "spec": spec,
    }


def prepare_namespace(cluster: LocalCluster, gateway: Any, namespace: str, evalset_dir: Path) -> None:
    """The Gateway the endpoint's route attaches to and the labelled set's claim the evaluator
    reads (`pvc://evalset`); no ServiceMonitor: `EvaluatorScrape` does the discovery."""
    cl.prepare_namespace(cluster, gateway, namespace, evalset_dir, service_monitor=False)


def fault_operator(
    cluster: LocalCluster,
    images: dict[str, BuiltImage],
    prometheus_url: str,
    namespaces: Sequence[str],
    workdir: Path,
    *extra: str,
) -> OperatorProcess:
    """The operator as an administrator configures it for the real node (closedloop's settings:
    images, placement, the Prometheus source `cluster`), the same Prometheus as its default
    (A/B tests read that one), watching `namespaces`, with a short shutdown timeout. Not started.
    Without the watch-stream lines closedloop turns on: the outage test counts log lines."""
    return cl.operator_process(
        cluster,
        images,
        prometheus_url,
        workdir,
        namespaces,
        settings={"log_watch_streams": False},
        extra_args=["--prometheus-url", prometheus_url, "--shutdown-timeout", "5", *extra],
    )


class EvaluatorScrape:
    """Keeps `prometheus` scraping the evaluator pods the operator runs in `namespace`, by pod
    IP, with the `namespace` label a ServiceMonitor's relabelling gives; follows pods as they
    come and go (polls every `period` s, for at most `max_seconds`)."""

    def __init__(
        self,
        prometheus: PrometheusServer,
        kube: Kube,
        namespace: str,
        period: float = 1.0,
        max_seconds: float = 1800.0,
    ) -> None:
        self.prometheus, self.kube, self.namespace = prometheus, kube, namespace
        self.job = f"evaluator-{namespace}"
        self.period, self.deadline = period, time.monotonic() + max_seconds
        self.addresses: set[str] = set()
        self.seen: set[str] = set()  # every evaluator address scraped, for the test to assert on
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _current(self) -> set[str]:
        pods = self.kube.list("v1", "Pod", self.namespace, {LABEL_COMPONENT: "evaluator"})
        return {
            f"{pod['status']['podIP']}:{METRICS_PORT}"
            for pod in pods
            if (pod.get("status") or {}).get("podIP") and pod["status"].get("phase") == "Running"
        }

    def _run(self) -> None:
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            # The apiserver may be down on purpose: keep the targets, look again.
            with contextlib.suppress(Exception):
                self.sync(self._current())
            self.stop_event.wait(self.period)

    def sync(self, wanted: set[str]) -> None:
        if wanted == self.addresses:
            return
        gone, new = self.addresses - wanted, wanted - self.addresses
        self.prometheus.targets = [
            t for t in self.prometheus.targets if not (t.job == self.job and t.address in gone)
        ]
        self.prometheus.add_targets(
            [ScrapeTarget(job=self.job, address=a, labels={"namespace": self.namespace}) for a in new],
            wait=False,
        )
        self.addresses = wanted
        self.seen |= new

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        if self.addresses:
            self.sync(set())


def abtest_manifest(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ABTest",
        "metadata": {"name": "ab", "namespace": namespace},
        "spec": {
            "endpoint": {"modelDeploymentRef": {"name": ENDPOINT}},
            "variants": [
                {"name": "control", "model": {"name": "model-a"}, "weight": 50},
                {"name": "candidate", "model": {"name": "model-b"}, "weight": 50},
            ],
            "primaryMetric": {
                "name": "wer",
                "preset": "wer",
                "maxRelativeIncrease": 0.05,
                "minSamples": MIN_SAMPLES,
            },
            "minSamplesPerVariant": MIN_SAMPLES,
            "duration": "5m",
            "minDuration": "3s",
            "promotion": {"auto": True},
        },
    }


@dataclass
class Violation:
    at: float
    what: str


@dataclass
class InvariantWatch:
    """Polls one endpoint's route and ModelDeployment; records every distinct state."""

    kube: Kube
    namespace: str
    strategy: Mapping[str, Any]
    candidate_model: str = "model-b"
    seen: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)  # (t, weight, status)
    violations: list[Violation] = field(default_factory=list)
    polls: int = 0

    def __post_init__(self) -> None:
        self.route = RouteWatch(
            self.kube,
            self.namespace,
            ENDPOINT,
            (API, "ModelDeployment", ENDPOINT),
            {LABEL_DEPLOYMENT: ENDPOINT},
        )

    def poll(self) -> dict[str, Any]:
        self.polls += 1
        try:
            md = self.route.poll()
        except AssertionError as exc:  # the route named a never-Available backend
            self.violations.append(Violation(time.monotonic(), str(exc)))
            return {}
        weights = self.route.seen[-1] if self.route.seen else ()
        weight = sum(w for n, w in weights if self.candidate_model in n)
        status = dict(md.get("status") or {})
        if (
            not self.seen
            or self.seen[-1][1] != weight
            or self.seen[-1][2].get("phase") != status.get("phase")
        ):
            self.seen.append((time.monotonic(), weight, status))
        if status.get("lastRollback"):
            self.violations.append(
                Violation(time.monotonic(), f"rolled back without a failing verdict: {status}")
            )
        return md

    def until(self, check: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            md = self.poll()
            if md and (result := check(md)):
                return result
            time.sleep(0.2)
        raise TimeoutError(f"{what} not reached within {timeout:.0f}s; last states {self.seen[-3:]}")

    # -- final checks ---------------------------------------------------------------------------

    def analysis_steps_before(self, weight: int) -> list[int]:
        """Analysis steps that must have passed before the candidate may carry `weight`."""
        kind = self.strategy["type"]
        if kind == "BlueGreen":
            return [0] if weight > 0 and self.strategy["blueGreen"].get("prePromotionAnalysis") else []
        if kind != "Canary":
            return []
        steps = self.strategy["canary"]["steps"]
        needed: list[int] = []
        for index, step in enumerate(steps):
            if "analysis" in step:
                needed.append(index)
            if step.get("setWeight") == weight:
                # This step's own weight needs only the analyses *before* it.
                return needed[:-1] if needed and needed[-1] > index else needed
        return needed  # 100 %: after the last step, every analysis

    def check_final(self, md: Mapping[str, Any]) -> list[Violation]:
        status = md.get("status") or {}
        passed = {r.get("step") for r in status.get("analysisRuns") or [] if r.get("outcome") == "Passed"}
        out = list(self.violations)
        for t, weight, _ in self.seen:
            missing = [s for s in self.analysis_steps_before(weight) if s not in passed]
            if weight and missing:
                out.append(
                    Violation(t, f"candidate weight {weight} seen without Passed analysis of steps {missing}")
                )
        if status.get("stableModel") == self.candidate_model:
            missing = [s for s in self.analysis_steps_before(100) if s not in passed]
            if missing:
                out.append(
                    Violation(time.monotonic(), f"promoted without a Passed verdict for steps {missing}")
                )
        deployments = self.kube.list("apps/v1", "Deployment", self.namespace, {LABEL_DEPLOYMENT: ENDPOINT})
        revisions = [d["metadata"]["labels"].get(LABEL_REVISION) for d in deployments]
        serving = [r for r in revisions if r]
        if len(serving) != len(set(serving)) or len(serving) != 1:
            out.append(Violation(time.monotonic(), f"expected one serving revision, found {revisions}"))
        routes = self.kube.list("gateway.networking.k8s.io/v1", "HTTPRoute", self.namespace)
        if len(routes) != 1:
            out.append(Violation(time.monotonic(), f"expected one HTTPRoute, found {len(routes)}"))
        return out


def converged(kube: Kube, namespace: str, md: Mapping[str, Any], model: str = "model-b") -> Any:
    """The endpoint serves `model`, Healthy, and the old revision and the evaluator are gone."""
    status = md.get("status") or {}
    done = (
        status.get("stableModel") == model
        and status.get("phase") == "Healthy"
        and len(kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: ENDPOINT})) == 1
    )
    return md if done else None


def prepare_models(kube: Kube, namespace: str, *, worse_a: bool = False) -> None:
    """model-a and model-b: the built-in recogniser twice (`worse_a`: model-a is its degraded
    variant), no validation Job, the labelled set on the claim as their evaluation set."""
    kube.apply(cl.sphinx_model("model-a", namespace, degraded=worse_a))
    kube.apply(cl.sphinx_model("model-b", namespace))


def sigkill(op: OperatorProcess) -> None:
    assert op.process is not None
    op.process.send_signal(signal.SIGKILL)
    op.process.wait(10)
    op._log.close()


def next_kill_moment(watch: InvariantWatch, rng: random.Random, max_wait: float = 15.0) -> None:
    """Poll until a random moment: shortly after the candidate's weight next moves (a route
    write and its status are in flight then), or after a random 0.3 to `max_wait` s if it stays
    put. Real pods make a rollout last a minute or more: kills only seconds apart would all
    land at its start."""
    weight = watch.seen[-1][1] if watch.seen else None
    deadline = time.monotonic() + rng.uniform(0.3, max_wait)
    while time.monotonic() < deadline and (watch.seen[-1][1] if watch.seen else None) == weight:
        watch.poll()
        time.sleep(0.1)
    jitter_until = time.monotonic() + rng.uniform(0.0, 1.5)
    while time.monotonic() < jitter_until:
        watch.poll()
        time.sleep(0.1)


@dataclass
class KillReport:
    strategy: str
    kills: int
    converged_s: float
    violations: list[Violation]
    polls: int


def rollout_under_kills(
    kube: Kube,
    op: OperatorProcess,
    namespace: str,
    strategy_name: str,
    kills: int,
    rng: random.Random,
    timeout: float = SERVE_TIMEOUT_S,
    start_timeout: float = 60.0,
) -> KillReport:
    """model-a stable, then spec.model → model-b; SIGKILL the operator `kills` times at random
    moments of the rollout (`next_kill_moment`), restarting it each time; poll invariants
    throughout."""
    strategy = STRATEGIES[strategy_name]
    manifest = endpoint_manifest(namespace, strategy)
    watch = InvariantWatch(kube, namespace, strategy)
    serve_then_switch(kube, manifest, watch, timeout=SERVE_TIMEOUT_S)
    started = time.monotonic()
    done = 0
    while done < kills:
        next_kill_moment(watch, rng)
        sigkill(op)
        done += 1
        watch.poll()
        op.start(timeout=start_timeout)
    md = watch.until(
        lambda md: converged(kube, namespace, md),
        timeout=timeout,
        what=f"{strategy_name} rollout converged after {kills} kills",
    )
    took = time.monotonic() - started
    return KillReport(strategy_name, done, took, watch.check_final(md), watch.polls)


def abtest_under_kills(
    kube: Kube,
    op: OperatorProcess,
    namespace: str,
    kills: int,
    rng: random.Random,
    timeout: float = SERVE_TIMEOUT_S,
    start_timeout: float = 60.0,
) -> KillReport:
    """model-a (the degraded recogniser) serves the endpoint; an A/B test against model-b runs
    while the operator is SIGKILLed `kills` times at random moments and restarted. Violations:
    the route naming a never-Available backend, a winner other than the candidate, the hold not
    released, the endpoint not converging on model-b."""
    kube.apply(endpoint_manifest(namespace, IMMEDIATE))
    watch = RouteWatch(kube, namespace, ENDPOINT, (API, "ABTest", "ab"))
    violations: list[Violation] = []
    wait_for_object(
        kube,
        namespace,
        lambda md: (md.get("status") or {}).get("phase") == "Healthy",
        timeout,
        "model-a serving",
    )
    kube.apply(abtest_manifest(namespace))
    started = time.monotonic()
    done = 0
    try:
        while done < kills:
            deadline = time.monotonic() + rng.uniform(0.3, 8.0)
            while time.monotonic() < deadline:
                watch.poll()
                time.sleep(0.1)
            sigkill(op)
            done += 1
            op.start(timeout=start_timeout)
        test = watch.until(
            lambda t: (t.get("status") or {}).get("phase") in ("Promoted", "Completed", "Failed") and t,
            timeout,
            "the A/B test decided",
        )
    except AssertionError as exc:  # the route named a never-Available backend
        violations.append(Violation(time.monotonic(), str(exc)))
        return KillReport("ABTest", done, time.monotonic() - started, violations, watch.polls)
    status = test["status"]
    if status.get("phase") != "Promoted" or status.get("winner") != "candidate":
        violations.append(Violation(time.monotonic(), f"expected the candidate promoted: {status}"))
    md = wait_for_object(
        kube, namespace, lambda md: converged(kube, namespace, md), timeout, "model-b serving"
    )
    if md is None:
        violations.append(Violation(time.monotonic(), "the endpoint did not converge on model-b"))
    elif ANNOTATION_HELD_BY in (md["metadata"].get("annotations") or {}):
        violations.append(Violation(time.monotonic(), "the A/B test's hold was not released"))
    return KillReport("ABTest", done, time.monotonic() - started, violations, watch.polls)


def wait_for_object(
    kube: Kube, namespace: str, check: Callable[[dict[str, Any]], Any], timeout: float, what: str
) -> dict[str, Any] | None:
    """The endpoint's ModelDeployment once `check` holds, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = kube.get(API, "ModelDeployment", ENDPOINT, namespace) or {}
        if md and check(md):
            return md
        time.sleep(0.5)
    return None


# -- control-plane faults --------------------------------------------------------------------------


def component(cluster: LocalCluster, name: str) -> Any:
    return next(c for c in cluster.components if c.name == name)


def stop_component(cluster: LocalCluster, name: str) -> None:
    c = component(cluster, name)
    c.stop()


def start_component(cluster: LocalCluster, name: str) -> None:
    component(cluster, name).start()


def wait_apiserver(kube: Kube, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kube.list("v1", "Namespace", None)
            return
        except Exception:  # still starting
            time.sleep(0.3)
    raise TimeoutError("kube-apiserver not back")


def wait_controllers_back(kube: Kube, timeout: float = 180.0) -> float:
    """Seconds until kube-controller-manager acts again after a control-plane restart.

    Its informers reconnect on client-go's backoff (up to about a minute after a 20 s outage), and
    until then a new namespace gets no "default" ServiceAccount, so no pod can be created in it. A
    test that restarts the control plane waits here, so the next test finds a working cluster."""
    name = f"controllers-back-{random.getrandbits(32):08x}"
    started = time.monotonic()
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        while kube.get("v1", "ServiceAccount", "default", name) is None:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"no default ServiceAccount in {name} {timeout:.0f} s after the restart")
            time.sleep(0.5)
        return time.monotonic() - started
    finally:
        kube.delete("v1", "Namespace", name, None)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> float | None:
    """Seconds until `proc` exited, or None if it is still running after `timeout`."""
    t0 = time.monotonic()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - t0
