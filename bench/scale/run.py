"""Scale: many STTModels and ModelDeployments on one operator, then simultaneous canaries.

    nice -n 10 python bench/scale/run.py --endpoints 1000 --namespaces 10 --rate 20 \
        --canaries 200 --idle 60 --json bench/scale/results.json

Everything is real except the nodes: a local control plane (etcd, kube-apiserver, controller
manager, scheduler) with kwok nodes that have room for every pod, and the operator process
(`stt-operator run`, default settings apart from the namespaces it watches). STTModels have
validation off (no Jobs), ModelDeployments are Immediate with one replica each.

Phases:
1. burst: `--endpoints` STTModels and as many ModelDeployments across `--namespaces`, created at
   a steady `--rate` objects per second (models and endpoints interleaved);
   create → route applied = from the ModelDeployment's create call returning to the first
   watch event of its HTTPRoute; time until all Healthy;
2. idle: `--idle` seconds with nothing changing: operator CPU and RSS, reconciles and API calls;
3. canaries: `--canaries` endpoints switched to a second model at once with a Canary strategy
   (20 % → pause 5 s → 50 % → pause 5 s → promote), time until all are promoted.

With `--argo`, then the same burst, idle and canaries with the Argo Rollouts controller on the same
cluster (`bench/scale/build-argo-rollouts.sh` builds it): 1,000 Rollouts with the same canary steps.

Operator CPU and RSS come from /proc of its process; API calls from its own
`stt_operator_api_calls_total` (the reconcilers' calls; Kopf's watches and finalizer patches are
not in it) and, for every client together, the apiserver's `apiserver_request_total`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from kubernetes.client import AppsV1Api, CoreV1Api, CustomObjectsApi
from prometheus_client.parser import text_string_to_metric_families

from stt_harness.cluster import LocalCluster, default_crd_paths, ensure_tools, fake_node, free_port, repo_root
from stt_harness.operator import OperatorProcess
from stt_harness.resources import API, model_deployment, stt_model
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.services.kube import Kube

CLK_TCK = os.sysconf("SC_CLK_TCK")


class ProcSampler(threading.Thread):
    """CPU seconds and RSS of one process, sampled every second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []  # (t, cpu seconds, rss bytes)
        self.stop = threading.Event()

    def read(self) -> tuple[float, int]:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        return cpu, rss

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                cpu, rss = self.read()
            except OSError:
                return
            self.samples.append((time.monotonic(), cpu, rss))
            self.stop.wait(1.0)

    def window(self, t0: float, t1: float) -> dict[str, float]:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return {}
        cpu = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
        return {
            "cpu_cores": round(cpu, 3),
            "rss_mb_max": round(max(s[2] for s in inside) / 2**20, 1),
            "rss_mb_end": round(inside[-1][2] / 2**20, 1),
        }


class ClusterSampler:
    """A ProcSampler for each control-plane process (kube-apiserver, etcd, the controller
    manager, the scheduler, kwok): who the cluster's share of the CPU went to, phase by phase."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.samplers = {
            c.name: ProcSampler(c.proc.pid) for c in cluster.components if c.proc is not None and c.alive()
        }
        for sampler in self.samplers.values():
            sampler.start()

    def window(self, t0: float, t1: float) -> dict[str, float]:
        """CPU cores each process used between t0 and t1, largest first."""
        used = {name: s.window(t0, t1).get("cpu_cores", 0.0) for name, s in self.samplers.items()}
        return dict(sorted(used.items(), key=lambda kv: -kv[1]))

    def stop(self) -> None:
        for sampler in self.samplers.values():
            sampler.stop.set()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def metric_growth(before: str, after: str, name: str, by: tuple[str, ...]) -> dict[str, float]:
    """How much the samples named `name` grew between two scrapes, grouped by the labels `by`."""
    grown: dict[str, float] = {}
    for text, sign in ((after, 1.0), (before, -1.0)):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name != name:
                    continue
                key = " ".join(filter(None, (sample.labels.get(label, "") for label in by)))
                grown[key] = grown.get(key, 0.0) + sign * sample.value
    return grown


def metric_breakdown(before: str, after: str, name: str, by: tuple[str, ...], per: int) -> dict[str, float]:
    """How much the counter `name` grew between two scrapes, grouped by the labels `by`, divided
    by `per` (requests per endpoint by verb and resource: where the API calls go); largest first."""
    grown = metric_growth(before, after, name, by)
    return {k: round(v / per, 2) for k, v in sorted(grown.items(), key=lambda kv: -kv[1]) if v / per >= 0.01}


def watch_lag(before: str, after: str) -> dict[str, dict[str, float | None]]:
    """How long the operator's own writes took to come back through its watches between two
    scrapes (stt_operator_watch_lag_seconds), by kind: count, mean, and the bucket bounds that
    hold the median and the 99th percentile (the histogram keeps no finer figure)."""
    name = "stt_operator_watch_lag_seconds"
    counts = metric_growth(before, after, name + "_count", ("kind",))
    sums = metric_growth(before, after, name + "_sum", ("kind",))
    out: dict[str, dict[str, float | None]] = {}
    for kind, n in sorted(counts.items()):
        if n <= 0:
            continue
        buckets: dict[float, float] = {}
        for text, sign in ((after, 1.0), (before, -1.0)):
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == name + "_bucket" and sample.labels.get("kind") == kind:
                        bound = float(sample.labels["le"])
                        buckets[bound] = buckets.get(bound, 0.0) + sign * sample.value

        def bound_holding(q: float, buckets: dict[float, float] = buckets, n: float = n) -> float | None:
            for bound, cumulative in sorted(buckets.items()):
                if cumulative >= q * n:
                    return bound if bound != float("inf") else None
            return None

        out[kind] = {
            "n": n,
            "mean": round(sums.get(kind, 0.0) / n, 3),
            "p50_at_most": bound_holding(0.5),
            "p99_at_most": bound_holding(0.99),
        }
    return out


def gc_spent(before: str, after: str) -> dict[str, dict[str, float]]:
    """The operator's cyclic garbage collections between two scrapes, by generation: how many,
    and the seconds they held the process (stt_operator_gc_seconds_total)."""
    seconds = metric_growth(before, after, "stt_operator_gc_seconds_total", ("generation",))
    return {
        "collections": metric_growth(before, after, "python_gc_collections_total", ("generation",)),
        "seconds": {k: round(v, 3) for k, v in sorted(seconds.items())},
    }


def mean_milliseconds(
    before: str, after: str, histogram: str, by: tuple[str, ...], min_count: int
) -> dict[str, float]:
    """Mean duration in ms of what the histogram timed between two scrapes, grouped by the labels
    `by`; groups seen fewer than `min_count` times are left out. Largest first."""
    sums = metric_growth(before, after, histogram + "_sum", by)
    counts = metric_growth(before, after, histogram + "_count", by)
    means = {k: 1000 * sums.get(k, 0.0) / c for k, c in counts.items() if c >= min_count}
    return {k: round(v, 1) for k, v in sorted(means.items(), key=lambda kv: -kv[1])}


API_BREAKDOWN = ("verb", "resource", "subresource")


def admin_tls(cluster: LocalCluster, verify: bool = True) -> ssl.SSLContext:
    """TLS as the cluster's admin (client certificate); `verify=False` for a control-plane
    component's self-signed serving certificate."""
    lay = cluster.layout
    ctx = (
        ssl.create_default_context(cafile=str(lay.cert("ca"))) if verify else ssl._create_unverified_context()
    )
    ctx.load_cert_chain(str(lay.cert("admin")), str(lay.key("admin")))
    return ctx


def apiserver_get(cluster: LocalCluster, path: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(f"{cluster.server}{path}", context=admin_tls(cluster), timeout=timeout) as r:
        return r.read()


def apiserver_metrics(cluster: LocalCluster) -> str:
    return apiserver_get(cluster, "/metrics").decode()


def controller_manager_metrics(cluster: LocalCluster) -> str:
    """kube-controller-manager's own /metrics (its serving certificate is self-signed; the admin
    client certificate passes its delegated authorization)."""
    comp = next(c for c in cluster.components if c.name == "kube-controller-manager")
    port = next(a.split("=", 1)[1] for a in comp.argv if a.startswith("--secure-port="))
    url = f"https://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, context=admin_tls(cluster, verify=False), timeout=30) as r:
        return str(r.read().decode())


# The controller manager's queues an endpoint or a Rollout passes through on its way to Available.
KCM_QUEUES = ("deployment", "replicaset", "endpoint_slice", "endpoint")


def controller_manager_queues(before: str, after: str) -> dict[str, dict[str, float]]:
    """Per controller queue between two scrapes: items handled, mean wait in the queue and mean
    work per item (ms), and the workers' busy share: where Deployment -> Available waits."""
    out: dict[str, dict[str, float]] = {}
    wait = mean_milliseconds(before, after, "workqueue_queue_duration_seconds", ("name",), 1)
    work = mean_milliseconds(before, after, "workqueue_work_duration_seconds", ("name",), 1)
    counts = metric_growth(before, after, "workqueue_adds_total", ("name",))
    busy = metric_growth(before, after, "workqueue_work_duration_seconds_sum", ("name",))
    for name in KCM_QUEUES:
        if name in wait:
            out[name] = {
                "adds": counts.get(name, 0.0),
                "wait_mean_ms": wait[name],
                "work_mean_ms": work.get(name, 0.0),
                "work_seconds": round(busy.get(name, 0.0), 1),
            }
    return out


def profile_apiserver(
    cluster: LocalCluster, folder: Path | None, name: str, seconds: int = 30
) -> threading.Thread | None:
    """With --apiserver-profile: a Go CPU profile of kube-apiserver over the next `seconds`
    (read it with `go tool pprof -top <file>`), taken in the background."""
    if folder is None:
        return None
    into = folder / f"{name}.pprof"

    def take() -> None:
        into.parent.mkdir(parents=True, exist_ok=True)
        data = apiserver_get(cluster, f"/debug/pprof/profile?seconds={seconds}", timeout=seconds + 60)
        into.write_bytes(data)
        print(f"apiserver CPU profile: {into}", flush=True)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return thread


def enable_apiserver_profiling() -> None:
    """The harness starts kube-apiserver with --profiling=false; the last flag wins."""
    import stt_harness.cluster as cluster_mod

    base = cluster_mod.apiserver_args

    def with_profiling(*args: Any, **kwargs: Any) -> list[str]:
        return [*base(*args, **kwargs), "--profiling=true"]

    cluster_mod.apiserver_args = with_profiling  # type: ignore[assignment]


def keep_logs(cluster: LocalCluster, folder: Path | None) -> None:
    """With --keep-logs: copy the control plane's logs out before the cluster is torn down
    (the apiserver's own account of its watches: watchers closed for falling behind)."""
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for log in (cluster.layout.root / "logs").glob("*.log"):
        shutil.copy(log, folder / log.name)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Watcher(threading.Thread):
    """Hands every object a watch delivers to `seen`, with the time it arrived, as plain JSON
    (typed client objects make a watch lag at thousands of objects), until `stop` is set.

    A watch that ends or is closed by the apiserver resumes from the last resourceVersion it
    saw, as an informer does; only an expired version (410) starts again from the whole list.
    Starting again from the list on every close made a lagging bench watch replay all 10,000
    Deployments each time, a load of its own on the apiserver. `restarts` and `relists` count
    them."""

    def __init__(self, list_call: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.call = (list_call, args, kwargs)
        self.stop = threading.Event()
        self.restarts = 0
        self.relists = 0

    def seen(self, obj: dict[str, Any], now: float) -> None:
        raise NotImplementedError

    def run(self) -> None:
        list_call, args, kwargs = self.call
        version: str | None = None
        while not self.stop.is_set():
            since = {"resource_version": version} if version else {}
            try:
                resp = list_call(
                    *args,
                    watch=True,
                    timeout_seconds=30,
                    allow_watch_bookmarks=True,
                    _preload_content=False,
                    **since,
                    **kwargs,
                )
                try:
                    for line in resp:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":  # 410 Gone: the version left the watch cache
                            version = None
                            self.relists += 1
                            break
                        version = obj["metadata"].get("resourceVersion") or version
                        if event["type"] != "BOOKMARK":
                            self.seen(obj, time.time())
                        if self.stop.is_set():
                            break
                finally:
                    resp.release_conn()
            except Exception:  # a broken connection
                time.sleep(0.5)
            self.restarts += 1


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return (obj["metadata"]["namespace"], obj["metadata"]["name"])


class RouteWatcher(Watcher):
    """First time each HTTPRoute was seen (and the canary weights seen per route)."""

    def __init__(self, api: Any) -> None:
        super().__init__(
            CustomObjectsApi(api).list_cluster_custom_object, "gateway.networking.k8s.io", "v1", "httproutes"
        )
        self.first_seen: dict[tuple[str, str], float] = {}
        self.weights: dict[tuple[str, str], int] = {}

    def seen(self, obj: dict[str, Any], now: float) -> None:
        self.first_seen.setdefault(_key(obj), now)
        refs = obj["spec"]["rules"][0]["backendRefs"]
        self.weights[_key(obj)] = sum(r["weight"] for r in refs if "model-b" in r["name"])


class HealthyWatcher(Watcher):
    """First time each object of a custom resource reported `status.phase: Healthy`."""

    def __init__(self, api: Any, group: str, version: str, plural: str, min_available: int = 0) -> None:
        super().__init__(CustomObjectsApi(api).list_cluster_custom_object, group, version, plural)
        # Argo reports a new Rollout Healthy before its pod is up; count it once one is available.
        self.min_available = min_available
        self.first_healthy: dict[tuple[str, str], float] = {}

    def seen(self, obj: dict[str, Any], now: float) -> None:
        st = obj.get("status") or {}
        if st.get("phase") == "Healthy" and (st.get("availableReplicas") or 0) >= self.min_available:
            self.first_healthy.setdefault(_key(obj), now)


class DeploymentWatcher(Watcher):
    """When this process first saw each endpoint's Deployment, and first saw it Available: the
    stages of create -> routed on one clock, to the tenth of a second (the objects' own
    timestamps have whole seconds)."""

    def __init__(self, api: Any) -> None:
        # The same objects as the operator's own Deployment watch, under a selector that reads
        # differently in the apiserver's log ("Forcing ... watcher close"): whose watch lagged.
        super().__init__(
            AppsV1Api(api).list_deployment_for_all_namespaces,
            label_selector=f"{LABEL_DEPLOYMENT},{LABEL_DEPLOYMENT}!=bench-watch",
        )
        self.first_seen: dict[tuple[str, str], float] = {}
        self.first_available: dict[tuple[str, str], float] = {}
        # The first Available sighting minus the condition's own lastTransitionTime: how late
        # the apiserver delivered it to a watcher that is not the operator (within a second).
        self.delivery_delay: list[float] = []

    def seen(self, obj: dict[str, Any], now: float) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], (meta.get("labels") or {}).get(LABEL_DEPLOYMENT, ""))
        self.first_seen.setdefault(key, now)
        since = available_since(obj)
        if since is not None and key not in self.first_available:
            self.first_available[key] = now
            self.delivery_delay.append(now - since)


def split_stages(
    created: dict[tuple[str, str], float],
    made: dict[tuple[str, str], float],
    available: dict[tuple[str, str], float],
    routed: dict[tuple[str, str], float],
    digits: int,
) -> dict[str, Any]:
    """create -> routed per endpoint in three parts: the operator creating the Deployment, the
    cluster (controller manager, scheduler, kwok) making it Available, the operator routing to
    it; and the operator's own share (the first and the last part)."""
    names = ("to_deployment", "deployment_to_available", "available_to_route", "operator_share")
    parts: dict[str, list[float]] = {name: [] for name in names}
    for key, t0 in created.items():
        if key not in made or key not in available or key not in routed:
            continue
        parts["to_deployment"].append(made[key] - t0)
        parts["deployment_to_available"].append(available[key] - made[key])
        parts["available_to_route"].append(routed[key] - available[key])
        parts["operator_share"].append(made[key] - t0 + routed[key] - available[key])
    return {
        k: {"n": len(v), "p50": round(percentile(v, 50), digits), "p99": round(percentile(v, 99), digits)}
        for k, v in parts.items()
    }


def watched_stages(
    created: dict[tuple[str, str], float],
    deployments: DeploymentWatcher,
    routed: dict[tuple[str, str], float],
) -> dict[str, Any]:
    """The stages on this process's clock (each part ends with a watch event reaching the
    bench, so each carries one watch delivery)."""
    return split_stages(created, deployments.first_seen, deployments.first_available, routed, 3)


def summary(values: list[float], digits: int = 3) -> dict[str, Any]:
    """Count, median, 99th percentile and maximum, rounded."""
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), digits),
        "p99": round(percentile(values, 99), digits),
        "max": round(max(values), digits) if values else None,
    }


def latency_summary(
    created: dict[tuple[str, str], float], seen: dict[tuple[str, str], float]
) -> dict[str, Any]:
    return summary([seen[key] - t for key, t in created.items() if key in seen])


ARGO_DIR = Path.home() / ".cache/stt-operator/tools/argo-rollouts"


def argo_rollout(name: str, namespace: str, image: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """An Argo Rollout shaped like the operator's serving Deployment: one replica, one GPU."""
    labels = {"app": name}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "triton", "image": image, "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                    ]
                },
            },
            "strategy": {"canary": {"steps": steps}},
        },
    }


def argo_phase(cluster: Any, api: Any, kube: Kube, args: Any, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The same burst and canaries against the Argo Rollouts controller, on the same cluster
    (the operator stopped): create → Healthy, all Healthy, CPU/RSS, apiserver requests."""
    binary = ARGO_DIR / "bin/rollouts-controller"
    core = CoreV1Api(api)
    for i in range((args.endpoints + args.canaries) // 1000 + 1):  # room for these pods too
        core.create_node(fake_node(f"kwok-argo-{i}", gpus=1000, cpu="10000", memory="64Ti", pods=1010))
    for ns in ["argo-rollouts", *[f"argo-{i}" for i in range(args.namespaces)]]:
        core.create_namespace({"metadata": {"name": ns}})
    time.sleep(3)
    log_path = Path(cluster.layout.root) / "argo-rollouts.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            str(binary),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--leader-elect=false",
            "--loglevel",
            "warn",
            "--metricsPort",
            str(free_port()),
            "--healthzPort",
            str(free_port()),
            *(["--qps", str(args.argo_qps), "--burst", str(2 * args.argo_qps)] if args.argo_qps else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "POD_NAMESPACE": "argo-rollouts"},
    )
    try:
        sampler = ProcSampler(proc.pid)
        sampler.start()
        control_plane = ClusterSampler(cluster)
        watcher = HealthyWatcher(api, "argoproj.io", "v1alpha1", "rollouts", min_available=1)
        watcher.start()
        time.sleep(15)
        t_empty = time.monotonic()
        time.sleep(10)
        empty = sampler.window(t_empty, time.monotonic())
        api0 = apiserver_metrics(cluster)
        kcm0 = controller_manager_metrics(cluster)
        n = args.endpoints
        created: dict[tuple[str, str], float] = {}
        pool = ThreadPoolExecutor(max_workers=8)

        def create(obj: dict[str, Any]) -> None:
            kube.apply(obj)
            created[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = time.time()

        load_start = os.getloadavg()
        t_start = time.monotonic()
        profile_apiserver(cluster, args.apiserver_profile, "argo-burst")
        futures = []
        for i in range(n):
            due = t_start + 2 * i / args.rate  # the operator's burst sent two objects per endpoint
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(
                pool.submit(create, argo_rollout(f"e{i}", f"argo-{i % args.namespaces}", "triton:a", steps))
            )
        for f in futures:
            f.result()
        t_created = time.monotonic()
        print(f"argo: created {n} Rollouts in {t_created - t_start:.1f}s", flush=True)
        deadline = time.monotonic() + args.timeout
        while len(watcher.first_healthy) < n and time.monotonic() < deadline:
            time.sleep(2)
        t_healthy = time.monotonic() if len(watcher.first_healthy) >= n else None
        burst = sampler.window(t_start, time.monotonic())
        cluster_burst = control_plane.window(t_start, time.monotonic())
        control_plane.stop()
        api1 = apiserver_metrics(cluster)
        kcm1 = controller_manager_metrics(cluster)
        load_burst_end = os.getloadavg()
        time.sleep(5)
        t_idle = time.monotonic()
        time.sleep(args.idle)
        idle = sampler.window(t_idle, time.monotonic())

        m = min(args.canaries, n)
        t_canary = time.monotonic()
        for i in range(m):
            pool.submit(kube.apply, argo_rollout(f"e{i}", f"argo-{i % args.namespaces}", "triton:b", steps))
        pool.shutdown(wait=True)

        def promoted(r: dict[str, Any]) -> bool:
            st = r.get("status") or {}
            image = r["spec"]["template"]["spec"]["containers"][0]["image"]
            return (
                image == "triton:b"
                and st.get("phase") == "Healthy"
                and st.get("stableRS") == st.get("currentPodHash")
                and str(st.get("observedGeneration")) == str(r["metadata"]["generation"])
            )

        t_promoted = None
        while m and time.monotonic() - t_canary < args.timeout:
            if sum(1 for r in kube.list("argoproj.io/v1alpha1", "Rollout", None) if promoted(r)) >= m:
                t_promoted = time.monotonic()
                break
            time.sleep(2)
        canary = sampler.window(t_canary, time.monotonic())
        watcher.stop.set()
        sampler.stop.set()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    requests = metric_sum(api1, "apiserver_request_total") - metric_sum(api0, "apiserver_request_total")
    return {
        "controller": str(binary),
        "controller_empty": empty,
        "burst": {
            "objects": n,
            "create_seconds": round(t_created - t_start, 1),
            "create_to_healthy_s": latency_summary(created, watcher.first_healthy),
            "all_healthy_after_first_create_s": round(t_healthy - t_start, 1) if t_healthy else None,
            "all_healthy_after_last_create_s": round(t_healthy - t_created, 1) if t_healthy else None,
            "controller": burst,
            "control_plane_cpu_cores": cluster_burst,
            "controller_manager_queues": controller_manager_queues(kcm0, kcm1),
            "apiserver_requests_all_clients": requests,
            "apiserver_requests_per_rollout_all_clients": round(requests / n, 1),
            "apiserver_requests_per_rollout_by_verb": metric_breakdown(
                api0, api1, "apiserver_request_total", API_BREAKDOWN, n
            ),
            "apiserver_request_mean_ms": mean_milliseconds(
                api0, api1, "apiserver_request_duration_seconds", API_BREAKDOWN, n // 10
            ),
        },
        "idle": {"seconds": args.idle, "controller": idle},
        "canaries": {
            "count": m,
            "all_promoted_after_s": round(t_promoted - t_canary, 1) if t_promoted else None,
            "controller": canary,
        },
        "log_lines": len(log_path.read_text(errors="replace").splitlines()),
        "load_average": {"burst_start": load_start, "burst_end": load_burst_end, "end": os.getloadavg()},
    }


def parse_timestamp(value: str | None) -> float | None:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def available_since(deployment: dict[str, Any]) -> float | None:
    """When the Deployment became Available (its condition's lastTransitionTime, whole seconds);
    None while it is not."""
    for c in (deployment.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Available" and c.get("status") == "True":
            return parse_timestamp(c.get("lastTransitionTime"))
    return None


def where_the_time_goes(
    kube: Kube, created: dict[tuple[str, str], float], routed: dict[tuple[str, str], float]
) -> dict[str, Any]:
    """The stages by the Deployments' own timestamps (1 s resolution)."""
    made: dict[tuple[str, str], float] = {}
    available: dict[tuple[str, str], float] = {}
    for d in kube.list("apps/v1", "Deployment", None, None):
        labels = d["metadata"].get("labels") or {}
        key = (d["metadata"]["namespace"], labels.get(LABEL_DEPLOYMENT, ""))
        if key not in created or key not in routed:
            continue
        created_at = parse_timestamp(d["metadata"].get("creationTimestamp"))
        available_at = available_since(d)
        if created_at is None or available_at is None or available_at > routed[key] + 1:
            continue  # a later revision's Deployment
        made[key], available[key] = created_at, available_at
    return split_stages(created, made, available, routed, 2)


def list_mds(kube: Kube) -> list[dict[str, Any]]:
    return kube.list(API, "ModelDeployment", None)


def wait_all(kube: Kube, predicate: Any, count: int, timeout: float) -> float | None:
    # Each look lists every ModelDeployment: at 10,000 that is tens of MB for the apiserver
    # to serve, so the bench looks less often the more there are (2 s up to 1,000).
    every = max(2.0, count / 500)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if sum(1 for md in list_mds(kube) if predicate(md)) >= count:
            return time.monotonic()
        time.sleep(every)
    return None


def tune_controller_manager(qps: int, syncs: int) -> None:
    """The controller manager's client is limited to 20 requests/s by default (the scheduler's
    to 50), and its Deployment and ReplicaSet controllers run 5 workers each: sized for small
    clusters. At thousands of Deployments those limits, not the operator, set the pace; real
    clusters of that size raise them, and so can this bench (--controller-qps, --controller-syncs)."""
    import stt_harness.cluster as cluster_mod

    base = cluster_mod.controller_manager_args
    extra = [f"--kube-api-qps={qps}", f"--kube-api-burst={2 * qps}"] if qps else []
    if syncs:
        extra += [f"--concurrent-deployment-syncs={syncs}", f"--concurrent-replicaset-syncs={syncs}"]

    def tuned(*args: Any, **kwargs: Any) -> list[str]:
        return [*base(*args, **kwargs), *extra]

    cluster_mod.controller_manager_args = tuned  # type: ignore[assignment]


def cluster_options(parser: argparse.ArgumentParser) -> None:
    """The options run.py and floor.py share: the controller manager's tuning, where the
    results go, and whether the control plane's logs are kept."""
    parser.add_argument(
        "--controller-qps", type=int, default=0, help="controller manager API QPS (0: its default, 20)"
    )
    parser.add_argument(
        "--controller-syncs",
        type=int,
        default=0,
        help="workers of the controller manager's Deployment and ReplicaSet controllers (0: its default, 5)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-logs", type=Path, help="copy the control plane's logs into this folder")


def report(result: dict[str, Any], into: Path | None) -> None:
    """Print the results, and write them to `into` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if into:
        into.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0, help="objects created per second")
    parser.add_argument("--canaries", type=int, default=200)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--analytics-interval", type=float, default=86400.0)
    cluster_options(parser)
    parser.add_argument("--operator-arg", action="append", default=[], help="extra `stt-operator run` flag")
    parser.add_argument(
        "--argo-qps",
        type=int,
        default=0,
        help="Argo Rollouts' client QPS, burst twice that (0: its defaults, 40 and 80);"
        " the operator has no client-side limit",
    )
    parser.add_argument(
        "--argo",
        action="store_true",
        help="then the same burst and canaries with Argo Rollouts (bench/scale/build-argo-rollouts.sh)",
    )
    parser.add_argument(
        "--apiserver-profile",
        type=Path,
        help="folder for Go CPU profiles of kube-apiserver over the first 30 s of each burst",
    )
    args = parser.parse_args()
    if args.apiserver_profile:
        enable_apiserver_profiling()

    tools = ensure_tools()
    n = args.endpoints
    tune_controller_manager(args.controller_qps, args.controller_syncs)
    crds = default_crd_paths(tools, repo_root())
    if args.argo:  # the CRDs of the module the controller was built from
        crds += sorted((ARGO_DIR / "src/manifests/crds").glob("*-crd.yaml"))
    with LocalCluster(nodes=1, crd_paths=crds, tools_dir=tools) as cluster:
        api = cluster.api_client()
        core = CoreV1Api(api)
        kube = Kube(api)
        # Room for every pod: big kwok nodes (each pod asks one GPU).
        per_node = 1000
        for i in range((n + args.canaries) // per_node + 1):
            core.create_node(
                fake_node(f"kwok-big-{i}", gpus=per_node, cpu="10000", memory="64Ti", pods=per_node + 10)
            )
        namespaces = [f"scale-{i}" for i in range(args.namespaces)]
        for ns in namespaces:
            core.create_namespace({"metadata": {"name": ns}})
        time.sleep(3)  # the ServiceAccount controller makes `default` in each

        op = OperatorProcess(
            cluster.kubeconfig,
            reconcile_interval_s=10.0,  # the default
            namespaces=[],  # every namespace, as the chart does by default
            # No Prometheus here: the STTModel analytics refresh is kept out of the figures
            # (with no Prometheus configured it is off; see RESULTS.md).
            extra_args=["--analytics-interval", str(args.analytics_interval), *args.operator_arg],
        ).start()
        assert op.process is not None
        sampler = ProcSampler(op.process.pid)
        sampler.start()
        control_plane = ClusterSampler(cluster)
        routes = RouteWatcher(api)
        routes.start()
        deployments = DeploymentWatcher(api)
        deployments.start()
        healthy = HealthyWatcher(api, "stt.dev", "v1alpha1", "modeldeployments")
        healthy.start()
        time.sleep(5)
        idle0 = time.monotonic()
        time.sleep(10)
        empty = sampler.window(idle0, time.monotonic())
        api0 = apiserver_metrics(cluster)
        kcm0 = controller_manager_metrics(cluster)
        op0 = op.metrics()

        # -- burst ------------------------------------------------------------------------------
        created: dict[tuple[str, str], float] = {}
        objects: list[dict[str, Any]] = []
        for i in range(n):
            ns = namespaces[i % len(namespaces)]
            objects.append(stt_model(f"m{i}-a", ns))
            objects.append(model_deployment(f"e{i}", ns, f"m{i}-a"))
        pool = ThreadPoolExecutor(max_workers=8)

        def create(obj: dict[str, Any]) -> None:
            kube.apply(obj)
            if obj["kind"] == "ModelDeployment":
                created[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = time.time()

        print(f"creating {len(objects)} objects at {args.rate}/s", flush=True)
        load_start = os.getloadavg()
        t_start = time.monotonic()
        profile_apiserver(cluster, args.apiserver_profile, "operator-burst")
        futures = []
        for k, obj in enumerate(objects):
            due = t_start + k / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(create, obj))
        for f in futures:
            f.result()
        t_created = time.monotonic()
        print(f"created in {t_created - t_start:.1f}s; waiting for all Healthy", flush=True)
        t_healthy = wait_all(
            kube, lambda md: (md.get("status") or {}).get("phase") == "Healthy", n, args.timeout
        )
        t_burst_end = time.monotonic()
        load_burst_end = os.getloadavg()
        latencies = [routes.first_seen[key] - t for key, t in created.items() if key in routes.first_seen]
        burst = sampler.window(t_start, t_burst_end)
        cluster_burst = control_plane.window(t_start, t_burst_end)
        stages = where_the_time_goes(kube, created, routes.first_seen)
        stages_watched = watched_stages(created, deployments, routes.first_seen)
        deployments.stop.set()
        api1 = apiserver_metrics(cluster)
        kcm1 = controller_manager_metrics(cluster)
        op1 = op.metrics()

        # -- idle -------------------------------------------------------------------------------
        time.sleep(5)
        t_idle = time.monotonic()
        op_idle0 = op.metrics()
        time.sleep(args.idle)
        idle = sampler.window(t_idle, time.monotonic())
        op_idle1 = op.metrics()

        print(f"idle: {idle}", flush=True)
        # -- simultaneous canaries ----------------------------------------------------------------
        m = min(args.canaries, n)
        steps = [
            {"setWeight": 20},
            {"pause": {"duration": "5s"}},
            {"setWeight": 50},
            {"pause": {"duration": "5s"}},
        ]
        for i in range(m):
            ns = namespaces[i % len(namespaces)]
            model_b = stt_model(f"m{i}-b", ns)
            model_b["metadata"]["name"] = f"m{i}-b"
            pool.submit(kube.apply, model_b)
        pool.shutdown(wait=True)
        pool = ThreadPoolExecutor(max_workers=8)
        time.sleep(2)
        t_canary = time.monotonic()
        for i in range(m):
            ns = namespaces[i % len(namespaces)]
            md = model_deployment(f"e{i}", ns, f"m{i}-b")
            md["spec"]["strategy"] = {"type": "Canary", "canary": {"steps": steps}}
            pool.submit(kube.apply, md)
        pool.shutdown(wait=True)
        t_canary_sent = time.monotonic()
        t_promoted = wait_all(
            kube,
            lambda md: (
                (md.get("status") or {}).get("stableModel", "").endswith("-b")
                and md["status"].get("phase") == "Healthy"
            ),
            m,
            args.timeout,
        )
        canary = sampler.window(t_canary, time.monotonic())
        control_plane.stop()
        op2 = op.metrics()
        routes.stop.set()
        sampler.stop.set()
        healthy.stop.set()
        op.stop(grace=30)
        log_lines = len(op.log_path.read_text(errors="replace").splitlines())
        argo = argo_phase(cluster, api, kube, args, steps) if args.argo else None
        keep_logs(cluster, args.keep_logs)

    def reconciles(text: str) -> float:
        return metric_sum(text, "stt_operator_reconciles_total")

    def calls(text: str) -> float:
        return metric_sum(text, "stt_operator_api_calls_total")

    rec_burst = reconciles(op1) - reconciles(op0)
    all_requests = metric_sum(api1, "apiserver_request_total") - metric_sum(api0, "apiserver_request_total")
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "operator_empty": empty,
        "burst": {
            "objects": 2 * n,
            "create_seconds": round(t_created - t_start, 1),
            "achieved_rate_per_s": round(2 * n / (t_created - t_start), 1),
            "route_latency_s": {
                "n": len(latencies),
                "p50": round(percentile(latencies, 50), 3),
                "p99": round(percentile(latencies, 99), 3),
                "max": round(max(latencies), 3) if latencies else None,
                "mean": round(statistics.fmean(latencies), 3) if latencies else None,
            },
            "create_to_healthy_s": latency_summary(created, healthy.first_healthy),
            "all_healthy_after_first_create_s": round(t_healthy - t_start, 1) if t_healthy else None,
            "all_healthy_after_last_create_s": round(t_healthy - t_created, 1) if t_healthy else None,
            "operator": burst,
            "control_plane_cpu_cores": cluster_burst,
            "controller_manager_queues": controller_manager_queues(kcm0, kcm1),
            "stages_s": stages,
            "stages_watched_s": stages_watched,
            "bench_deployment_watch_delivery_delay_s": summary(deployments.delivery_delay, 2),
            "bench_watch_restarts": {
                name: {"restarts": w.restarts, "relists": w.relists}
                for name, w in (("routes", routes), ("deployments", deployments), ("healthy", healthy))
            },
            "reconciles": rec_burst,
            "reconcile_mean_s": round(
                (
                    metric_sum(op1, "stt_operator_reconcile_duration_seconds_sum")
                    - metric_sum(op0, "stt_operator_reconcile_duration_seconds_sum")
                )
                / max(1, rec_burst),
                3,
            ),
            "operator_api_calls_per_reconcile": round((calls(op1) - calls(op0)) / max(1, rec_burst), 2),
            "apiserver_requests_all_clients": all_requests,
            "apiserver_requests_per_endpoint_all_clients": round(all_requests / n, 1),
            "apiserver_requests_per_endpoint_by_verb": metric_breakdown(
                api0, api1, "apiserver_request_total", API_BREAKDOWN, n
            ),
            "operator_api_calls_per_endpoint": metric_breakdown(
                op0, op1, "stt_operator_api_calls_total", ("verb", "kind"), n
            ),
            # Where a reconcile waits: each call as the operator timed it, next to the time the
            # apiserver says it spent on the same kind of request (the gap is the client's side).
            "operator_api_call_mean_ms": mean_milliseconds(
                op0, op1, "stt_operator_api_call_duration_seconds", ("verb", "kind"), n // 10
            ),
            "apiserver_request_mean_ms": mean_milliseconds(
                api0, api1, "apiserver_request_duration_seconds", API_BREAKDOWN, n // 10
            ),
            "wakeups": metric_sum(op1, "stt_operator_wakeups_total")
            - metric_sum(op0, "stt_operator_wakeups_total"),
            "gc": gc_spent(op0, op1),
            "watch_lag_s": watch_lag(op0, op1),
            # Watchers the apiserver closed because they fell behind its watch cache.
            "apiserver_terminated_watchers": metric_growth(
                api0, api1, "apiserver_terminated_watchers_total", ("resource",)
            ),
        },
        "idle": {
            "seconds": args.idle,
            "operator": idle,
            "reconciles": reconciles(op_idle1) - reconciles(op_idle0),
            "api_calls": calls(op_idle1) - calls(op_idle0),
        },
        "canaries": {
            "count": m,
            "sent_seconds": round(t_canary_sent - t_canary, 1),
            "all_promoted_after_s": round(t_promoted - t_canary, 1) if t_promoted else None,
            "operator": canary,
            "reconciles": reconciles(op2) - reconciles(op_idle1),
            "gc": gc_spent(op_idle1, op2),
            "watch_lag_s": watch_lag(op_idle1, op2),
        },
        "operator_log_lines_total": log_lines,
        "argo_rollouts": argo,
        # The machine is shared: (1, 5, 15)-minute load averages next to every figure.
        "load_average": {
            "burst_start": load_start,
            "burst_end": load_burst_end,
            "end": os.getloadavg(),
        },
    }
    report(result, args.json)


if __name__ == "__main__":
    main()
