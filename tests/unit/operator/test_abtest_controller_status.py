"""The ABTest controller on typed status: the status is parsed once (leniently), the planner's
new ABTestStatus becomes merge-patch fields, and the legacy p-value annotation goes once the
sequential state is written."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from stt_harness.resources import ab_test
from stt_operator.analysis.model import AnalysisResult, MetricResult
from stt_operator.controllers import abtest as controller
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.looks import LEGACY_P_STATE
from stt_operator.experiments.planner import Measurement, iso
from stt_operator.rollout.transitions import ANNOTATION_HELD_BY
from stt_operator.settings import OperatorSettings

NAME, NS, MD = "t", "ns", "asr"


class FakeKube:
    """Reads from a fixed set of objects; this test checks what the reconcile writes to status."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = objects

    def get(self, api: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def list(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    def list_visible(self, *args: Any) -> list[dict[str, Any]]:
        return []


def body(status: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    manifest = ab_test(NAME, NS, MD)
    manifest["metadata"].update(uid="u", generation=1, annotations=annotations or {})
    return {**manifest, "status": status}


def ctx(objects: dict[tuple[str, str], dict[str, Any]]) -> OperatorContext:
    return OperatorContext(settings=OperatorSettings(), kube=FakeKube(objects))  # type: ignore[arg-type]


def test_a_rejected_status_field_is_ignored_and_defaults_are_never_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    patch = kopf.Patch()
    with caplog.at_level(logging.WARNING):
        controller.reconcile(body({"phase": "Bogus"}), patch, ctx({}))
    assert "status.phase" in caplog.text
    status = dict(patch.status)
    assert status["phase"] == "Pending" and status["variantSummary"] == "a=50% b=50%"
    assert status["message"] == "ModelDeployment asr not found in ns"
    # Lists the planner did not assign stay unwritten (their defaults are never written).
    assert set(status) == {"phase", "message", "variantSummary", "conditions", "observedGeneration"}


def test_writing_the_sequential_state_removes_the_legacy_annotation(monkeypatch: pytest.MonkeyPatch) -> None:
    wer = MetricResult(
        "wer",
        "Inconclusive",
        "wer Inconclusive",
        samples={"candidate": 3},
        details={"p_raw": {"maxRelativeIncrease 0.05": (0.5, 0.2)}},
    )
    measurement = Measurement({"b": AnalysisResult("Inconclusive", "m", (wer,))})
    monkeypatch.setattr(controller, "measure_abtest", lambda *args: measurement)
    monkeypatch.setattr(controller, "apply_abtest", lambda *args: None)  # no objects: status only
    md = {"metadata": {"name": MD, "annotations": {ANNOTATION_HELD_BY: NAME}}, "spec": {}, "status": {}}
    # Started just now: the look is an interim one (the reconcile's clock is the real one).
    running = {"phase": "Running", "startedAt": iso(datetime.now(UTC))}
    patch = kopf.Patch()
    controller.reconcile(body(running, {LEGACY_P_STATE: "{}"}), patch, ctx({("ModelDeployment", MD): md}))
    assert patch["metadata"]["annotations"] == {LEGACY_P_STATE: None}
    assert patch.status["sequential"] == [
        {"variant": "b", "rule": "wer/maxRelativeIncrease 0.05", "pFail": 0.5, "pPass": 0.2}
    ]
    assert "phase" not in patch.status and "startedAt" not in patch.status
