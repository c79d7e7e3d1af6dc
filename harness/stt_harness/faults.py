"""Fault injection against the real operator process and the local control plane, with the
invariants every observed state must keep (tests/integration/test_faults.py, bench/faults/).

Invariants (checked on every poll and once more on the final state):
- the route never names a backend whose Deployment was never Available (RouteWatch);
- the canary weight never exceeds what passed analyses allowed: a weight set by a step after an
  analysis step is only legal once that analysis has a Passed run in status;
- nothing is promoted without a Passed verdict for every analysis step, nothing is rolled back
  while the feed is healthy;
- the rollout converges; at the end there is one Deployment and one Service per serving
  revision, one route, no leftovers.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from stt_harness.cluster import LocalCluster
from stt_harness.evalsim import record_paired_utterance
from stt_harness.operator import OperatorProcess
from stt_harness.prometheus import Exporter, PrometheusServer, start_exporter
from stt_harness.resources import API, stt_model
from stt_harness.routewatch import RouteWatch, serve_then_switch
from stt_operator import evalmetrics as em
from stt_operator.builders.metadata import LABEL_DEPLOYMENT, LABEL_REVISION
from stt_operator.services.kube import Kube

WER_METRIC = {"name": "wer", "preset": "wer", "nonInferiorityMargin": 0.03, "minSamples": 50}
ENDPOINT = "asr"

CANARY = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 20}, {"analysis": {}}, {"setWeight": 50}, {"analysis": {}}]},
}
BLUE_GREEN = {"type": "BlueGreen", "blueGreen": {"prePromotionAnalysis": True, "scaleDownDelaySeconds": 0}}
IMMEDIATE = {"type": "Immediate"}
STRATEGIES = {"Immediate": IMMEDIATE, "Canary": CANARY, "BlueGreen": BLUE_GREEN}


def endpoint_manifest(namespace: str, strategy: Mapping[str, Any], model: str = "model-a") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": model},
        "replicas": 1,
        "strategy": dict(strategy),
        "scaleDownDelay": "0s",
        "endpoint": {"gatewayRef": {"name": "stt-gateway"}, "hostnames": ["stt.example.test"]},
    }
    if strategy["type"] != "Immediate":
        spec["analysis"] = {"interval": "2s", "metrics": [WER_METRIC]}
    return {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": ENDPOINT, "namespace": namespace},
        "spec": spec,
    }


class EvalFeed:
    """The evaluator's paired series for the baseline vs the candidate of one endpoint,
    exported to a real Prometheus. `gain` 0: the candidate makes the same errors as the
    baseline; 0.5: half as many (a clear winner)."""

    job = "fault-evaluator"

    def __init__(
        self,
        prometheus: PrometheusServer,
        namespace: str,
        candidate: str = "canary",
        baseline: str = "stable",
        gain: float = 0.0,
    ) -> None:
        self.registry = CollectorRegistry()
        self.metrics = em.build_eval_metrics(self.registry)
        self.exporter: Exporter = start_exporter(self.registry)
        self.prometheus, self.namespace = prometheus, namespace
        self.candidate, self.baseline, self.gain = candidate, baseline, gain
        for variant in (baseline, candidate):
            self.metrics.init_variant(self.labels(variant))
        self.metrics.init_pair(self.labels(candidate))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        prometheus.add_target(self.job, self.exporter.address, labels={"namespace": namespace})

    def labels(self, variant: str) -> dict[str, str]:
        model = "model-a" if variant == self.baseline else "model-b"
        return {
            "endpoint": ENDPOINT,
            "variant": variant,
            "model": model,
            "language": "en-US",
            "baseline": self.baseline,
        }

    def _run(self) -> None:
        rng = np.random.default_rng(3)
        base, cand = self.labels(self.baseline), self.labels(self.candidate)
        while not self.stop_event.is_set():
            for _ in range(40):
                words = int(rng.integers(4, 25))
                b = int(rng.binomial(words, rng.beta(2, 16)))
                c = b - int(rng.binomial(b, self.gain)) if self.gain else b
                self.metrics.record_request(base)
                self.metrics.record_request(cand)
                record_paired_utterance(
                    self.metrics, base, cand, words=words, baseline_errors=b, candidate_errors=c
                )
            self.stop_event.wait(0.5)

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.prometheus.remove_target(self.job, self.exporter.address)
        self.exporter.stop()


class ABFeed(EvalFeed):
    """An A/B test's evaluator: control (model-a) vs a clearly better candidate (model-b)."""

    job = "fault-abtest-evaluator"

    def __init__(self, prometheus: PrometheusServer, namespace: str) -> None:
        super().__init__(prometheus, namespace, candidate="candidate", baseline="control", gain=0.5)


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
            "primaryMetric": {"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.05, "minSamples": 50},
            "minSamplesPerVariant": 50,
            "duration": "3m",
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


def prepare_models(kube: Kube, namespace: str) -> None:
    kube.apply(stt_model("model-a", namespace))
    kube.apply(stt_model("model-b", namespace, language="en-GB"))


def sigkill(op: OperatorProcess) -> None:
    assert op.process is not None
    op.process.send_signal(signal.SIGKILL)
    op.process.wait(10)
    op._log.close()


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
    timeout: float = 150.0,
    start_timeout: float = 60.0,
) -> KillReport:
    """model-a stable, then spec.model → model-b; SIGKILL the operator `kills` times at random
    moments of the rollout (0.3 to 4 s apart), restarting it each time; poll invariants throughout."""
    strategy = STRATEGIES[strategy_name]
    manifest = endpoint_manifest(namespace, strategy)
    watch = InvariantWatch(kube, namespace, strategy)
    serve_then_switch(kube, manifest, watch)
    started = time.monotonic()
    done = 0
    while done < kills:
        wait_until = time.monotonic() + rng.uniform(0.3, 4.0)
        while time.monotonic() < wait_until:
            watch.poll()
            time.sleep(0.1)
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
