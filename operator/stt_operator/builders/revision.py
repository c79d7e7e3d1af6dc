"""Resolve one revision's serving parameters from its STTModel and the ModelDeployment spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stt_operator.builders.modelconfig import model_config_map_name, triton_model_name
from stt_operator.builders.serving import TRITON_HTTP_PORT, Revision, ServingParams
from stt_operator.triton.pod import TritonPodParams, scrape_metadata, triton_pod_spec

# Formats and backends that run only on a GPU: Triton's TensorRT backend has no CPU instances.
_GPU_ONLY_FORMATS = ("tensorrt-plan",)
_GPU_ONLY_BACKENDS = ("tensorrt",)


def effective_gpus(model: Mapping[str, Any], resources_override: Mapping[str, Any] | None) -> int:
    """GPUs each serving pod gets: the ModelDeployment's override, else the STTModel's resources."""
    spec = model.get("spec") or {}
    resources = dict(resources_override or spec.get("resources") or {})
    return int(resources.get("gpu", 1))


def _instance_kind(spec: Mapping[str, Any]) -> str:
    group = (spec.get("triton") or {}).get("instanceGroup") or {}
    return str(group.get("kind") or "KIND_GPU")


def served_instance_kind(model: Mapping[str, Any], gpus: int) -> str | None:
    """The instance kind the served config.pbtxt must carry when it differs from the STTModel's.

    A pod without GPUs (a ModelDeployment's `resources.gpu: 0` over a KIND_GPU model) serves
    the model with KIND_CPU instances: the init container rewrites the instance group. Call
    `gpu_required_reason` first; a model that cannot run on a CPU is never rewritten."""
    if gpus == 0 and _instance_kind(model.get("spec") or {}) != "KIND_CPU":
        return "KIND_CPU"
    return None


def gpu_required_reason(model: Mapping[str, Any], gpus: int) -> str | None:
    """Why the STTModel cannot be served by pods with `gpus` GPUs (None: it can): none at all
    for a GPU-only model, or fewer than its pinned GPU ids need.

    Admission checks each object on its own; this is the check across the two (a
    ModelDeployment's `spec.resources.gpu` against the STTModel it serves)."""
    spec = model.get("spec") or {}
    triton = spec.get("triton") or {}
    name = (model.get("metadata") or {}).get("name", "")
    ids = [int(g) for g in (triton.get("instanceGroup") or {}).get("gpus") or []]
    if gpus > 0:
        if ids and max(ids) >= gpus:  # a pod sees only its own GPUs, numbered from 0
            return (
                f"spec.resources.gpu is {gpus} but STTModel {name} pins GPU ids {ids} in"
                f" triton.instanceGroup.gpus; set spec.resources.gpu to at least {max(ids) + 1}"
            )
        return None
    fmt = spec.get("format")
    backend = triton.get("backend")
    why: str | None = None
    if fmt in _GPU_ONLY_FORMATS or backend in _GPU_ONLY_BACKENDS:
        why = f"its format {fmt} (Triton backend tensorrt) runs only on a GPU"
    elif triton.get("tensorrtFp16"):
        why = "its triton.tensorrtFp16 accelerator runs only on a GPU"
    elif (triton.get("instanceGroup") or {}).get("gpus"):
        why = "its triton.instanceGroup.gpus pins GPU ids"
    if why is None:
        return None
    return (
        f"spec.resources.gpu is 0 but STTModel {name} cannot be served without a GPU: {why};"
        " set spec.resources.gpu to at least 1 or remove the override"
    )


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
        instance_kind=served_instance_kind(model, int(resources.get("gpu", 1))),
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
