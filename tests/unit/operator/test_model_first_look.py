"""An endpoint applied together with its model waits quietly for the model's first status: no
Pending status and no Event for the fraction of a second the model's own reconcile takes (two
writes per endpoint at scale), but it still says what it waits for once the grace is over or
once it has a status to keep current."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from tests.unit.operator.test_monitoring import _Kube

from stt_operator.api.common import iso
from stt_operator.controllers import modeldeployment as controller
from stt_operator.controllers.context import OperatorContext
from stt_operator.rollout.history import ANNOTATION_UNDO
from stt_operator.rollout.selection import FIRST_LOOK_GRACE_S, model_first_look_pending
from stt_operator.settings import OperatorSettings

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)


def model(age_s: float | None, status: dict[str, Any] | None = None, now: datetime = NOW) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "model-a", "namespace": "ns"}
    if age_s is not None:
        meta["creationTimestamp"] = iso(now - timedelta(seconds=age_s))
    body: dict[str, Any] = {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "STTModel",
        "metadata": meta,
        "spec": {},
    }
    if status is not None:
        body["status"] = status
    return body


@pytest.mark.parametrize(
    ("found", "pending"),
    [
        (None, False),  # missing: ModelNotFound is said at once
        (model(1), True),
        (model(1, {}), True),
        (model(1, {"phase": "Pending"}), True),  # no conditions yet: not looked at
        (
            model(1, {"conditions": [{"type": "Ready", "status": "False", "reason": "ValidationPending"}]}),
            False,
        ),
        (model(FIRST_LOOK_GRACE_S + 1), False),  # its reconcile is late: say so
        (model(None), False),  # no creation time to judge by
        (model(-(FIRST_LOOK_GRACE_S + 1)), False),  # this clock is far behind the apiserver's
        (model(-1), True),  # a little behind
    ],
)
def test_only_a_new_model_nobody_looked_at_is_waited_for_quietly(
    found: dict[str, Any] | None, pending: bool
) -> None:
    assert model_first_look_pending(found, NOW) is pending


def endpoint(status: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "asr", "namespace": "ns", "generation": 1, "uid": "u1", "annotations": {}},
        "spec": {"model": {"name": "model-a"}, "strategy": {"type": "Immediate"}},
    }
    if status is not None:
        body["status"] = status
    return body


def reconcile(
    body: dict[str, Any], found: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[kopf.Patch, float | None, list[str]]:
    events: list[str] = []
    monkeypatch.setattr(kopf, "event", lambda *_a, reason, **_k: events.append(reason))
    kube = _Kube([found])
    ctx = OperatorContext(settings=OperatorSettings(capacity_preflight=False), kube=kube)  # type: ignore[arg-type]
    patch = kopf.Patch()
    requeue = controller.reconcile(body, patch, ctx)
    assert kube.applied == []  # nothing is served before the model is Ready
    return patch, requeue, events


def test_a_new_endpoint_writes_nothing_while_its_new_model_is_unreconciled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    patch, requeue, events = reconcile(endpoint(None), model(0, now=datetime.now(UTC)), monkeypatch)
    assert dict(patch) == {} and events == []
    assert requeue == controller.WAITING_REQUEUE_S  # a backstop; the model's Ready wakes it first


def test_past_the_grace_the_endpoint_says_what_it_waits_for(monkeypatch: pytest.MonkeyPatch) -> None:
    late = model(FIRST_LOOK_GRACE_S + 5, now=datetime.now(UTC))
    patch, requeue, events = reconcile(endpoint(None), late, monkeypatch)
    assert patch["status"]["phase"] == "Pending"
    ready = next(c for c in patch["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ModelNotReady")
    assert "not reconciled yet" in ready["message"]
    assert events == ["ModelNotReady"] and requeue == controller.WAITING_REQUEUE_S


def test_an_endpoint_with_a_status_keeps_it_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """A serving endpoint moved to a new, not yet reconciled model says so at once (its status
    would otherwise show the old model as what Git declares)."""
    status = {"phase": "Healthy", "stableModel": "model-old", "declaredModel": "model-old"}
    patch, _, events = reconcile(endpoint(status), model(0, now=datetime.now(UTC)), monkeypatch)
    assert patch["status"]["declaredModel"] == "model-a"
    assert patch["status"]["phase"] == "Pending" and events == ["ModelNotReady"]


def test_an_event_from_a_history_request_is_not_withheld(monkeypatch: pytest.MonkeyPatch) -> None:
    """An undo asked of a brand-new endpoint is answered (UndoFailed: no history), even while
    its model has no status yet; its annotation is consumed, so the Event must go out now."""
    body = endpoint(None)
    body["metadata"]["annotations"] = {ANNOTATION_UNDO: "1"}
    patch, _, events = reconcile(body, model(0, now=datetime.now(UTC)), monkeypatch)
    assert "UndoFailed" in events
    assert patch["metadata"]["annotations"][ANNOTATION_UNDO] is None
    assert patch["status"]["phase"] == "Pending"
