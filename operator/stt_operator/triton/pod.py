"""The Triton pod template for one served model (pure: returns plain dicts).

Used by the ModelDeployment builders (`builders.serving.ServingParams.pod_spec`). The pod:
- runs `tritonserver` (the official NGC image by default) in explicit model-control mode
  loading only its model, with strict readiness, metrics (GPU metrics on GPU pods) and the
  model-repository / shared-memory HTTP and gRPC APIs restricted behind a header whose value
  only the pod knows (its own UID, or a Secret when the operator needs to call them);
- gets its repository from an init container that runs the Jobs image's fetcher
  (`python -m stt_operator.triton.materialize`: pinned digest, size limit, safe unpacking)
  into an emptyDir, or points Triton at a native cloud repository (`s3://`, `gs://`, `as://`);
- requests `nvidia.com/gpu` (requests = limits), selects GPU nodes and tolerates their taint;
- has a startup probe that allows slow model loads (configurable deadline), a readiness probe on
  the model's own readiness endpoint and a liveness probe on the server's;
- runs non-root with the restricted Pod Security Standard's container settings;
- carries the labels / annotations a PodMonitor, ServiceMonitor or annotation-based scrape uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stt_operator.images import DEFAULT_JOBS_IMAGE, DEFAULT_TRITON_IMAGE

# Triton's own ports in every serving pod (Services map the endpoint's port onto HTTP).
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
REPOSITORY_MOUNT = "/models"
CONFIG_MOUNT = "/config"
CREDENTIALS_MOUNT = "/var/run/secrets/stt-model"
SCRAPE_LABEL = "stt.dev/scrape"
ADMIN_HEADER = "x-stt-admin"
TRITON_UID = 1000  # the NGC image's `triton-server` user
NATIVE_SCHEMES = ("s3://", "gs://", "as://")
GPU_RESOURCE = "nvidia.com/gpu"
PROBE_TIMEOUT_S = 5  # readiness and liveness (see the container below)


@dataclass(frozen=True)
class TritonPodParams:
    model_name: str  # Triton model name (directory in the repository)
    config_map: str  # ConfigMap holding the rendered config.pbtxt under key `config.pbtxt`
    artifact_uri: str
    artifact_sha256: str | None = None
    archive: str | None = None
    credentials_secret: str | None = None  # Secret with s3/gs/http credentials (mounted as files)
    native_repository: bool = False  # let Triton read s3:// / gs:// itself (no init container)
    image: str = DEFAULT_TRITON_IMAGE
    fetcher_image: str = DEFAULT_JOBS_IMAGE
    gpus: int = 1
    cpu: str | None = None
    memory: str | None = None
    limits: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: Sequence[Mapping[str, Any]] = field(
        default_factory=lambda: [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    )
    startup_deadline_s: int = 600  # slow loads (big models, TensorRT engine builds) get this long
    probe_period_s: int = 10
    admin_secret: str | None = None  # Secret key `token` for the restricted repository API
    shm_size: str = "1Gi"  # the Python backend passes tensors through /dev/shm
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str | None = None
    max_fetch_bytes: int | None = None
    # Rewrite the served config's instance groups to this kind (KIND_CPU on a pod without GPUs).
    instance_kind: str | None = None


def _check(p: TritonPodParams) -> None:
    if not p.model_name:
        raise ValueError("model_name: required")
    if p.gpus < 0:
        raise ValueError(f"resources.gpu: must be >= 0, got {p.gpus}")
    if p.startup_deadline_s < p.probe_period_s:
        raise ValueError(
            f"startup deadline {p.startup_deadline_s}s is shorter than the probe period {p.probe_period_s}s"
        )
    if p.instance_kind not in (None, "KIND_CPU", "KIND_GPU"):
        raise ValueError(f"instance_kind: {p.instance_kind!r} is not KIND_CPU or KIND_GPU")
    if p.instance_kind and p.native_repository:
        # Triton reads config.pbtxt from the bucket itself: nothing can rewrite it on the way.
        raise ValueError("instance_kind: cannot rewrite the config of a native cloud repository")
    if p.native_repository and not p.artifact_uri.startswith(NATIVE_SCHEMES):
        raise ValueError(f"source.uri {p.artifact_uri!r}: Triton reads only {NATIVE_SCHEMES} natively")


def triton_args(p: TritonPodParams) -> list[str]:
    repository = p.artifact_uri.rstrip("/") if p.native_repository else REPOSITORY_MOUNT
    restricted = f"model-repository,shared-memory,trace,logging:{ADMIN_HEADER}=$(TRITON_ADMIN_KEY)"
    return [
        "tritonserver",
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        f"--load-model={p.model_name}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--http-port={TRITON_HTTP_PORT}",
        f"--grpc-port={TRITON_GRPC_PORT}",
        "--allow-metrics=true",
        f"--metrics-port={TRITON_METRICS_PORT}",
        f"--allow-gpu-metrics={'true' if p.gpus > 0 else 'false'}",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
    ]


def _security_context() -> dict[str, Any]:
    # Restricted PSS container settings. The root filesystem stays writable: Triton and ONNX
    # Runtime's TensorRT engine cache write under the home directory.
    return {
        "runAsNonRoot": True,
        "runAsUser": TRITON_UID,
        "runAsGroup": TRITON_UID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(p: TritonPodParams) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = dict(p.limits)
    if p.gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(p.gpus)  # extended resources: requests = limits
    if p.cpu:
        requests["cpu"] = p.cpu
    if p.memory:
        requests["memory"] = p.memory
    return {"requests": requests, "limits": limits}


def _admin_env(p: TritonPodParams) -> dict[str, Any]:
    if p.admin_secret:
        return {
            "name": "TRITON_ADMIN_KEY",
            "valueFrom": {"secretKeyRef": {"name": p.admin_secret, "key": "token"}},
        }
    # Nobody needs the repository API: lock it with a value only this pod knows.
    return {"name": "TRITON_ADMIN_KEY", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}


def _fetch_init_container(p: TritonPodParams) -> dict[str, Any]:
    command = ["python", "-m", "stt_operator.triton.materialize"]
    args = [
        f"--uri={p.artifact_uri}",
        f"--model={p.model_name}",
        f"--config={CONFIG_MOUNT}/config.pbtxt",
        f"--repository={REPOSITORY_MOUNT}",
    ]
    if p.artifact_sha256:
        args.append(f"--sha256={p.artifact_sha256}")
    if p.archive:
        args.append(f"--archive={p.archive}")
    if p.max_fetch_bytes:
        args.append(f"--max-bytes={p.max_fetch_bytes}")
    if p.instance_kind:
        args.append(f"--instance-kind={p.instance_kind}")
    mounts = [
        {"name": "model-repository", "mountPath": REPOSITORY_MOUNT},
        {"name": "model-config", "mountPath": CONFIG_MOUNT, "readOnly": True},
    ]
    if p.credentials_secret:
        args.append(f"--credentials-dir={CREDENTIALS_MOUNT}")
        mounts.append({"name": "model-credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": True})
    if p.artifact_uri.startswith("pvc://"):
        claim = p.artifact_uri.removeprefix("pvc://").split("/", 1)[0]
        mounts.append({"name": "model-source", "mountPath": f"/mnt/pvc/{claim}", "readOnly": True})
    return {
        "name": "fetch-model",
        "image": p.fetcher_image,
        "command": command,  # the image's entrypoint is `stt-operator`
        "args": args,
        "volumeMounts": mounts,
        "securityContext": {**_security_context(), "readOnlyRootFilesystem": True},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def triton_pod_spec(p: TritonPodParams) -> dict[str, Any]:
    """The pod spec (for a Deployment's template) serving one model."""
    _check(p)
    env: list[dict[str, Any]] = [_admin_env(p)]
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": p.shm_size}},
        {"name": "model-config", "configMap": {"name": p.config_map}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    init_containers: list[dict[str, Any]] = []
    if p.native_repository:
        # Triton's cloud repositories read the usual AWS_* / GOOGLE_* variables from the Secret.
        env_from = [{"secretRef": {"name": p.credentials_secret}}] if p.credentials_secret else []
    else:
        env_from = []
        volumes.append({"name": "model-repository", "emptyDir": {}})
        mounts.append({"name": "model-repository", "mountPath": REPOSITORY_MOUNT, "readOnly": True})
        if p.credentials_secret:
            volumes.append({"name": "model-credentials", "secret": {"secretName": p.credentials_secret}})
        if p.artifact_uri.startswith("pvc://"):
            claim = p.artifact_uri.removeprefix("pvc://").split("/", 1)[0]
            volumes.append(
                {"name": "model-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
            )
        init_containers.append(_fetch_init_container(p))
    period = p.probe_period_s
    container: dict[str, Any] = {
        "name": "triton",
        "image": p.image,
        "args": triton_args(p),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": TRITON_HTTP_PORT},
            {"name": "grpc", "containerPort": TRITON_GRPC_PORT},
            {"name": "metrics", "containerPort": TRITON_METRICS_PORT},
        ],
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": period,
            "failureThreshold": -(-p.startup_deadline_s // period),
        },
        # Probes wait PROBE_TIMEOUT_S, not the kubelet's 1 s default: a CPU instance group busy
        # on every core answers /ready late, and an unready pod leaves the Service while serving.
        "readinessProbe": {
            "httpGet": {"path": f"/v2/models/{p.model_name}/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": PROBE_TIMEOUT_S,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": PROBE_TIMEOUT_S,
            "failureThreshold": 6,
        },
        "resources": _resources(p),
        "volumeMounts": mounts,
        "securityContext": _security_context(),
    }
    if env_from:
        container["envFrom"] = env_from
    spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": TRITON_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": False,
    }
    if init_containers:
        spec["initContainers"] = init_containers
    if p.gpus and p.node_selector:
        spec["nodeSelector"] = dict(p.node_selector)
    if p.gpus and p.tolerations:
        spec["tolerations"] = [dict(t) for t in p.tolerations]
    if p.service_account:
        spec["serviceAccountName"] = p.service_account
    return spec


def scrape_metadata(extra_labels: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """Pod labels (for a PodMonitor selector) and annotations (annotation-based scraping)."""
    return {
        "labels": {SCRAPE_LABEL: "true", **(extra_labels or {})},
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(TRITON_METRICS_PORT),
            "prometheus.io/path": "/metrics",
        },
    }


def triton_pod_monitor(
    name: str, namespace: str, match_labels: Mapping[str, str], interval: str = "15s"
) -> dict:
    """A Prometheus Operator PodMonitor scraping Triton's metrics port on matching pods."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": name, "namespace": namespace, "labels": {SCRAPE_LABEL: "true"}},
        "spec": {
            "selector": {"matchLabels": {SCRAPE_LABEL: "true", **match_labels}},
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": interval}],
        },
    }
