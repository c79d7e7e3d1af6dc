"""The STTModel an accepted quantized artifact becomes: the float model's contract, language
and serving, the new file pinned by digest, owned by the float model (deleted with it). The
STTModel planner (catalog/planner.py) applies it once the quantization Job's verdict is in."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from stt_operator import API_GROUP
from stt_operator.builders.metadata import dns_name, owner_reference

# The derived model's name suffix, by quantization mode.
SUFFIX = {"dynamic-int8": "int8", "static-int8": "int8-qdq", "fp16": "fp16"}


def derived_model(
    model_name: str, spec: Mapping[str, Any], mode: str, output_uri: str, digest: str
) -> tuple[str, dict[str, Any]]:
    """Name and spec of the STTModel a quantized artifact becomes (owned by the float model):
    same contract, language and serving, the new file pinned by digest, no further quantization."""
    derived = json.loads(json.dumps(dict(spec)))
    derived["source"] = {"uri": output_uri, "sha256": digest}
    derived["format"] = "onnx"
    derived.pop("quantization", None)
    note = f"{mode} quantization of {model_name}"
    derived["description"] = f"{derived.get('description', '')} ({note})".strip()[:1024]
    return dns_name(model_name, SUFFIX[mode]), derived


QUANTIZED_FROM_LABEL = "stt.dev/quantized-from"


def derived_model_object(model_body: Mapping[str, Any], digest: str) -> dict[str, Any]:
    """The STTModel object of an accepted quantized artifact (`digest`: its sha256): the float
    model's labels plus QUANTIZED_FROM_LABEL, owned by the float model (deleted with it)."""
    meta, spec = model_body["metadata"], model_body.get("spec") or {}
    quantization = spec.get("quantization") or {}
    mode = quantization.get("mode", "dynamic-int8")
    name, derived_spec = derived_model(
        meta["name"], spec, mode, quantization.get("outputUri"), digest.removeprefix("sha256:")
    )
    return {
        "apiVersion": f"{API_GROUP}/v1alpha1",
        "kind": "STTModel",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {**(meta.get("labels") or {}), QUANTIZED_FROM_LABEL: meta["name"]},
            "ownerReferences": [owner_reference(model_body)],
        },
        "spec": derived_spec,
    }
