"""Retry and undo requests on the revision history (rollout/history.py)."""

from __future__ import annotations

from typing import Any

from stt_operator.api.modeldeployment import ModelDeploymentStatus
from stt_operator.rollout.history import (
    ANNOTATION_RETRY,
    ANNOTATION_UNDO,
    REVISION_RETRIED,
    plan_history_requests,
)


def history() -> list[dict[str, Any]]:
    return [
        {
            "revision": 1,
            "revisionId": "r-a",
            "model": "model-a",
            "modelDigest": "sha256:a",
            "outcome": "Superseded",
        },
        {
            "revision": 2,
            "revisionId": "r-b",
            "model": "model-b",
            "modelDigest": "sha256:b",
            "outcome": "Serving",
        },
        {
            "revision": 3,
            "revisionId": "r-c",
            "model": "model-c",
            "modelDigest": "sha256:c",
            "outcome": "RolledBack",
        },
    ]


STATUS = ModelDeploymentStatus.model_validate(
    {"stableRevision": "r-b", "stableModel": "model-b", "revisions": history()}
)
DIGESTS = {"model-a": "sha256:a", "model-b": "sha256:b", "model-c": "sha256:c"}


def plan(annotations: dict[str, str], spec_model: str | None = "model-c", limit: int = 10, **digests: str):
    known = {**DIGESTS, **digests}
    return plan_history_requests(annotations, STATUS, spec_model, limit, known.get)


def test_retry_marks_the_newest_rolled_back_revision_and_is_consumed() -> None:
    p = plan({ANNOTATION_RETRY: "x"})
    assert p.consumed == [ANNOTATION_RETRY]
    assert [r.outcome for r in p.revisions] == ["Superseded", "Serving", REVISION_RETRIED]
    assert [(e.type, e.reason) for e in p.events] == [("Normal", "RetryRequested")]
    assert p.model is None


def test_retry_without_a_rolled_back_revision_is_refused() -> None:
    status = ModelDeploymentStatus.model_validate({"revisions": history()[:2]})
    p = plan_history_requests({ANNOTATION_RETRY: "1"}, status, "model-b", 10, DIGESTS.get)
    assert p.revisions is None and [e.reason for e in p.events] == ["RetryIgnored"]


def test_undo_points_spec_model_at_the_recorded_revision() -> None:
    p = plan({ANNOTATION_UNDO: "1"}, spec_model="model-b")
    assert p.model == "model-a" and p.consumed == [ANNOTATION_UNDO]
    assert "revision 1" in p.events[0].message and p.events[0].type == "Normal"


def test_undo_to_a_rolled_back_revision_retries_it() -> None:
    p = plan({ANNOTATION_UNDO: "3"}, spec_model="model-b")
    assert p.model == "model-c" and p.revisions[-1].outcome == REVISION_RETRIED


def test_undo_refuses_a_revision_dropped_by_the_history_limit() -> None:
    p = plan({ANNOTATION_UNDO: "1"}, limit=2)
    assert p.model is None
    assert [r.revision for r in p.revisions] == [2, 3]  # the lowered limit trims the history
    assert p.events[0].reason == "UndoFailed" and "kept: 2, 3" in p.events[0].message
    assert "revisionHistoryLimit 2" in p.events[0].message


def test_undo_refuses_a_changed_model_a_selector_and_garbage() -> None:
    changed = plan({ANNOTATION_UNDO: "1"}, **{"model-a": "sha256:new"})
    assert changed.model is None and "changed since revision 1" in changed.events[0].message
    selector = plan({ANNOTATION_UNDO: "1"}, spec_model=None)
    assert selector.model is None and "spec.selector" in selector.events[0].message
    bad = plan({ANNOTATION_UNDO: "two"})
    assert bad.model is None and "not a revision number" in bad.events[0].message
    gone = plan_history_requests({ANNOTATION_UNDO: "1"}, STATUS, "model-b", 10, lambda m: None)
    assert gone.model is None and "no longer exists" in gone.events[0].message


def test_undo_to_the_serving_revision_changes_nothing() -> None:
    p = plan({ANNOTATION_UNDO: "2"}, spec_model="model-b")
    assert p.model is None and p.revisions is None and p.events[0].reason == "UndoRequested"


def test_no_request_no_change() -> None:
    p = plan({})
    assert p.model is None and p.revisions is None and not p.events and not p.consumed
