"""SIGKILL sample: the real operator killed at random moments of Immediate, Canary and BlueGreen
rollouts and of A/B tests, restarted each time, with the invariants of stt_harness.faults checked
on every observed state. The long version of tests/integration/test_faults.py.

    nice -n 10 python bench/faults/run.py --rounds 3 --kills 5 --json bench/faults/results.json

Each round runs one rollout per strategy (model-a → model-b, each in its own namespace) and one
A/B test (model-a, the degraded recogniser, against model-b), with `--kills` SIGKILLs at random
moments (`stt_harness.faults.next_kill_moment`); the operator is restarted after each. Real
components: a local control plane with a real node where the Triton pods and the evaluator pods
the operator creates run (images built from the Dockerfiles), Traefik as the Gateway, Debian's
Prometheus scraping the evaluator pods, and the operator process. Reported: kills, invariant
violations, convergence time per rollout (from spec.model's change to Healthy with the old
revision gone; for an A/B test, from its creation to the winner promoted), operator restart
time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from kubernetes.client import CoreV1Api

from stt_harness import closedloop as cl
from stt_harness.cluster import LocalCluster, default_crd_paths, ensure_tools, repo_root
from stt_harness.faults import (
    STRATEGIES,
    EvaluatorScrape,
    abtest_under_kills,
    fault_operator,
    prepare_models,
    prepare_namespace,
    rollout_under_kills,
)
from stt_harness.gateway import running_gateway
from stt_harness.prometheus import running_prometheus
from stt_operator.services.kube import Kube
from stt_operator.speech.evalset import generate_evalset


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per rollout")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tools = ensure_tools()
    reports = []
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    evalset = cl.readable_copy(generate_evalset(work / "evalset", 24, seed=11), work)
    with (
        LocalCluster(
            nodes=2, crd_paths=default_crd_paths(tools, repo_root()), tools_dir=tools, real_node=True
        ) as cluster,
        running_prometheus(work / "prometheus") as prometheus,
        running_gateway(cluster, work / "traefik") as gateway,
    ):
        images = cl.node_images(cluster)
        api = cluster.api_client()
        kube, core = Kube(api), CoreV1Api(api)
        for r in range(args.rounds):
            for strategy in [*STRATEGIES, "ABTest"]:
                ns = f"faults-{r}-{strategy.lower()}"
                core.create_namespace({"metadata": {"name": ns}})
                while kube.get("v1", "ServiceAccount", "default", ns) is None:
                    time.sleep(0.5)
                prepare_namespace(cluster, gateway, ns, evalset)
                prepare_models(kube, ns, worse_a=strategy == "ABTest")
                scrape = EvaluatorScrape(prometheus, kube, ns)
                op = fault_operator(cluster, images, prometheus.url, [ns], work / ns)
                t0 = time.monotonic()
                op.start(timeout=300)
                start_s = time.monotonic() - t0
                try:
                    if strategy == "ABTest":
                        report = abtest_under_kills(kube, op, ns, args.kills, rng, start_timeout=300)
                    else:
                        report = rollout_under_kills(
                            kube, op, ns, strategy, args.kills, rng, timeout=600, start_timeout=300
                        )
                finally:
                    scrape.close()
                    # Free the node for the next rollout (its pods go with the namespace) while
                    # the operator still runs to release its finalizers.
                    core.delete_namespace(ns)
                    deadline = time.monotonic() + 180
                    while kube.list("v1", "Pod", ns) and time.monotonic() < deadline:
                        time.sleep(1)
                    op.stop()
                entry = {
                    "round": r,
                    "strategy": strategy,
                    "kills": report.kills,
                    "violations": [v.what for v in report.violations],
                    "converged_s": round(report.converged_s, 1),
                    "polls": report.polls,
                    "operator_start_s": round(start_s, 1),
                }
                print(json.dumps(entry), flush=True)
                reports.append(entry)
    conv = [e["converged_s"] for e in reports]
    summary = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rollouts": len(reports),
        "kills": sum(e["kills"] for e in reports),
        "violations": sum(len(e["violations"]) for e in reports),
        "converged_s": {"median": statistics.median(conv), "max": max(conv)},
        "wall_s": round(time.monotonic() - started, 1),
        "runs": reports,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
