"""No Prometheus configured or allowed: one AnalysisUnavailable condition naming the setting,
one Event and one log line, not one per interval (the planner's hold is tested in
test_rollout_strategies.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from stt_operator.analysis.model import AnalysisResult
from stt_operator.analysis.prom import NOT_CONFIGURED
from stt_operator.controllers.looks import analysis_availability
from stt_operator.controllers.status import StatusWriter

UNAVAILABLE = AnalysisResult("Error", NOT_CONFIGURED, (), unavailable="NoPrometheus")


def _writer(conditions: list[dict[str, Any]] | None = None) -> StatusWriter:
    return StatusWriter({"metadata": {"generation": 1}, "status": {"conditions": conditions or []}})


def _condition(writer: StatusWriter, type_: str) -> dict[str, Any]:
    return next(c for c in writer.conditions if c["type"] == type_)


def test_unavailable_condition_event_and_log_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stt_operator.controllers.looks")
    first = _writer()
    analysis_availability(first, "ns", "asr", UNAVAILABLE)
    cond = _condition(first, "AnalysisUnavailable")
    assert (cond["status"], cond["reason"]) == ("True", "NoPrometheus")
    assert "config.prometheusUrl" in cond["message"] and "holds" in cond["message"]
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "NoPrometheus")]
    # Every later interval: the same condition, no new Event, no new log line.
    again = _writer(first.conditions)
    for _ in range(5):
        analysis_availability(again, "ns", "asr", UNAVAILABLE)
    assert again.events == []
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
    # Prometheus answers: the condition turns False.
    answered = _writer(again.conditions)
    analysis_availability(answered, "ns", "asr", AnalysisResult("Passed", "wer Passed", ()))
    assert _condition(answered, "AnalysisUnavailable")["reason"] == "PrometheusAvailable"
    assert _condition(answered, "AnalysisUnavailable")["status"] == "False"


def test_unavailable_condition_clears_when_nothing_waits_any_more() -> None:
    held = _writer()
    analysis_availability(held, "ns", "asr", UNAVAILABLE)
    # A reconcile between looks while the hold is on keeps it.
    between = _writer(held.conditions)
    between.condition("Paused", "True", "AnalysisUnavailable", "held")
    analysis_availability(between, "ns", "asr", None)
    assert _condition(between, "AnalysisUnavailable")["status"] == "True"
    # Promoted by a person: no analysis waits, the condition says so.
    promoted = _writer(held.conditions)
    promoted.condition("Paused", "False", "NotPaused", "")
    analysis_availability(promoted, "ns", "asr", None)
    assert _condition(promoted, "AnalysisUnavailable")["reason"] == "AnalysisNotRunning"
    # Never unavailable: no condition at all.
    quiet = _writer()
    analysis_availability(quiet, "ns", "asr", None)
    assert not [c for c in quiet.conditions if c["type"] == "AnalysisUnavailable"]
