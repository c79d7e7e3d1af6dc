"""Rollback detection time: how long a canary with a worse WER serves traffic before the operator
rolls it back, and how often a healthy canary is promoted (not rolled back).

    python bench/rollouts/bench_rollback.py --effects 0,0.01,0.03,0.1 --trials 3 --rate 40 \
        [--interval 2s] [--json out.json]

Everything is real: a local control plane (kwok makes the Triton pods Ready), the operator
process (`stt-operator run`), Debian's Prometheus scraping a prometheus_client exporter that
exports the evaluator's `stt_eval_*` series. A driver thread replays a synthetic labelled set
to both variants at `--rate` paired utterances per second; the canary's per-word error
probability is higher by `effect` on the same utterances, so effect 0 is an A/A test. Canary
steps: 20 %, analysis (`wer`, maxRelativeIncrease 5 %, minSamples 100, every `--interval`), 100 %.

Detection time = from the first route with canary weight > 0 to the route back at 100 % stable.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from stt_harness.cluster import LocalCluster, default_crd_paths, ensure_tools, repo_root
from stt_harness.cluster_fixtures import scratch_namespace
from stt_harness.evalsim import record_paired_utterance
from stt_harness.operator import OperatorProcess
from stt_harness.prometheus import running_prometheus, start_exporter
from stt_harness.resources import API, stt_model
from stt_operator import evalmetrics as em
from stt_operator.builders.routing import GATEWAY_API_VERSION
from stt_operator.services.kube import Kube

NAME = "asr"


class Driver(threading.Thread):
    """Paired replay to stable and canary at `rate` utterances/s; counts what it sent."""

    def __init__(self, metrics: em.EvalMetrics, effect: float, rate: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.metrics, self.effect, self.rate, self.seed = metrics, effect, rate, seed
        self.stop = threading.Event()
        self.sent = 0

    def labels(self, variant: str) -> dict[str, str]:
        model = "model-a" if variant == "stable" else "model-b"
        return {
            "endpoint": NAME,
            "variant": variant,
            "model": model,
            "language": "en-US",
            "baseline": "stable",
        }

    def run(self) -> None:
        rng = np.random.default_rng(self.seed)
        stable, canary = self.labels("stable"), self.labels("canary")
        m, tick = self.metrics, 0.25
        while not self.stop.is_set():
            for _ in range(max(1, round(self.rate * tick))):
                # Same utterance difficulty for both systems (paired), independent errors; the
                # canary's per-word error probability is higher by `effect` (0: an A/A test).
                words = int(rng.integers(4, 25))
                p = float(rng.beta(2, 16))
                b = int(rng.binomial(words, p))
                c = int(rng.binomial(words, min(1.0, p + self.effect)))
                m.record_request(stable)
                m.record_request(canary)
                record_paired_utterance(m, stable, canary, words=words, baseline_errors=b, candidate_errors=c)
                self.sent += 1
            self.stop.wait(tick)


def canary_weight(kube: Kube, namespace: str) -> int | None:
    route = kube.get(GATEWAY_API_VERSION, "HTTPRoute", NAME, namespace)
    if route is None:
        return None
    return sum(r["weight"] for r in route["spec"]["rules"][0]["backendRefs"] if "model-b" in r["name"])


def trial(
    kube: Kube, kube_api: Any, prom: Any, effect: float, rate: float, interval: str, seed: int, timeout: float
) -> dict[str, Any]:
    with scratch_namespace(kube_api, f"bench-rollback-{uuid.uuid4().hex[:6]}") as ns:
        registry = CollectorRegistry()
        metrics = em.build_eval_metrics(registry)
        driver = Driver(metrics, effect, rate, seed)
        for variant in ("stable", "canary"):
            metrics.init_variant(driver.labels(variant))
        metrics.init_pair(driver.labels("canary"))
        exporter = start_exporter(registry)
        prom.add_target("evaluator", exporter.address, labels={"namespace": ns})
        driver.start()
        try:
            kube.apply(stt_model("model-a", ns))
            kube.apply(stt_model("model-b", ns))
            manifest = {
                "apiVersion": API,
                "kind": "ModelDeployment",
                "metadata": {"name": NAME, "namespace": ns},
                "spec": {
                    "model": {"name": "model-a"},
                    "scaleDownDelay": "0s",
                    "strategy": {
                        "type": "Canary",
                        "canary": {"steps": [{"setWeight": 20}, {"analysis": {}}, {"setWeight": 100}]},
                    },
                    "analysis": {
                        "interval": interval,
                        "metrics": [
                            {"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.05, "minSamples": 100}
                        ],
                    },
                },
            }
            kube.apply(manifest)
            deadline = time.monotonic() + 120
            while (kube.get(API, "ModelDeployment", NAME, ns) or {}).get("status", {}).get(
                "phase"
            ) != "Healthy":
                if time.monotonic() > deadline:
                    raise TimeoutError("model-a never became stable")
                time.sleep(0.2)
            manifest["spec"]["model"]["name"] = "model-b"
            kube.apply(manifest)
            t_weight = sent_at_weight = None
            deadline = time.monotonic() + timeout
            outcome, md = "Timeout", {}
            while time.monotonic() < deadline:
                w = canary_weight(kube, ns)
                if t_weight is None and w:
                    t_weight, sent_at_weight = time.monotonic(), driver.sent
                md = kube.get(API, "ModelDeployment", NAME, ns) or {}
                status = md.get("status") or {}
                if status.get("lastRollback"):
                    outcome = "RolledBack"
                    break
                if status.get("stableModel") == "model-b":
                    outcome = "Promoted"
                    break
                time.sleep(0.1)
            t_end = time.monotonic()
            runs = (md.get("status") or {}).get("analysisRuns") or []
            last = runs[-1] if runs else {}
            return {
                "effect": effect,
                "seed": seed,
                "outcome": outcome,
                "seconds": round(t_end - t_weight, 2) if t_weight else None,
                "utterances": driver.sent - sent_at_weight if sent_at_weight is not None else None,
                "looks": len(runs),
                "wer_canary": last.get("value"),
                "wer_stable": last.get("baseline"),
            }
        finally:
            driver.stop.set()
            driver.join(5)
            prom.remove_target("evaluator", exporter.address)
            exporter.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--effects", default="0,0.01,0.03,0.1", help="extra canary errors per word")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rate", type=float, default=40.0, help="paired utterances per second")
    parser.add_argument("--interval", default="2s", help="spec.analysis.interval")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per trial before giving up")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    effects = [float(x) for x in args.effects.split(",")]

    tools = ensure_tools()
    cluster = LocalCluster(nodes=2, crd_paths=default_crd_paths(tools, repo_root()), tools_dir=tools)
    cluster.start()
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, running_prometheus(Path(tmp)) as prom:
            operator = OperatorProcess(
                cluster.kubeconfig,
                reconcile_interval_s=1.0,
                namespaces=["bench-*"],
                extra_args=["--prometheus-url", prom.url],
            )
            operator.start()
            kube_api = cluster.api_client()
            kube = Kube(kube_api)
            try:
                for effect in effects:
                    for i in range(args.trials):
                        r = trial(
                            kube, kube_api, prom, effect, args.rate, args.interval, 100 + i, args.timeout
                        )
                        print(json.dumps(r), flush=True)
                        results.append(r)
            finally:
                operator.stop()
    finally:
        cluster.stop()

    print(
        "\n| effect | trials | rolled back | promoted | detection s (median, max) | utterances (median) |",
        end="",
    )
    print(" looks (median) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for effect in effects:
        rs = [r for r in results if r["effect"] == effect]
        back = [r for r in rs if r["outcome"] == "RolledBack"]
        secs = [r["seconds"] for r in back if r["seconds"] is not None]
        utts = [r["utterances"] for r in back if r["utterances"] is not None]
        print(
            f"| {effect} | {len(rs)} | {len(back)} | {sum(r['outcome'] == 'Promoted' for r in rs)} | "
            + (f"{statistics.median(secs):.1f}, {max(secs):.1f}" if secs else "-")
            + f" | {statistics.median(utts) if utts else '-'} | "
            + f"{statistics.median([r['looks'] for r in back]) if back else '-'} |"
        )
    if args.json:
        meta = {"rate": args.rate, "interval": args.interval, "python": platform.python_version()}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
