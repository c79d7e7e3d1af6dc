"""Resolve one revision's serving parameters from its STTModel and the ModelDeployment spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stt_operator.builders.modelconfig import model_config_map_name, triton_model_name
from stt_operator.builders.serving import TRITON_HTTP_PORT, Revision, ServingParams
from stt_operator.triton.pod import TritonPodParams, scrape_metadata, triton_pod_spec


def serving_params(
    *,
    deployment_name: str,
    namespace: str,
    revision: Revision,
    role: str,
    model: Mapping[str, Any],
    replicas: int,
    resources_override: Mapping[str, Any] | None,
    triton_image: str,
    operator_image: str,
    owner: Mapping[str, Any] | None,
    http_port: int = TRITON_HTTP_PORT,
) -> ServingParams:
    """`model` is the STTModel body as read from the API (camelCase)."""
    model_name = model["metadata"]["name"]
    spec = model.get("spec") or {}
    source = spec.get("source") or {}
    triton = spec.get("triton") or {}
    resources = dict(resources_override or spec.get("resources") or {})
    status = model.get("status") or {}
    pod = TritonPodParams(
        model_name=triton_model_name(model_name),
        config_map=status.get("tritonConfigMap") or model_config_map_name(model_name),
        artifact_uri=source.get("uri", ""),
        artifact_sha256=source.get("sha256"),
        archive=source.get("archive"),
        credentials_secret=(source.get("secretRef") or {}).get("name"),
        image=triton.get("image") or triton_image,
        fetcher_image=operator_image,
        gpus=int(resources.get("gpu", 1)),
        cpu=resources.get("cpu"),
        memory=resources.get("memory"),
        limits=dict(resources.get("limits") or {}),
        max_fetch_bytes=source.get("maxSizeBytes"),
    )
    scrape = scrape_metadata()
    return ServingParams(
        deployment_name=deployment_name,
        namespace=namespace,
        revision=revision,
        role=role,
        pod_spec=triton_pod_spec(pod),
        replicas=replicas,
        owner=dict(owner) if owner else None,
        pod_labels=scrape["labels"],
        pod_annotations=scrape["annotations"],
        http_port=http_port,
    )
