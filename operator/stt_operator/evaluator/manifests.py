"""Kubernetes objects for one evaluator (pure builders): ConfigMap + Deployment + Service.

The operator creates one evaluator per ModelDeployment (stable vs canary/preview) or ABTest
(all variants), from its own image, running `stt-operator evaluate --config /etc/evaluator/
config.yaml` with `rounds: 0` (replay forever). Its `/metrics` is scraped through the
Service's `metrics` port (annotations and the `stt.dev/scrape` label for a PodMonitor /
ServiceMonitor).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from stt_operator.builders.metadata import LABEL_COMPONENT, common_labels, dns_name
from stt_operator.evaluator.model_io import Target
from stt_operator.evaluator.targets import model_io_from_spec, model_io_to_config
from stt_operator.images import DEFAULT_JOBS_IMAGE

METRICS_PORT = 9090  # the port the operator image exposes for /metrics
CONFIG_DIR = "/etc/evaluator"
EVALSET_DIR = "/var/lib/evalset"
CREDENTIALS_DIR = "/var/run/secrets/evalset"
SCRAPE_LABEL = "stt.dev/scrape"
EVALUATOR_UID = 65532


def evaluation_set(models: Iterable[Mapping[str, Any] | None]) -> tuple[str, str | None] | None:
    """(uri, credentials secret) of the first STTModel body in `models` (the order the caller
    prefers: candidate or control first) that names a labelled evaluation set."""
    for body in models:
        spec = (body or {}).get("spec") or {}
        uri = ((spec.get("validation") or {}).get("evaluationSet") or {}).get("uri")
        if uri:
            return uri, ((spec.get("source") or {}).get("secretRef") or {}).get("name")
    return None


@dataclass(frozen=True)
class EvaluatorParams:
    owner_name: str  # the ModelDeployment or ABTest
    namespace: str
    endpoint: str  # metric label `endpoint`
    targets: Sequence[Target]
    evalset_uri: str  # file://, pvc://<claim>/<path>, http(s)://, s3://, gs://
    baseline: str | None = None
    image: str = DEFAULT_JOBS_IMAGE
    rate: float = 2.0  # utterances per second: a light, steady load on the variants
    concurrency: int = 4
    # Utterances per request; 1 keeps the latency histogram per utterance, as rollout latency
    # rules expect (see docs/triton-and-evaluator.md).
    batch_size: int = 1
    round_interval_s: float = 60.0
    timeout_s: float = 30.0
    max_retries: int = 5
    evalset_secret: str | None = None  # credentials for s3/gs/http evaluation sets
    owner: Mapping[str, Any] | None = None  # ownerReference
    cpu: str = "250m"
    memory: str = "512Mi"
    extra_labels: Mapping[str, str] = field(default_factory=dict)


def revision_target(
    variant: str, service: str, namespace: str, triton_model: str, stt_model: str, io_spec: Any
) -> Target:
    """The evaluator target for one served revision: its Service's gRPC port, its I/O roles."""
    from stt_operator.builders.serving import TRITON_GRPC_PORT

    return Target(
        variant=variant,
        triton_model=triton_model,
        url=f"{service}.{namespace}.svc:{TRITON_GRPC_PORT}",
        model=stt_model,
        io=model_io_from_spec(io_spec),
    )


def evaluator_name(owner_name: str) -> str:
    return dns_name(owner_name, "evaluator", max_length=63)


def evaluator_config(p: EvaluatorParams) -> dict[str, Any]:
    """The `--config` file the evaluator reads (keys as in `evaluator.cli`)."""
    if not p.targets:
        raise ValueError("targets: an evaluator needs at least one variant to replay against")
    evalset = p.evalset_uri
    if evalset.startswith("pvc://"):
        claim, _, rest = evalset.removeprefix("pvc://").partition("/")
        evalset = f"{EVALSET_DIR}/{claim}/{rest}".rstrip("/")
    return {
        "evalset": evalset,
        "endpoint": p.endpoint,
        "baseline": p.baseline or p.targets[0].variant,
        "targets": [
            {
                "variant": t.variant,
                "tritonModel": t.triton_model,
                "url": t.url,
                "model": t.model_label,
                "io": model_io_to_config(t.io),
            }
            for t in p.targets
        ],
        "rate": p.rate,
        "concurrency": p.concurrency,
        "batchSize": p.batch_size,
        "timeoutSeconds": p.timeout_s,
        "maxRetries": p.max_retries,
        "rounds": 0,
        "roundIntervalSeconds": p.round_interval_s,
        "metricsPort": METRICS_PORT,
        "metricsAddress": "0.0.0.0",
    }


def _labels(p: EvaluatorParams) -> dict[str, str]:
    labels = common_labels(p.owner_name, "evaluator", name="stt-evaluator")
    labels.update(p.extra_labels)
    return labels


def _metadata(p: EvaluatorParams, labels: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": evaluator_name(p.owner_name),
        "namespace": p.namespace,
        "labels": dict(labels),
    }
    if p.owner:
        meta["ownerReferences"] = [dict(p.owner)]
    return meta


def evaluator_config_map(p: EvaluatorParams) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(p, _labels(p)),
        "data": {"config.yaml": yaml.safe_dump(evaluator_config(p), sort_keys=False)},
    }


def evaluator_deployment(p: EvaluatorParams) -> dict[str, Any]:
    """One replica (replays are paired per process; more replicas would double-count)."""
    config = evaluator_config(p)
    labels = _labels(p)
    selector = {
        k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", LABEL_COMPONENT)
    }
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": evaluator_name(p.owner_name)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if p.evalset_uri.startswith("pvc://"):
        claim = p.evalset_uri.removeprefix("pvc://").split("/", 1)[0]
        volumes.append({"name": "evalset", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "evalset", "mountPath": f"{EVALSET_DIR}/{claim}", "readOnly": True})
    env: list[dict[str, Any]] = []
    if p.evalset_secret:
        volumes.append({"name": "evalset-credentials", "secret": {"secretName": p.evalset_secret}})
        mounts.append({"name": "evalset-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True})
        env.append({"name": "STT_FETCH_CREDENTIALS_DIR", "value": CREDENTIALS_DIR})
    container: dict[str, Any] = {
        "name": "evaluator",
        "image": p.image,
        "args": ["evaluate", f"--config={CONFIG_DIR}/config.yaml"],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "env": env,
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 15},
        "resources": {"requests": {"cpu": p.cpu, "memory": p.memory}, "limits": {"memory": p.memory}},
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": EVALUATOR_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(p, labels),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**labels, SCRAPE_LABEL: "true"},
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                        "prometheus.io/path": "/metrics",
                        # A config change rolls the pod.
                        "stt.dev/config-hash": _hash(config),
                    },
                },
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def evaluator_service(p: EvaluatorParams) -> dict[str, Any]:
    labels = {**_labels(p), SCRAPE_LABEL: "true"}
    selector = {
        k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", LABEL_COMPONENT)
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(p, labels),
        "spec": {
            "selector": selector,
            "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}],
        },
    }


def evaluator_objects(p: EvaluatorParams) -> list[dict[str, Any]]:
    return [evaluator_config_map(p), evaluator_deployment(p), evaluator_service(p)]


def _hash(config: Mapping[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
