"""The cluster's floor for create -> routed: plain Deployments, no operator, no Argo Rollouts.

    nice -n 10 python bench/scale/floor.py --deployments 10000 --namespaces 100 --rate 25 \
        --controller-qps 300 --controller-syncs 50 --json bench/scale/results-floor-10000.json

The operator may name a backend in an HTTPRoute only once its Deployment is Available (a route
never names a non-ready backend), so no operator's create -> routed can be shorter than the
cluster's own create -> Available for the same Deployments at the same pace. This bench measures
that floor on the cluster `run.py` uses (the same control plane, the same controller-manager
tuning, kwok nodes with room for every pod): `--deployments` one-replica Deployments shaped like
the operator's serving Deployment (one GPU each), created at `--rate` per second across
`--namespaces`, nothing else running.

Recorded: create call returned -> the bench's watch saw it Available (this process's clock, 0.1 s),
the same by the Deployments' own timestamps (whole seconds), the watch's delivery delay (the
watch event's arrival minus the Available condition's lastTransitionTime, so within a second),
achieved create rate, CPU per control-plane process, the controller manager's queues, the
apiserver's requests, and watchers it closed for falling behind
(`apiserver_terminated_watchers_total`). `--keep-logs` copies the control plane's logs out
before the cluster is torn down.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes.client import AppsV1Api, CoreV1Api
from run import (
    API_BREAKDOWN,
    ClusterSampler,
    DeploymentWatcher,
    apiserver_metrics,
    available_since,
    cluster_options,
    controller_manager_metrics,
    controller_manager_queues,
    keep_logs,
    metric_breakdown,
    metric_growth,
    metric_sum,
    parse_timestamp,
    report,
    summary,
    tune_controller_manager,
)

from stt_harness.cluster import (
    GPU_RESOURCE,
    LocalCluster,
    default_crd_paths,
    ensure_tools,
    fake_node,
    repo_root,
)
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.services.kube import Kube

IMAGE = "triton:a"  # never pulled: kwok runs no containers (as run.py's Rollouts)


def serving_deployment(name: str, namespace: str) -> dict[str, Any]:
    """One replica asking one GPU, labelled as the operator labels its serving Deployments."""
    labels = {LABEL_DEPLOYMENT: name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "triton", "image": IMAGE, "resources": {"limits": {GPU_RESOURCE: "1"}}}
                    ]
                },
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--rate", type=float, default=25.0, help="Deployments created per second")
    parser.add_argument("--timeout", type=float, default=900.0)
    cluster_options(parser)
    parser.add_argument(
        "--server-side-apply",
        action="store_true",
        help="create each Deployment with a server-side apply, as the operator does, not a create",
    )
    args = parser.parse_args()

    tools = ensure_tools()
    n = args.deployments
    tune_controller_manager(args.controller_qps, args.controller_syncs)
    with LocalCluster(nodes=1, crd_paths=default_crd_paths(tools, repo_root()), tools_dir=tools) as cluster:
        api = cluster.api_client()
        core, apps = CoreV1Api(api), AppsV1Api(api)
        for i in range(n // 1000 + 1):
            core.create_node(fake_node(f"kwok-big-{i}", gpus=1000, cpu="10000", memory="64Ti", pods=1010))
        namespaces = [f"floor-{i}" for i in range(args.namespaces)]
        for ns in namespaces:
            core.create_namespace({"metadata": {"name": ns}})
        time.sleep(3)
        control_plane = ClusterSampler(cluster)
        watcher = DeploymentWatcher(api)  # keyed by (namespace, name) here
        watcher.start()
        time.sleep(3)
        api0, kcm0 = apiserver_metrics(cluster), controller_manager_metrics(cluster)

        created: dict[tuple[str, str], float] = {}
        pool = ThreadPoolExecutor(max_workers=8)

        kube = Kube(api)

        def create(name: str, ns: str) -> None:
            if args.server_side_apply:
                kube.apply(serving_deployment(name, ns))
            else:
                apps.create_namespaced_deployment(ns, serving_deployment(name, ns), _preload_content=False)
            created[(ns, name)] = time.time()

        print(f"creating {n} Deployments at {args.rate}/s", flush=True)
        load_start = os.getloadavg()
        t_start = time.monotonic()
        futures = []
        for i in range(n):
            delay = t_start + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(create, f"d{i}", namespaces[i % len(namespaces)]))
        for f in futures:
            f.result()
        t_created = time.monotonic()
        print(f"created in {t_created - t_start:.1f}s; waiting for all Available", flush=True)
        while len(watcher.first_available) < n and time.monotonic() - t_created < args.timeout:
            time.sleep(1)
        t_end = time.monotonic()
        load_end = os.getloadavg()
        api1, kcm1 = apiserver_metrics(cluster), controller_manager_metrics(cluster)
        cpu = control_plane.window(t_start, t_end)
        control_plane.stop()
        watcher.stop.set()

        by_clock = [
            watcher.first_available[k] - t for k, t in created.items() if k in watcher.first_available
        ]
        by_timestamps = []
        for d in kube.list("apps/v1", "Deployment", None):
            if LABEL_DEPLOYMENT not in (d["metadata"].get("labels") or {}):
                continue
            since, made = available_since(d), parse_timestamp(d["metadata"].get("creationTimestamp"))
            if since is not None and made is not None:
                by_timestamps.append(since - made)
        keep_logs(cluster, args.keep_logs)

    all_requests = metric_sum(api1, "apiserver_request_total") - metric_sum(api0, "apiserver_request_total")
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "create_seconds": round(t_created - t_start, 1),
        "achieved_rate_per_s": round(n / (t_created - t_start), 1),
        "all_available_after_first_create_s": round(t_end - t_start, 1),
        "create_to_available_s": summary(by_clock, 2),
        "create_to_available_by_timestamps_s": summary(by_timestamps, 0),
        "watch_delivery_delay_s": summary(watcher.delivery_delay, 2),
        "bench_watch": {"restarts": watcher.restarts, "relists": watcher.relists},
        "terminated_watchers": metric_growth(
            api0, api1, "apiserver_terminated_watchers_total", ("resource",)
        ),
        "control_plane_cpu_cores": cpu,
        "controller_manager_queues": controller_manager_queues(kcm0, kcm1),
        "apiserver_requests_per_deployment": round(all_requests / n, 1),
        "apiserver_requests_per_deployment_by_verb": metric_breakdown(
            api0, api1, "apiserver_request_total", API_BREAKDOWN, n
        ),
        "load_average": {"start": load_start, "end": load_end},
    }
    report(result, args.json)


if __name__ == "__main__":
    main()
