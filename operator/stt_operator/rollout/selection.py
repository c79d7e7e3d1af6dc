"""`spec.selector`: which Ready STTModel an endpoint serves, picked by the statistics package's
`select_best_model` from what each model's status says it measured.

Measurements: `status.validation` (WER, CER, p95 latency on the labelled set) first, the live
`status.analytics` entry of the model's language for what validation lacks (confidence). A
model without the measurement a criterion needs is dropped with that reason, never guessed.
The selected model then rolls out like any `spec.model` change, through the strategy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stt_operator.api.common import get_condition
from stt_operator.api.modeldeployment import PHASE_FAILED, PHASE_PENDING, ModelDeploymentSpec, ModelSelector
from stt_operator.builders.revision import effective_gpus, gpu_required_reason
from stt_operator.stats.selection import Criteria, ModelSummary, Selection, select_best_model


def _ready(model: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (model.get("status") or {}).get("conditions") or []
    )


def summary(model: Mapping[str, Any]) -> ModelSummary:
    spec, status = model.get("spec") or {}, model.get("status") or {}
    validation = status.get("validation") or {}
    language = spec.get("language")
    live = next((a for a in status.get("analytics") or [] if a.get("language") == language), {})

    def pick(key: str) -> float | None:
        value = validation.get(key)
        return float(value) if value is not None else live.get(key)

    return ModelSummary(
        name=model["metadata"]["name"],
        language=language,
        language_pair=spec.get("languagePair"),
        wer=pick("wer"),
        cer=pick("cer"),
        latency_p95_ms=pick("latencyP95Ms"),
        confidence=live.get("confidence"),
        throughput_rps=live.get("throughputRps"),
        real_time_factor=validation.get("realTimeFactor"),
        ready=_ready(model),
    )


def criteria(selector: ModelSelector) -> Criteria:
    """The statistics package's criteria for `selector` (its language or pair, and the API's
    `SelectionCriteria`; stats imports no API model, so the conversion lives here)."""
    c = selector.criteria
    return Criteria(
        language=selector.language,
        language_pair=selector.language_pair,
        max_wer=c.max_wer if c else None,
        max_latency_p95_ms=c.max_latency_p95_ms if c else None,
        min_confidence=c.min_confidence if c else None,
        optimize=c.optimize if c else "wer",
    )


def select_model(selector: ModelSelector, models: Sequence[Mapping[str, Any]]) -> Selection:
    """The best model among `models` (STTModel bodies) for `selector`. Label matching happens
    here; language, criteria and ranking in `select_best_model`."""
    labels = selector.match_labels or {}
    candidates = [
        summary(m)
        for m in models
        if all(((m.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items())
    ]
    return select_best_model(candidates, criteria(selector))


REASON_GPU_REQUIRED = "GPURequired"


@dataclass(frozen=True)
class ModelBlocker:
    """Why the endpoint cannot serve its model yet: Pending (look again soon) or Failed (only a
    change to the model or the endpoint helps)."""

    reason: str
    message: str
    phase: str  # Pending | Failed


def model_blocker(
    model_name: str, namespace: str, model: Mapping[str, Any] | None, spec: ModelDeploymentSpec
) -> ModelBlocker | None:
    """None when STTModel `model_name` (its body, None if missing) can be served as `spec` asks."""
    if model is None:
        return ModelBlocker(
            "ModelNotFound", f"STTModel {model_name} not found in namespace {namespace}", "Pending"
        )
    conditions = (model.get("status") or {}).get("conditions") or []
    validated = get_condition(conditions, "Validated") or {}
    if validated.get("status") == "False":
        message = f"STTModel {model_name} failed validation: {validated.get('message', '')}"
        return ModelBlocker("ModelFailedValidation", message, PHASE_FAILED)
    ready = get_condition(conditions, "Ready") or {}
    if ready.get("status") != "True":
        why = ready.get("message") or "not reconciled yet"
        return ModelBlocker("ModelNotReady", f"STTModel {model_name} is not Ready: {why}", PHASE_PENDING)
    # Admission sees one object at a time; `resources.gpu: 0` over a GPU-only model is caught here.
    resources = spec.resources.to_dict() if spec.resources else None
    gpu_conflict = gpu_required_reason(model, effective_gpus(model, resources))
    if gpu_conflict is not None:
        return ModelBlocker(REASON_GPU_REQUIRED, gpu_conflict, PHASE_FAILED)
    return None
