"""STTModel reconciler: a catalogue entry. It renders the Triton model configuration into a
ConfigMap and reports readiness; it never runs serving pods."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from stt_operator.api import STTModel
from stt_operator.api.common import SpecError
from stt_operator.builders.common import owner_reference
from stt_operator.builders.modelconfig import model_config_map, model_config_map_name, triton_model_name
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.status import StatusWriter
from stt_operator.observability import track_reconcile
from stt_operator.triton.config import render_for_model

log = logging.getLogger(__name__)


def reconcile(body: Mapping[str, Any], patch: kopf.Patch, ctx: OperatorContext) -> None:
    writer = StatusWriter(body)
    meta = body["metadata"]
    with track_reconcile("STTModel"):
        try:
            model = STTModel.from_body(body)
        except SpecError as exc:
            message = str(exc)
            writer.condition("Ready", "False", "InvalidSpec", message)
            writer.set(phase="Failed")
            if writer.changed("Ready"):
                writer.event("Warning", "InvalidSpec", message)
            writer.commit(patch)
            return

        try:
            config_text = render_for_model(triton_model_name(meta["name"]), model.spec)
        except ValueError as exc:
            writer.condition("Rendered", "False", "RenderFailed", str(exc))
            writer.condition("Ready", "False", "RenderFailed", f"Triton configuration: {exc}")
            writer.set(phase="Failed")
            if writer.changed("Rendered"):
                writer.event("Warning", "RenderFailed", str(exc))
            writer.commit(patch)
            return

        config_map = model_config_map(
            meta["name"],
            meta["namespace"],
            config_text,
            triton_model_name=triton_model_name(meta["name"]),
            owner=owner_reference(body),
        )
        ctx.kube.apply(config_map)
        writer.set(tritonConfigMap=model_config_map_name(meta["name"]))
        writer.condition(
            "Rendered",
            "True",
            "ConfigRendered",
            f"config.pbtxt in ConfigMap {config_map['metadata']['name']}",
        )
        if writer.changed("Rendered"):
            writer.event(
                "Normal", "ConfigRendered", f"rendered Triton config into {config_map['metadata']['name']}"
            )

        validation = model.spec.validation
        if validation is not None and not validation.enabled:
            writer.condition(
                "Validated", "True", "ValidationDisabled", "validation disabled in spec.validation.enabled"
            )
        elif writer.old_condition("Validated") is None or writer.old_condition("Validated").get("reason") in (
            None,
            "ValidationDisabled",
        ):
            writer.condition("Validated", "Unknown", "ValidationPending", "waiting for the validation Job")

        validated = next(c for c in writer.conditions if c["type"] == "Validated")
        if validated["status"] == "True":
            writer.condition("Ready", "True", "ModelReady", "rendered and validated; ready to deploy")
            writer.set(phase="Ready")
        elif validated["status"] == "False":
            writer.condition("Ready", "False", "ValidationFailed", validated.get("message", ""))
            writer.set(phase="Failed")
        else:
            writer.condition("Ready", "False", "ValidationPending", validated.get("message", ""))
            writer.set(phase="Validating")
        if writer.changed("Ready") and writer.fields.get("phase") == "Ready":
            writer.event("Normal", "ModelReady", f"model {meta['name']} is ready to deploy")
        writer.commit(patch)
