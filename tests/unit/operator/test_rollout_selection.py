"""spec.selector: the endpoint's model picked from what the STTModels measured."""

from __future__ import annotations

from typing import Any

import pytest

from stt_operator.api.modeldeployment import ModelDeploymentStatus, ModelSelector, RevisionRecord
from stt_operator.rollout.selection import criteria, select_model, summary
from stt_operator.stats.selection import Criteria


def model(
    name: str,
    *,
    language: str = "en-US",
    wer: float | None = None,
    latency: float | None = None,
    confidence: float | None = None,
    ready: bool = True,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    validation = {k: v for k, v in (("wer", wer), ("latencyP95Ms", latency)) if v is not None}
    if validation:
        status["validation"] = validation
    if confidence is not None:
        status["analytics"] = [{"language": language, "confidence": confidence, "wer": 0.9}]
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"language": language},
        "status": status,
    }


def selector(**kw: Any) -> ModelSelector:
    return ModelSelector.model_validate(kw)


MODELS = [
    model("small", wer=0.12, latency=40),
    model("large", wer=0.07, latency=180, confidence=0.8),
    model("german", language="de-DE", wer=0.05, latency=50),
    model("broken", wer=0.01, latency=10, ready=False),
    model("unmeasured"),
]


@pytest.mark.parametrize(
    ("sel", "best"),
    [
        ({"language": "en-US"}, "large"),
        ({"language": "en-US", "criteria": {"optimize": "latency"}}, "small"),
        ({"language": "en-US", "criteria": {"maxLatencyP95Ms": 100}}, "small"),
        ({"language": "de-DE"}, "german"),
        ({"language": "en-US", "criteria": {"minConfidence": 0.9}}, None),
        ({"matchLabels": {"tier": "gold"}}, None),
    ],
)
def test_selection_table(sel: dict[str, Any], best: str | None) -> None:
    assert select_model(selector(**sel), MODELS).best == best


def test_labels_filter_and_reasons_for_the_dropped() -> None:
    models = [*MODELS, model("gold", wer=0.2, latency=30, labels={"tier": "gold"})]
    assert select_model(selector(matchLabels={"tier": "gold"}), models).best == "gold"
    none = select_model(selector(language="en-US", criteria={"maxWer": 0.05}), MODELS)
    assert none.best is None
    assert "wer 0.07 violates <= 0.05" in none.explanation and "not Ready" in none.explanation
    assert "wer unknown" in none.explanation  # never guessed


def test_the_selector_becomes_the_statistics_criteria() -> None:
    sel = selector(language="en-US", criteria={"maxWer": 0.1, "minConfidence": 0.7, "optimize": "latency"})
    assert criteria(sel) == Criteria(language="en-US", max_wer=0.1, min_confidence=0.7, optimize="latency")
    assert criteria(selector(languagePair="en>es")) == Criteria(language_pair="en>es")


def test_summary_prefers_validation_and_takes_confidence_from_live_analytics() -> None:
    s = summary(MODELS[1])
    assert (s.wer, s.latency_p95_ms, s.confidence, s.ready) == (0.07, 180, 0.8, True)


def test_model_blocker_names_why_the_endpoint_cannot_serve_its_model() -> None:
    from stt_operator.api import ModelDeployment
    from stt_operator.rollout.selection import model_blocker

    spec = ModelDeployment.spec_from({"model": {"name": "m"}}, name="asr")
    no_gpu = ModelDeployment.spec_from({"model": {"name": "m"}, "resources": {"gpu": 0}}, name="asr")

    def body(validated: str, ready: str, **triton: Any) -> dict[str, Any]:
        conditions = [
            {"type": "Validated", "status": validated, "message": "bad signature"},
            {"type": "Ready", "status": ready, "message": "validating"},
        ]
        return {
            "metadata": {"name": "m"},
            "spec": {"format": "tensorrt-plan", "source": {"uri": "file:///m"}, "triton": triton},
            "status": {"conditions": conditions},
        }

    missing = model_blocker("m", "ns", None, spec)
    assert missing is not None and (missing.reason, missing.phase) == ("ModelNotFound", "Pending")
    failed = model_blocker("m", "ns", body("False", "False"), spec)
    assert failed is not None and (failed.reason, failed.phase) == ("ModelFailedValidation", "Failed")
    assert "bad signature" in failed.message
    pending = model_blocker("m", "ns", body("Unknown", "False"), spec)
    assert pending is not None and (pending.reason, pending.phase) == ("ModelNotReady", "Pending")
    assert model_blocker("m", "ns", body("True", "True"), spec) is None
    gpu = model_blocker("m", "ns", body("True", "True"), no_gpu)  # a TensorRT plan needs its GPU
    assert gpu is not None and (gpu.reason, gpu.phase) == ("GPURequired", "Failed")


def test_the_capacity_preflight_asks_only_before_a_new_revisions_stack_exists() -> None:
    from stt_operator.builders.serving import Revision
    from stt_operator.rollout.plan import ObservedRevision
    from stt_operator.rollout.transitions import needs_preflight

    new = Revision("m", "sha256:b")
    status = ModelDeploymentStatus(stable_revision="old", revisions=[])
    assert needs_preflight(status, new, {}, None)
    assert not needs_preflight(
        ModelDeploymentStatus(), new, {}, None
    )  # first deployment: nothing serves to protect
    assert not needs_preflight(status, new, {new.id: ObservedRevision(new.id, "m", False)}, None)
    assert not needs_preflight(status, new, {}, "abtest-1")  # an A/B test holds the endpoint
    entry = RevisionRecord(revision=1, revision_id=new.id, model="m", outcome="RolledBack")
    rolled_back = status.model_copy(update={"revisions": [entry]})
    assert not needs_preflight(rolled_back, new, {}, None)


def test_plan_selection_picks_announces_a_change_and_skips_rolled_back_revisions() -> None:
    from stt_operator.api import ModelDeployment
    from stt_operator.builders.serving import Revision, model_digest
    from stt_operator.rollout.selection import ModelBlocker, Selected, plan_selection

    spec = ModelDeployment.spec_from({"selector": {"language": "en-US"}}, name="asr")
    first = plan_selection(spec, ModelDeploymentStatus(), MODELS, "ns")
    assert isinstance(first, Selected) and first.model == "large"
    assert first.event is not None and (first.event.type, first.event.reason) == ("Normal", "ModelSelected")
    again = plan_selection(spec, ModelDeploymentStatus(selected_model="large"), MODELS, "ns")
    assert again == Selected("large")  # the same pick says nothing
    large = Revision("large", model_digest(MODELS[1]))
    entry = RevisionRecord(revision=1, revision_id=large.id, model="large", outcome="RolledBack")
    after_rollback = plan_selection(spec, ModelDeploymentStatus(revisions=[entry]), MODELS, "ns")
    assert isinstance(after_rollback, Selected) and after_rollback.model == "small"
    strict = ModelDeployment.spec_from(
        {"selector": {"language": "en-US", "criteria": {"maxWer": 0.01}}}, name="asr"
    )
    none = plan_selection(strict, ModelDeploymentStatus(), MODELS, "ns")
    assert isinstance(none, ModelBlocker) and (none.reason, none.phase) == ("NoModelSelected", "Pending")
    assert none.message.startswith("no STTModel in ns fits spec.selector: ")


@pytest.mark.parametrize(
    ("previous", "phase", "event"),
    [
        (None, "Pending", ("Normal", "ModelNotReady")),
        ({"type": "Ready", "status": "True", "reason": "Serving"}, "Pending", ("Normal", "ModelNotReady")),
        (
            {"type": "Ready", "status": "False", "reason": "ModelNotFound"},
            "Pending",
            ("Normal", "ModelNotReady"),
        ),
        ({"type": "Ready", "status": "False", "reason": "ModelNotReady"}, "Pending", None),
        (None, "Failed", ("Warning", "ModelNotReady")),
        ({"type": "Ready", "status": "False", "reason": "ModelNotReady"}, "Failed", None),
    ],
)
def test_waiting_sets_ready_and_progressing_and_says_it_once(
    previous: dict[str, str] | None, phase: str, event: tuple[str, str] | None
) -> None:
    from stt_operator.rollout.plan import ConditionUpdate
    from stt_operator.rollout.selection import ModelBlocker, waiting

    outcome = waiting(ModelBlocker("ModelNotReady", "STTModel m is not Ready: x", phase), previous)
    assert outcome.phase == phase
    assert outcome.conditions == (
        ConditionUpdate("Ready", "False", "ModelNotReady", "STTModel m is not Ready: x"),
        ConditionUpdate("Progressing", "False", "ModelNotReady", "STTModel m is not Ready: x"),
    )
    assert [(e.type, e.reason) for e in outcome.events] == ([event] if event else [])
    assert all(e.message == "STTModel m is not Ready: x" for e in outcome.events)
