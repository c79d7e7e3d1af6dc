"""Measure how long the local control plane takes to start, as the pytest ``cluster`` fixture
starts it (2 kwok GPU nodes, the real node, this checkout's CRDs + Gateway API + Prometheus
Operator CRDs).

    .venv/bin/python hack/cluster-startup.py [--runs 3] [--no-real-node]

Prints each run's per-phase seconds, then the median start and stop times and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from stt_harness.cluster import LocalCluster, default_crd_paths, ensure_tools, repo_root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--no-real-node", action="store_true", help="kwok nodes only")
    args = ap.parse_args()
    tools = ensure_tools()
    crds = default_crd_paths(tools, repo_root())
    starts, stops = [], []
    for i in range(args.runs):
        c = LocalCluster(nodes=args.nodes, crd_paths=crds, tools_dir=tools, real_node=not args.no_real_node)
        c.start()
        starts.append(c.startup_seconds)
        t0 = time.monotonic()
        c.stop()
        stops.append(time.monotonic() - t0)
        print(f"run {i + 1}: start {c.startup_seconds:.1f}s stop {stops[-1]:.1f}s phases {c.timings}")
    print(
        f"median start {statistics.median(starts):.1f}s (min {min(starts):.1f}, max {max(starts):.1f}); "
        f"median stop {statistics.median(stops):.1f}s; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs; CRD paths: {[str(p) for p in crds]}"
    )


if __name__ == "__main__":
    main()
