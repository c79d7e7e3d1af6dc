"""No Prometheus configured or allowed: the analysis is unavailable, not failing.

The rollout holds where it is (no promotion, no rollback, no Error looks piling up in status),
with one AnalysisUnavailable condition naming the setting, one Event and one log line; it
goes on by itself once a look is possible."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from stt_operator.analysis.model import AnalysisResult
from stt_operator.analysis.prom import NOT_CONFIGURED
from stt_operator.controllers.modeldeployment import _analysis_availability
from stt_operator.controllers.status import StatusWriter
from tests.unit.operator.test_rollout_strategies import ANALYSIS, NEW, OLD, World, canary, result, spec_of

UNAVAILABLE = AnalysisResult("Error", NOT_CONFIGURED, (), unavailable="NoPrometheus")


def test_canary_holds_without_prometheus_and_goes_on_when_it_answers() -> None:
    w = World(canary({"setWeight": 30}, {"analysis": {}}, **ANALYSIS))
    w.begin()
    for _ in range(8):
        plan = w.step(lambda r: UNAVAILABLE, advance_s=10)
        assert plan.route == {OLD.id: 70, NEW.id: 30}  # held at the step's weight
        assert plan.delete == []
    assert w.status["phase"] == "Paused"
    paused = w.condition("Paused")
    assert paused["reason"] == "AnalysisUnavailable" and "config.prometheusUrl" in paused["message"]
    # Not a look: nothing counted, no Error runs piling up, nothing rolled back or promoted.
    assert not w.status.get("analysisRuns")
    assert w.status["analysis"]["failures"] == 0 and w.status["analysis"]["inconclusive"] == 0
    assert "lastRollback" not in w.status and w.status["stableRevision"] == OLD.id
    assert w.reasons().count("AnalysisUnavailable") == 1  # one Event, when the hold begins
    # Between looks the hold stays (reconciles come more often than looks).
    for _ in range(3):
        w.step(advance_s=2)
        assert w.condition("Paused")["reason"] == "AnalysisUnavailable"
    w.step(lambda r: result("Passed"), advance_s=10)
    assert w.status["stableRevision"] == NEW.id


def test_blue_green_pre_promotion_analysis_holds_without_prometheus() -> None:
    spec = spec_of({"type": "BlueGreen", "blueGreen": {"prePromotionAnalysis": True}}, **ANALYSIS)
    w = World(spec)
    w.begin()
    for _ in range(5):
        plan = w.step(lambda r: UNAVAILABLE, advance_s=10)
        assert plan.route == {OLD.id: 100, NEW.id: 0}
    assert w.condition("Paused")["reason"] == "AnalysisUnavailable"
    assert w.status["stableRevision"] == OLD.id and "lastRollback" not in w.status


def _writer(conditions: list[dict[str, Any]] | None = None) -> StatusWriter:
    return StatusWriter({"metadata": {"generation": 1}, "status": {"conditions": conditions or []}})


def _condition(writer: StatusWriter, type_: str) -> dict[str, Any]:
    return next(c for c in writer.conditions if c["type"] == type_)


def test_unavailable_condition_event_and_log_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stt_operator.controllers.modeldeployment")
    first = _writer()
    _analysis_availability(first, "ns", "asr", UNAVAILABLE)
    cond = _condition(first, "AnalysisUnavailable")
    assert (cond["status"], cond["reason"]) == ("True", "NoPrometheus")
    assert "config.prometheusUrl" in cond["message"] and "holds" in cond["message"]
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "NoPrometheus")]
    # Every later interval: the same condition, no new Event, no new log line.
    again = _writer(first.conditions)
    for _ in range(5):
        _analysis_availability(again, "ns", "asr", UNAVAILABLE)
    assert again.events == []
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
    # Prometheus answers: the condition turns False.
    answered = _writer(again.conditions)
    _analysis_availability(answered, "ns", "asr", result("Passed"))
    assert _condition(answered, "AnalysisUnavailable")["reason"] == "PrometheusAvailable"
    assert _condition(answered, "AnalysisUnavailable")["status"] == "False"


def test_unavailable_condition_clears_when_nothing_waits_any_more() -> None:
    held = _writer()
    _analysis_availability(held, "ns", "asr", UNAVAILABLE)
    # A reconcile between looks while the hold is on keeps it.
    between = _writer(held.conditions)
    between.condition("Paused", "True", "AnalysisUnavailable", "held")
    _analysis_availability(between, "ns", "asr", None)
    assert _condition(between, "AnalysisUnavailable")["status"] == "True"
    # Promoted by a person: no analysis waits, the condition says so.
    promoted = _writer(held.conditions)
    promoted.condition("Paused", "False", "NotPaused", "")
    _analysis_availability(promoted, "ns", "asr", None)
    assert _condition(promoted, "AnalysisUnavailable")["reason"] == "AnalysisNotRunning"
    # Never unavailable: no condition at all.
    quiet = _writer()
    _analysis_availability(quiet, "ns", "asr", None)
    assert not [c for c in quiet.conditions if c["type"] == "AnalysisUnavailable"]
