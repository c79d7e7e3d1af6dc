"""The serving side of an endpoint: one Triton Deployment + Service per model revision."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stt_operator.builders.metadata import (
    LABEL_DEPLOYMENT,
    LABEL_MODEL,
    LABEL_REVISION,
    LABEL_ROLE,
    common_labels,
    dns_name,
    object_metadata,
    short_hash,
)
from stt_operator.triton.pod import TRITON_GRPC_PORT, TRITON_HTTP_PORT, TRITON_METRICS_PORT


def model_digest(model_body: Mapping[str, Any]) -> str:
    """What identifies a servable revision: the artifact digest and the serving spec.

    Any edit of the STTModel's spec makes a new revision (Triton must reload its config)."""
    spec = model_body.get("spec") or {}
    artifact = ((model_body.get("status") or {}).get("artifact") or {}).get("digest", "")
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":")) + artifact
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Revision:
    """One servable revision of an endpoint: a model at a given content digest."""

    model: str
    model_digest: str  # the STTModel's artifact digest, or its spec hash before validation

    @property
    def id(self) -> str:
        return short_hash(self.model, self.model_digest)


@dataclass(frozen=True)
class ServingParams:
    """What a Triton Deployment for one revision needs, already resolved from the specs."""

    deployment_name: str  # the ModelDeployment
    namespace: str
    revision: Revision
    role: str  # stable | canary | preview
    pod_spec: dict[str, Any]  # from stt_operator.triton.pod.triton_pod_spec
    replicas: int = 1
    owner: dict[str, Any] | None = None
    pod_labels: dict[str, str] = field(default_factory=dict)  # e.g. scrape labels
    pod_annotations: dict[str, str] = field(default_factory=dict)
    http_port: int = TRITON_HTTP_PORT  # the Service's HTTP port (spec.endpoint.port)


def revision_object_name(deployment_name: str, model: str, revision_id: str) -> str:
    """Name of the Deployment and Service serving one revision of a ModelDeployment."""
    return dns_name(deployment_name, model, revision_id, max_length=53)


def revision_labels(params: ServingParams) -> dict[str, str]:
    labels = common_labels(params.deployment_name, "model-server")
    labels[LABEL_DEPLOYMENT] = params.deployment_name
    labels[LABEL_MODEL] = params.revision.model
    labels[LABEL_REVISION] = params.revision.id
    return labels


def selector_labels(deployment_name: str, revision: Revision) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: deployment_name, LABEL_REVISION: revision.id}


def triton_deployment(params: ServingParams) -> dict[str, Any]:
    labels = revision_labels(params)
    name = revision_object_name(params.deployment_name, params.revision.model, params.revision.id)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(
            name, params.namespace, {**labels, LABEL_ROLE: params.role}, params.owner
        ),
        "spec": {
            "replicas": params.replicas,
            "selector": {"matchLabels": selector_labels(params.deployment_name, params.revision)},
            "template": {
                "metadata": {
                    "labels": {**params.pod_labels, **labels},
                    "annotations": dict(params.pod_annotations),
                },
                "spec": params.pod_spec,
            },
        },
    }


def triton_service(params: ServingParams) -> dict[str, Any]:
    """The revision's Service: what the HTTPRoute names, Prometheus scrapes by and the evaluator
    dials. Headless: a Gateway sends to the endpoints behind a Service, never to its ClusterIP,
    and the apiserver hands out ClusterIPs one at a time (at 600 new endpoints, a Service apply
    took 2.7 s against 0.1-0.2 s for the other applies and paced every rollout:
    bench/scale/RESULTS.md). No address also means no kube-proxy rules on every node for it."""
    labels = revision_labels(params)
    name = revision_object_name(params.deployment_name, params.revision.model, params.revision.id)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(name, params.namespace, labels, params.owner),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(params.deployment_name, params.revision),
            "ports": [
                {"name": "http", "port": params.http_port, "targetPort": "http"},
                {"name": "grpc", "port": TRITON_GRPC_PORT, "targetPort": "grpc"},
                {"name": "metrics", "port": TRITON_METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }


def deployment_available(deployment: Mapping[str, Any] | None) -> bool:
    """True when the Deployment's current generation is rolled out and Available."""
    if not deployment:
        return False
    status = deployment.get("status") or {}
    spec = deployment.get("spec") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    if generation is not None and status.get("observedGeneration", 0) < generation:
        return False
    wanted = spec.get("replicas", 1)
    if (status.get("availableReplicas") or 0) < wanted or (status.get("updatedReplicas") or 0) < wanted:
        return False
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return conditions.get("Available") == "True"
