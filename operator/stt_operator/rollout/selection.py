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
from datetime import datetime
from typing import Any

from stt_operator.api.common import condition_moved, get_condition, parse_iso
from stt_operator.api.modeldeployment import (
    PHASE_FAILED,
    PHASE_PENDING,
    REVISION_ROLLED_BACK,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelSelector,
)
from stt_operator.builders.revision import effective_gpus, gpu_required_reason
from stt_operator.builders.serving import Revision, model_digest
from stt_operator.rollout.plan import ConditionUpdate, EventUpdate
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


# How long a new STTModel may go without any status before an endpoint waiting on it says so.
FIRST_LOOK_GRACE_S = 30.0


def model_first_look_pending(model: Mapping[str, Any] | None, now: datetime) -> bool:
    """True while `model` exists but its own first reconcile has not written a status, within
    FIRST_LOOK_GRACE_S of its creation: a model applied together with its endpoint (one
    `kubectl apply -f`, one Argo CD sync). An endpoint that has no status yet waits quietly then
    (its model's Ready wakes it) instead of writing Pending and an Event for a fraction of a
    second; past the grace it says what it waits for. A clock this far off the apiserver's
    (either way) never waits quietly."""
    if model is None or ((model.get("status") or {}).get("conditions")):
        return False
    created = parse_iso((model.get("metadata") or {}).get("creationTimestamp"))
    return created is not None and abs((now - created).total_seconds()) < FIRST_LOOK_GRACE_S


@dataclass(frozen=True)
class Selected:
    """The STTModel `spec.selector` picked, and the ModelSelected Event when the pick changed."""

    model: str
    event: EventUpdate | None = None


def plan_selection(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    models: Sequence[Mapping[str, Any]],
    namespace: str,
) -> Selected | ModelBlocker:
    """The best Ready STTModel for `spec.selector` among `models` (the bodies listed by its
    labels), leaving out revisions this endpoint rolled back; a Pending blocker when none fits."""
    assert spec.selector is not None
    rolled_back = {h.revision_id for h in status.revisions if h.outcome == REVISION_ROLLED_BACK}
    kept = [m for m in models if Revision(m["metadata"]["name"], model_digest(m)).id not in rolled_back]
    selection = select_model(spec.selector, kept)
    if selection.best is None:
        message = f"no STTModel in {namespace} fits spec.selector: {selection.explanation}"
        return ModelBlocker("NoModelSelected", message[:1000], PHASE_PENDING)
    if status.selected_model == selection.best:
        return Selected(selection.best)
    return Selected(selection.best, EventUpdate("Normal", "ModelSelected", selection.explanation[:1000]))


@dataclass(frozen=True)
class Waiting:
    """What an endpoint that cannot serve yet writes: its phase, Ready and Progressing False,
    and at most one Event."""

    phase: str
    conditions: tuple[ConditionUpdate, ...]
    events: tuple[EventUpdate, ...]


def waiting(blocker: ModelBlocker, previous_ready: Mapping[str, Any] | None) -> Waiting:
    """The outcome of `blocker` (an invalid spec, no model selected, a model not servable yet).
    `previous_ready`: the Ready condition before this reconcile. The Event goes out only when
    Ready's status or reason changes, so an endpoint waiting across reconciles says it once;
    a Warning when only a change helps (Failed)."""
    reason, message = blocker.reason, blocker.message
    conditions = (
        ConditionUpdate("Ready", "False", reason, message),
        ConditionUpdate("Progressing", "False", reason, message),
    )
    if not condition_moved(previous_ready, "False", reason):
        return Waiting(blocker.phase, conditions, ())
    kind = "Warning" if blocker.phase == PHASE_FAILED else "Normal"
    return Waiting(blocker.phase, conditions, (EventUpdate(kind, reason, message),))
