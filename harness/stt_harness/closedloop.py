"""The closed loop on real parts (integration tests and `bench/e2e`).

Everything a rollout's decision depends on runs for real on the real node: Triton pods from the
CPU Triton image serving the pocketsphinx recogniser (baseline or degraded), the evaluator
Deployment the operator creates (jobs image) replaying a labelled set to both revisions through
their Services, Prometheus run by the Prometheus Operator scraping the evaluator through the
chart's workload ServiceMonitor, the operator's analysis querying that Prometheus through an
administrator-configured Prometheus source, and Traefik carrying client requests through the
operator's HTTPRoute. The operator itself runs as a host process (`OperatorProcess`) with the
settings a Helm install would give it (images, placement on the real node, Prometheus source).

Pieces:
- `loop_operator`: the operator process with those settings, watching `stt-loop-*` namespaces.
- `prepare_namespace`: the Gateway, the chart's workload ServiceMonitor, and the labelled set
  as a hostPath PersistentVolume + claim (what `pvc://evalset` names).
- `LoadGenerator`: client transcriptions through the Gateway, bounded in count and time.
- `RolloutObserver`: polls the HTTPRoute, the ModelDeployment and the revisions' Deployments;
  records every route with its time and fails if a weighted backend has no ready Triton pod.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from stt_harness.cluster import repo_root
from stt_harness.images import BuiltImage
from stt_harness.node import REAL_NODE_SELECTOR, REAL_NODE_TOLERATION
from stt_harness.operator import OperatorProcess
from stt_harness.samples import sphinx_spec
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.builders.routing import GATEWAY_API_VERSION, route_name
from stt_operator.models import catalog

if TYPE_CHECKING:
    from stt_harness.cluster import LocalCluster
    from stt_operator.services.kube import Kube

API = "stt.dev/v1alpha1"
NAMESPACE_PREFIX = "stt-loop-"
PROMETHEUS_SOURCE = "cluster"  # the operator setting's name for the Prometheus Operator's server
HOST = "stt.example.test"
ENDPOINT = "asr"
EVALSET_CLAIM = "evalset"
MODELS_CLAIM = "models"
SCRAPE_INTERVAL = "5s"


# --- the operator, as an administrator would configure it ------------------------------------


def operator_settings(images: dict[str, BuiltImage], prometheus_url: str) -> dict[str, Any]:
    on_node = {"nodeSelector": dict(REAL_NODE_SELECTOR), "tolerations": [dict(REAL_NODE_TOLERATION)]}
    return {
        "triton_image": images["triton"].ref,
        "jobs_image": images["jobs"].ref,
        "operator_image": images["operator"].ref,
        "jobs_placement": on_node,
        # One core per validation / quantization Job: the real node has two, shared with
        # Prometheus, the Triton pods and the evaluators (the default asks for both).
        "job_cpu": "1",
        "serving_placement": on_node,
        # Analysis names this source; there is no default Prometheus.
        "prometheus_sources": {PROMETHEUS_SOURCE: prometheus_url},
        "analytics_interval_s": 30,
        "log_watch_streams": True,  # a late event is then visible in the log (watch renewals)
    }


def node_images(cluster: LocalCluster) -> dict[str, BuiltImage]:
    """Build (or reuse, cached by content) the images and import them into the real node."""
    from stt_harness.images import build_images

    node = cluster.real_node
    assert node is not None
    built = build_images()
    present = set(node.images())
    for image in built.values():
        if image.ref not in present:
            node.import_image(image.archive)
    # The node's image store is a cache that outlives clusters, and every source change tags the
    # images anew (about 2.4 GB): drop the older tags of these repositories so it cannot grow.
    node.remove_images(stale_tags(present, {image.ref for image in built.values()}))
    return built


def stale_tags(present: set[str], wanted: set[str]) -> list[str]:
    """References in ``present`` of a repository in ``wanted`` under another tag (pure)."""
    repositories = {ref.rpartition(":")[0] for ref in wanted}
    return sorted(ref for ref in present - wanted if ref.rpartition(":")[0] in repositories)


def operator_process(
    cluster: LocalCluster,
    images: dict[str, BuiltImage],
    prometheus_url: str,
    workdir: Path,
    namespaces: Sequence[str],
    *,
    settings: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
) -> OperatorProcess:
    """The operator process (not started) with `operator_settings` (plus `settings`) in a
    config file under `workdir`, watching `namespaces`, logging to `workdir`/operator.log."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "settings.yaml"
    config.write_text(yaml.safe_dump({**operator_settings(images, prometheus_url), **(settings or {})}))
    return OperatorProcess(
        cluster.kubeconfig,
        reconcile_interval_s=1.0,
        namespaces=list(namespaces),
        extra_args=["--config", str(config), *extra_args],
        log_path=workdir / "operator.log",
    )


@contextlib.contextmanager
def loop_operator(
    cluster: LocalCluster,
    images: dict[str, BuiltImage],
    prometheus_url: str,
    workdir: Path,
    namespaces: tuple[str, ...] = (f"{NAMESPACE_PREFIX}*",),
) -> Iterator[OperatorProcess]:
    proc = operator_process(cluster, images, prometheus_url, workdir, namespaces)
    proc.start()
    try:
        with scraped_operator(cluster, proc, prometheus_url):
            yield proc
    finally:
        proc.stop()


OPERATOR_NAMESPACE = "stt-system"  # the release namespace of the chart's operator objects here


@contextlib.contextmanager
def scraped_operator(cluster: LocalCluster, proc: OperatorProcess, prometheus_url: str) -> Iterator[None]:
    """Prometheus scrapes the host operator process through the chart's own metrics Service
    and ServiceMonitor (as a Helm install with `serviceMonitor.enabled` has them): the Service
    loses its pod selector and gets an Endpoints object naming the host's address on the
    node's network, where the process listens. The rollout reports' weight lines and the
    operator's alerts read those series. No real node, nothing to scrape: a no-op."""
    if cluster.real_node is None:
        yield
        return
    values = {
        "serviceMonitor.enabled": "true",
        "serviceMonitor.interval": SCRAPE_INTERVAL,
        # Prometheus refuses a scrape timeout longer than the interval (the chart's is 10 s).
        "serviceMonitor.scrapeTimeout": "4s",
    }
    docs = chart_objects(
        cluster, OPERATOR_NAMESPACE, values, ["templates/service.yaml", "templates/servicemonitor.yaml"]
    )
    (service,) = [d for d in docs if d["kind"] == "Service"]
    service["spec"].pop("selector")
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": service["metadata"]["name"], "namespace": OPERATOR_NAMESPACE},
        "subsets": [
            {
                "addresses": [{"ip": cluster.real_node.host_ip}],
                "ports": [{"name": "metrics", "port": proc.metrics_port, "protocol": "TCP"}],
            }
        ],
    }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([namespace, *docs, endpoints]))
    # The Prometheus Operator's config reload takes a minute or two; wait for the first scrape
    # so a rollout's first weights are in its report.
    up = f'up{{namespace="{OPERATOR_NAMESPACE}"}} == 1'
    deadline = time.monotonic() + 240
    while not _quietly(lambda: prometheus_at(prometheus_url, up)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus did not scrape the operator in 240 s ({up})")
        time.sleep(2)
    try:
        yield
    finally:
        cluster.kubectl(
            "delete", "namespace", OPERATOR_NAMESPACE, "--wait=true", "--timeout=60s", check=False
        )


# --- the namespace: Gateway, ServiceMonitor, labelled set --------------------------------------


def chart_objects(
    cluster: LocalCluster,
    namespace: str,
    values: dict[str, str],
    templates: list[str],
) -> list[dict[str, Any]]:
    """Objects of the chart's `templates` as `helm template` renders them with `values`."""
    root = repo_root()
    assert root is not None
    sets = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
    shows = [a for t in templates for a in ("--show-only", t)]
    out = cluster.helm(
        "template", "stt", str(root / "charts" / "stt-operator"), "--namespace", namespace, *sets, *shows
    )
    return [d for d in yaml.safe_load_all(out) if d]


def chart_workload_servicemonitor(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    """The chart's workload ServiceMonitor as helm renders it (scraping every few seconds)."""
    values = {"workloadServiceMonitor.enabled": "true", "workloadServiceMonitor.interval": SCRAPE_INTERVAL}
    (doc,) = chart_objects(cluster, namespace, values, ["templates/workload-servicemonitor.yaml"])
    return doc


def host_volume(namespace: str, claim: str, host_dir: Path, access_mode: str) -> list[dict[str, Any]]:
    """A hostPath PersistentVolume (the real node is this machine) and the claim bound to it."""
    pv_name = f"{namespace}-{claim}"
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "labels": {"stt.dev/test": "true"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": [access_mode],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(host_dir), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": [access_mode],
                "storageClassName": "",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]


def model_volume(namespace: str, host_dir: Path) -> list[dict[str, Any]]:
    """The writable claim `models`: where the quantization Job publishes (`pvc://models/...`)
    and Triton's fetch-model init container reads from."""
    host_dir.mkdir(parents=True, exist_ok=True)
    host_dir.chmod(0o777)  # the Job runs as uid 65532, the init container as Triton's user
    return host_volume(namespace, MODELS_CLAIM, host_dir, "ReadWriteMany")


def readable_copy(evalset: Path, dest_root: Path) -> Path:
    """A copy of the set every user can read (the evaluator runs as uid 65532)."""
    dest = Path(tempfile.mkdtemp(prefix="evalset-", dir=dest_root))
    shutil.copytree(evalset, dest, dirs_exist_ok=True)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def prepare_namespace(
    cluster: LocalCluster,
    gateway: Any,
    namespace: str,
    evalset_dir: Path,
    models_dir: Path | None = None,
    *,
    service_monitor: bool = True,
) -> None:
    """The Gateway, the workload ServiceMonitor (unless `service_monitor` is False: a
    Prometheus without the Prometheus Operator scrapes by other means), the labelled set's
    claim and, given `models_dir`, a writable `models` claim for quantized artifacts."""
    gateway.create_gateway(namespace)
    objects = [
        *([chart_workload_servicemonitor(cluster, namespace)] if service_monitor else []),
        *host_volume(namespace, EVALSET_CLAIM, evalset_dir, "ReadOnlyMany"),
    ]
    if models_dir is not None:
        objects += model_volume(namespace, models_dir)
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )


def delete_volume(cluster: LocalCluster, namespace: str) -> None:
    for claim in (EVALSET_CLAIM, MODELS_CLAIM):
        cluster.kubectl(
            "delete", "pv", f"{namespace}-{claim}", "--wait=false", "--ignore-not-found", check=False
        )


# --- models and endpoint ---------------------------------------------------------------------


def sphinx_model(
    name: str, namespace: str, *, degraded: bool = False, parameters: dict[str, str] | None = None
) -> dict[str, Any]:
    """The built-in pocketsphinx recogniser from the images (`file:///opt/stt-models/...`), CPU,
    with the labelled set on the claim as its evaluation set; `parameters` are added to its
    Triton model parameters (e.g. the `fault_error_fraction` knob)."""
    spec = sphinx_spec(parameters, degraded=degraded)
    spec["validation"]["evaluationSet"] = {"uri": f"pvc://{EVALSET_CLAIM}"}
    return {
        "apiVersion": API,
        "kind": "STTModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


CTC_ASSETS = Path(__file__).resolve().parents[2] / "operator" / "stt_operator" / "speech" / "assets"


def ctc_vocabulary() -> list[str]:
    return list(json.loads((CTC_ASSETS / "vocab.json").read_text())["tokens"])


def ctc_model(name: str, namespace: str, *, quantize_to: str | None = None) -> dict[str, Any]:
    """The project's ONNX CTC model as the images carry it (`/opt/stt-models/onnx_ctc`), pinned by
    digest, served on CPU through Triton's Python backend (the built-in ONNX runner: the local
    Triton image has no onnxruntime backend), validated on the labelled set; `quantize_to`: a
    dynamic-INT8 quantization Job publishes to that path on the `models` claim."""
    import hashlib

    vocabulary = ctc_vocabulary()
    spec: dict[str, Any] = {
        "language": "en-US",
        "format": "onnx",
        "source": {
            "uri": "file:///opt/stt-models/onnx_ctc/model.onnx",
            "sha256": hashlib.sha256((CTC_ASSETS / "model.onnx").read_bytes()).hexdigest(),
        },
        "io": {
            "inputs": [{"name": "audio", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}],
            "outputs": [
                {"name": "logits", "dataType": "TYPE_FP32", "dims": [-1, len(vocabulary)], "role": "logits"}
            ],
            "vocabulary": vocabulary,
        },
        "triton": {"backend": "python", "maxBatchSize": 8, "instanceGroup": {"kind": "KIND_CPU", "count": 1}},
        "resources": {"gpu": 0},
        "validation": {"enabled": True, "evaluationSet": {"uri": f"pvc://{EVALSET_CLAIM}"}},
    }
    if quantize_to:
        spec["quantization"] = {
            "enabled": True,
            "mode": "dynamic-int8",
            "outputUri": f"pvc://{MODELS_CLAIM}/{quantize_to}",
            "maxWerIncrease": 0.05,
        }
    return {
        "apiVersion": API,
        "kind": "STTModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def canary_endpoint(
    namespace: str,
    model: str,
    steps: list[dict[str, Any]],
    *,
    margin: float,
    min_samples: int,
    name: str = ENDPOINT,
    host: str = HOST,
) -> dict[str, Any]:
    strategy = {"type": "Canary", "canary": {"steps": steps}}
    return analysed_endpoint(
        namespace, model, strategy, margin=margin, min_samples=min_samples, name=name, host=host
    )


def analysed_endpoint(
    namespace: str,
    model: str,
    strategy: dict[str, Any],
    *,
    margin: float,
    min_samples: int,
    name: str = ENDPOINT,
    host: str = HOST,
) -> dict[str, Any]:
    """The loop's ModelDeployment: one replica behind the Gateway, the given rollout strategy, and
    a WER non-inferiority analysis read from the Prometheus Operator's Prometheus."""
    return {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": model},
            "replicas": 1,
            "strategy": strategy,
            "scaleDownDelay": "0s",
            "endpoint": {"gatewayRef": {"name": "stt-gateway"}, "hostnames": [host]},
            "analysis": {
                "interval": "5s",
                "prometheus": {"source": PROMETHEUS_SOURCE},
                "metrics": [
                    {
                        "name": "wer",
                        "preset": "wer",
                        "nonInferiorityMargin": margin,
                        "minSamples": min_samples,
                    }
                ],
            },
        },
    }


# --- client load through the Gateway --------------------------------------------------------


@dataclass
class Request:
    t: float  # monotonic, at send
    status: int  # HTTP status, 0 = no response
    transcript: str | None  # None = no TRANSCRIPT in the answer
    seconds: float
    error: str = ""  # the start of an error answer


@dataclass
class LoadGenerator:
    """One client sending transcriptions of `audio` through the Gateway to the endpoint's alias
    path (`/v2/models/<endpoint>/infer`) every `period_s`, at most `max_requests` and `max_seconds`."""

    gateway_url: str
    audio: np.ndarray  # int16 PCM
    period_s: float = 0.5
    max_requests: int = 1000
    max_seconds: float = 600.0
    timeout_s: float = 30.0
    # None: the recogniser's protocol (INT16 AUDIO in, TRANSCRIPT out); a CTC vocabulary: the
    # ONNX CTC model's (FP32 `audio` in, `logits` out, decoded greedily here).
    vocabulary: list[str] | None = None
    endpoint: str = ENDPOINT  # the ModelDeployment: its alias path is /v2/models/<endpoint>/infer
    host: str = HOST
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="loadgen")
        if self.vocabulary is None:
            tensor = {"name": catalog.AUDIO, "datatype": "INT16", "data": self.audio.astype(int).tolist()}
            self._output = catalog.TRANSCRIPT
        else:
            scaled = (self.audio.astype(np.float32) / 32768.0).tolist()
            tensor = {"name": "audio", "datatype": "FP32", "data": scaled}
            self._output = "logits"
        tensor["shape"] = [1, int(self.audio.size)]
        self._body = json.dumps({"inputs": [tensor], "outputs": [{"name": self._output}]}).encode()

    def _transcript(self, out: dict[str, Any]) -> str | None:
        """The text of an answer's output (None: the output is missing or empty)."""
        if not out.get("data"):
            return None
        if self.vocabulary is None:
            return str(out["data"][0])
        from stt_operator.evaluator.targets import vocabulary_from_tokens
        from stt_operator.speech.ctc import greedy_decode

        logits = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])[0]
        return greedy_decode(logits, vocabulary_from_tokens(self.vocabulary)).text

    def start(self) -> LoadGenerator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 5)

    def send(self) -> Request:
        url = f"{self.gateway_url}/v2/models/{self.endpoint}/infer"
        req = urllib.request.Request(
            url,
            data=self._body,
            headers={"Host": self.host, "Content-Type": "application/json"},
        )
        t0 = time.monotonic()
        status, transcript, error = 0, None, ""
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status = resp.status
                body = json.load(resp)
            for out in body.get("outputs") or []:
                if out.get("name") == self._output:
                    transcript = self._transcript(out)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, exc.read()[:300].decode(errors="replace")
        except (OSError, ValueError) as exc:
            status, error = 0, str(exc)[:300]
        return Request(t0, status, transcript, time.monotonic() - t0, error)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and len(self.requests) < self.max_requests:
            if time.monotonic() > deadline:
                break
            self.requests.append(self.send())
            self._stop.wait(self.period_s)

    @staticmethod
    def failed(r: Request) -> bool:
        return not 200 <= r.status < 300 or r.transcript is None

    def counts(self, t0: float = float("-inf"), t1: float = float("inf")) -> tuple[int, int]:
        """(requests sent in [t0, t1), failed ones)."""
        window = [r for r in self.requests if t0 <= r.t < t1]
        return len(window), sum(self.failed(r) for r in window)


# --- watching the rollout ---------------------------------------------------------------------


@dataclass
class RouteChange:
    t: float  # monotonic
    weights: dict[str, int]  # backend Service -> weight (first rule)


class RolloutObserver:
    """Polls the endpoint's HTTPRoute, ModelDeployment and revision Deployments. Every route
    seen is recorded with its time; a backend with weight > 0 must have a ready Triton pod (the
    pod's readiness is its model's `/v2/models/<m>/ready`), else `violations` records it."""

    def __init__(self, kube: Kube, namespace: str, endpoint: str = ENDPOINT) -> None:
        self.kube, self.namespace, self.endpoint = kube, namespace, endpoint
        self.changes: list[RouteChange] = []
        self.violations: list[str] = []
        self.last: dict[str, Any] = {}

    def poll(self) -> dict[str, Any]:
        route = self.kube.get(GATEWAY_API_VERSION, "HTTPRoute", route_name(self.endpoint), self.namespace)
        if route is not None:
            weights: dict[str, int] = {}
            for rule in route["spec"]["rules"]:
                for ref in rule["backendRefs"]:
                    weights.setdefault(ref["name"], int(ref.get("weight", 1)))
            ready = {
                d["metadata"]["name"]
                for d in self.kube.list(
                    "apps/v1", "Deployment", self.namespace, {LABEL_DEPLOYMENT: self.endpoint}
                )
                if (d.get("status") or {}).get("readyReplicas", 0) >= 1
            }
            for name, weight in weights.items():
                if weight > 0 and name not in ready:
                    why = self._pods_of(name)
                    self.violations.append(f"route sends {weight}% to {name}, no ready Triton pod ({why})")
            if not self.changes or self.changes[-1].weights != weights:
                self.changes.append(RouteChange(time.monotonic(), weights))
        self.last = self.kube.get(API, "ModelDeployment", self.endpoint, self.namespace) or {}
        return self.last

    def _pods_of(self, deployment: str) -> str:
        """Why a revision has no ready pod: each pod's phase, Ready condition and restarts."""
        out = []
        for pod in self.kube.list("v1", "Pod", self.namespace, {LABEL_DEPLOYMENT: self.endpoint}):
            if not pod["metadata"]["name"].startswith(f"{deployment}-"):
                continue
            status = pod.get("status") or {}
            ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
            restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or [])
            out.append(
                f"{pod['metadata']['name']}: {status.get('phase')}, Ready={ready.get('status')}"
                f" {ready.get('reason') or ''} {ready.get('message') or ''}, restarts {restarts}".strip()
            )
        return "; ".join(out) or "no pods"

    def until(self, check: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = check(self.poll())
            if found:
                return found
            if time.monotonic() > deadline:
                status = json.dumps((self.last or {}).get("status"), indent=1)[:3000]
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; status:\n{status}")
            time.sleep(0.5)

    def candidate_weights(self, model: str) -> list[int]:
        """The weight of `model`'s revision (Services `<endpoint>-<model>-<revision id>`) in each
        route seen, repeats folded."""
        out: list[int] = []
        for change in self.changes:
            w = sum(
                wt
                for name, wt in change.weights.items()
                if name.rsplit("-", 1)[0] == f"{self.endpoint}-{model}"
            )
            if not out or out[-1] != w:
                out.append(w)
        return out


def switches(observer: RolloutObserver, load: LoadGenerator) -> list[dict[str, Any]]:
    """Requests and failures while each route was in force (the route a switch put in place)."""
    rows = []
    for i, change in enumerate(observer.changes):
        end = observer.changes[i + 1].t if i + 1 < len(observer.changes) else float("inf")
        sent, failed = load.counts(change.t, end)
        rows.append({"route": dict(change.weights), "requests": sent, "failed": failed})
    return rows


def _quietly(query: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A query's result, or nothing while Prometheus cannot answer yet."""
    try:
        return query()
    except (OSError, ValueError, KeyError):
        return []


def prometheus_at(url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10) as resp:
        body = json.load(resp)
    return list(body["data"]["result"])


def epoch(timestamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 status timestamp."""
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def pairs_at(prometheus_url: str, namespace: str, at: float) -> float:
    """Utterances both revisions had transcribed (paired, word unit) by `at`, per Prometheus."""
    q = f'sum(stt_eval_pairs_total{{namespace="{namespace}",endpoint="{ENDPOINT}",unit="word"}})'
    result = prometheus_at(prometheus_url, q, at)
    return float(result[0]["value"][1]) if result else 0.0


def record(scenario: str, figures: dict[str, Any]) -> None:
    """Add a scenario's figures to the JSON file `$STT_E2E_RESULTS` names (bench/e2e), if any."""
    import os

    path = os.environ.get("STT_E2E_RESULTS")
    if not path:
        return
    p = Path(path)
    data = json.loads(p.read_text()) if p.exists() else {}
    data[scenario] = figures
    p.write_text(json.dumps(data, indent=2) + "\n")
