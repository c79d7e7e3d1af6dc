"""The ConfigMap that carries an STTModel's rendered Triton `config.pbtxt`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stt_operator.builders.metadata import LABEL_MODEL, common_labels, dns_name, object_metadata


def triton_model_name(model_name: str) -> str:
    """The model's name inside Triton's repository: the STTModel name (already DNS-safe)."""
    return model_name


def model_config_map_name(model_name: str) -> str:
    return dns_name(model_name, "triton-config", max_length=253)


def model_config_map(
    model_name: str,
    namespace: str,
    config_pbtxt: str,
    *,
    triton_model_name: str,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    labels = common_labels(model_name, "model-config", name="stt-model")
    labels[LABEL_MODEL] = model_name
    annotations = {"stt.dev/triton-model-name": triton_model_name}
    metadata = object_metadata(model_config_map_name(model_name), namespace, labels, owner, annotations)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {"config.pbtxt": config_pbtxt},
    }
