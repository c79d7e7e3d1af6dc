"""SIGKILL sample: the real operator killed at random moments of Immediate, Canary and BlueGreen
rollouts, restarted each time, with the invariants of stt_harness.faults checked on every
observed state. The long version of tests/integration/test_faults.py.

    nice -n 10 python bench/faults/run.py --rounds 3 --kills 5 --json bench/faults/results.json

Each round runs one rollout per strategy (model-a → model-b, each in its own namespace) with
`--kills` SIGKILLs 0.3 to 4 s apart; the operator is restarted after each. Real components: a
local control plane (kwok makes Triton pods Ready), Debian's Prometheus scraping a
prometheus_client exporter with the evaluator's series (canary as good as stable), and the
operator process. Reported: kills, invariant violations, convergence time per rollout (from
spec.model's change to Healthy with the old revision gone), operator restart time.
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

from stt_harness.cluster import LocalCluster, default_crd_paths, ensure_tools, repo_root
from stt_harness.faults import STRATEGIES, EvalFeed, prepare_models, rollout_under_kills
from stt_harness.operator import OperatorProcess
from stt_harness.prometheus import running_prometheus
from stt_operator.services.kube import Kube


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
    with (
        LocalCluster(nodes=2, crd_paths=default_crd_paths(tools, repo_root()), tools_dir=tools) as cluster,
        running_prometheus(Path(tempfile.mkdtemp(prefix="bench-faults-prom-"))) as prometheus,
    ):
        api = cluster.api_client()
        kube, core = Kube(api), CoreV1Api(api)
        for r in range(args.rounds):
            for strategy in STRATEGIES:
                ns = f"faults-{r}-{strategy.lower()}"
                core.create_namespace({"metadata": {"name": ns}})
                time.sleep(1)
                prepare_models(kube, ns)
                feed = None
                if strategy != "Immediate":
                    feed = EvalFeed(
                        prometheus, ns, candidate="preview" if strategy == "BlueGreen" else "canary"
                    )
                op = OperatorProcess(
                    cluster.kubeconfig,
                    reconcile_interval_s=1.0,
                    namespaces=[ns],
                    extra_args=["--prometheus-url", prometheus.url, "--shutdown-timeout", "5"],
                )
                t0 = time.monotonic()
                op.start(timeout=300)
                start_s = time.monotonic() - t0
                try:
                    report = rollout_under_kills(
                        kube, op, ns, strategy, args.kills, rng, timeout=600, start_timeout=300
                    )
                finally:
                    op.stop()
                    if feed:
                        feed.close()
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
