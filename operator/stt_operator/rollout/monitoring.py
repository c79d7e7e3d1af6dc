"""Monitoring after promotion (spec.monitoring): the pure planner.

While the endpoint is Healthy (the desired revision is the stable one, no rollout in flight),
every `monitoring.interval` the planner asks the controller for one look (a
`MonitoringRequest`: the stable revision's counts over the window since the last tested one),
then judges it with the rule in stats/monitoring.py and returns what to do:

- Passed: nothing; the window advances.
- InsufficientData (fewer than minSamples requests), NoData (no series) or Unavailable
  (Prometheus could not be asked): hold. The window does NOT advance (the next look judges the
  longer window); the `Monitoring` condition says why. Never a verdict.
- Breached: verdict Degraded (once per revision): a Warning Event and the `Degraded` condition;
  with `rollback: true` and a previous good revision in status.revisions, the stable revision's
  history entry is marked RolledBack and the controller requests `stt.dev/undo-to-revision` for
  the previous one (rollout/history.py), which rolls it out through spec.strategy
  (serve-then-switch: the route only moves to a revision that is Available).

Everything is in `status.monitoring`, so a restarted operator resumes the same window, and a
revision with a verdict is not judged again (the state starts afresh for the next stable
revision).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from stt_operator.analysis.model import MonitoringLook
from stt_operator.api.common import COND_DEGRADED, iso, parse_iso
from stt_operator.api.modeldeployment import (
    COND_MONITORING,
    MONITOR_BREACHED,
    MONITOR_INSUFFICIENT,
    MONITOR_NO_DATA,
    MONITOR_PASSED,
    MONITOR_UNAVAILABLE,
    PHASE_DEGRADED,
    REASON_MONITORING_HOLD,
    REASON_MONITORING_OK,
    REASON_MONITORING_ROLLBACK,
    REASON_SLO_BREACHED,
    REVISION_ROLLED_BACK,
    REVISION_SUPERSEDED,
    VERDICT_DEGRADED,
    VERDICT_HEALTHY,
    MonitoringSpec,
)
from stt_operator.rollout.plan import ConditionUpdate, EventUpdate
from stt_operator.stats.monitoring import alpha_per_look, look_slo


@dataclass(frozen=True)
class MonitoringRequest:
    """A look the controller must take: counts of `metrics` ((name, preset) pairs) for the
    stable revision's Service over (start, end]."""

    revision: str
    model: str
    metrics: tuple[tuple[str, str], ...]
    start: datetime
    end: datetime


@dataclass
class MonitoringPlan:
    status: dict[str, Any] | None = None  # the new status.monitoring (None: unchanged)
    request: MonitoringRequest | None = None  # set: look, then plan again with the answer
    conditions: list[ConditionUpdate] = field(default_factory=list)
    events: list[EventUpdate] = field(default_factory=list)
    phase: str | None = None
    revisions: list[dict[str, Any]] | None = None  # the new status.revisions (None: unchanged)
    last_rollback: dict[str, Any] | None = None
    undo_to_revision: int | None = None  # the controller sets stt.dev/undo-to-revision to it
    requeue_after: float | None = None


def previous_good(history: Sequence[Mapping[str, Any]], stable_id: str) -> Mapping[str, Any] | None:
    """The newest revision that served before the stable one and was replaced by a promotion
    (outcome Superseded): what a rollback goes back to."""
    for entry in reversed(history):
        if (
            entry.get("revisionId") != stable_id
            and entry.get("outcome") == REVISION_SUPERSEDED
            and entry.get("promotedAt")
        ):
            return entry
    return None


def _fresh(stable_id: str, now: datetime) -> dict[str, Any]:
    return {"revision": stable_id, "windowStart": iso(now), "looks": 0}


def _degraded_conditions(state: Mapping[str, Any]) -> list[ConditionUpdate]:
    message = str(state.get("message") or "the served revision breached its SLO")
    return [ConditionUpdate(COND_DEGRADED, "True", REASON_SLO_BREACHED, message)]


def _metric_texts(results: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for r in results:
        if r.get("outcome") in (MONITOR_PASSED, MONITOR_BREACHED):
            parts.append(
                f"{r['name']} {r['events']}/{r['trials']} = {r['observed']:.4g} vs SLO {r['threshold']:g}"
                f" (p = {r['pValue']:.3g}, alpha {r['alpha']:.3g}): {r['outcome']}"
            )
        else:
            parts.append(f"{r['name']}: {r.get('outcome')}")
    return "; ".join(parts)


def plan_monitoring(
    spec: MonitoringSpec,
    status: Mapping[str, Any],
    stable_id: str,
    stable_model: str,
    now: datetime,
    look: tuple[MonitoringRequest, MonitoringLook] | None = None,
) -> MonitoringPlan:
    """What monitoring does in this reconcile of a Healthy endpoint (see the module docstring)."""
    plan = MonitoringPlan()
    state = dict(status.get("monitoring") or {})
    if state.get("revision") != stable_id:  # first look at this revision (or a new one serves)
        previous, state = state, _fresh(stable_id, now)
        # Status is written as a merge patch: every field of the previous revision's state is
        # removed explicitly, or its verdict would stick to the revision now serving.
        plan.status = {**{key: None for key in previous if key not in state}, **state}
        if previous.get("verdict") == VERDICT_DEGRADED:
            message = f"revision {stable_id} serves; the SLO breach was revision {previous.get('revision')}'s"
            plan.conditions.append(ConditionUpdate(COND_DEGRADED, "False", "Healthy", message))
    if state.get("verdict") == VERDICT_DEGRADED:  # judged once: no new look, no new Event
        plan.conditions = _degraded_conditions(state)
        plan.phase = PHASE_DEGRADED
        return plan
    interval = spec.interval_seconds()
    window_start = parse_iso(state.get("windowStart")) or now
    last = parse_iso(state.get("lastLookAt")) or window_start
    due = last + timedelta(seconds=interval)
    if look is None or look[0].revision != stable_id:
        if now < due:
            plan.requeue_after = max(1.0, (due - now).total_seconds())
            return plan
        metrics = tuple((m.name, m.preset) for m in spec.metrics)
        plan.request = MonitoringRequest(stable_id, stable_model, metrics, window_start, now)
        return plan
    request, answer = look
    return _judge(spec, status, state, plan, request, answer, interval)


def _judge(
    spec: MonitoringSpec,
    status: Mapping[str, Any],
    state: dict[str, Any],
    plan: MonitoringPlan,
    request: MonitoringRequest,
    answer: MonitoringLook,
    interval: float,
) -> MonitoringPlan:
    state = {**state, "lastLookAt": iso(request.end)}
    plan.status = state
    plan.requeue_after = interval
    alpha = alpha_per_look(spec.max_false_alarms_per_day, interval, len(spec.metrics))
    counts = {c.name: c for c in answer.counts}
    if answer.unavailable or any(
        counts.get(m.name) is None or counts[m.name].trials is None for m in spec.metrics
    ):
        outcome = MONITOR_UNAVAILABLE if answer.unavailable else MONITOR_NO_DATA
        why = answer.message or "; ".join(c.message for c in answer.counts if c.message) or "no data"
        state.update(lastOutcome=outcome, message=f"{outcome}: {why}"[:1000])
        message = f"monitoring holds ({outcome}): {why}; no verdict, no rollback"[:1000]
        plan.conditions.append(ConditionUpdate(COND_MONITORING, "False", REASON_MONITORING_HOLD, message))
        return plan
    results: list[dict[str, Any]] = []
    tested = breached = False
    for m in spec.metrics:
        c = counts[m.name]
        test = look_slo(c.events or 0.0, c.trials or 0.0, m.threshold_range.max, alpha, spec.min_samples)
        outcome = (
            MONITOR_BREACHED if test.breached else MONITOR_PASSED if test.tested else MONITOR_INSUFFICIENT
        )
        tested, breached = tested or test.tested, breached or test.breached
        results.append(
            {
                "name": m.name,
                "events": test.events,
                "trials": test.trials,
                "observed": test.observed,
                "threshold": test.threshold,
                "pValue": test.p_value,
                "alpha": alpha,
                "outcome": outcome,
            }
        )
    state["metrics"] = results
    text = _metric_texts(results)
    if not tested:  # fewer than minSamples: the window keeps growing; a hold, never a verdict
        trials = max(r["trials"] for r in results)
        why = f"{trials} requests since {state.get('windowStart')}, fewer than minSamples {spec.min_samples}"
        state.update(lastOutcome=MONITOR_INSUFFICIENT, message=why)
        plan.conditions.append(
            ConditionUpdate(COND_MONITORING, "False", REASON_MONITORING_HOLD, f"monitoring holds: {why}")
        )
        return plan
    state.update(windowStart=iso(request.end), looks=int(state.get("looks") or 0) + 1)
    if not breached:
        state.update(lastOutcome=MONITOR_PASSED, verdict=VERDICT_HEALTHY, message=text[:1000])
        plan.conditions.append(ConditionUpdate(COND_MONITORING, "True", REASON_MONITORING_OK, text[:1000]))
        return plan
    message = f"model {request.model} (revision {request.revision}) breached its SLO: {text}"[:1000]
    state.update(lastOutcome=MONITOR_BREACHED, verdict=VERDICT_DEGRADED, verdictAt=iso(request.end))
    state["message"] = message
    plan.phase = PHASE_DEGRADED
    plan.requeue_after = None
    plan.conditions.append(ConditionUpdate(COND_MONITORING, "True", REASON_SLO_BREACHED, message))
    plan.conditions += _degraded_conditions(state)
    plan.events.append(EventUpdate("Warning", REASON_SLO_BREACHED, message))
    if spec.rollback:
        _rollback(status, state, plan, request)
    return plan


def _rollback(
    status: Mapping[str, Any], state: dict[str, Any], plan: MonitoringPlan, request: MonitoringRequest
) -> None:
    history = [dict(h) for h in status.get("revisions") or []]
    target = previous_good(history, request.revision)
    if target is None:
        plan.events.append(
            EventUpdate(
                "Warning",
                REASON_SLO_BREACHED,
                "monitoring.rollback is set but status.revisions holds no previous good revision:"
                " not rolled back",
            )
        )
        return
    number = int(target.get("revision") or 0)
    for entry in history:
        if entry.get("revisionId") == request.revision:
            entry["outcome"] = REVISION_ROLLED_BACK  # not rolled out again until retried
    plan.revisions = history
    plan.undo_to_revision = number
    state["rollbackToRevision"] = number
    reason = f"monitoring: {state.get('message')}"[:1000]
    plan.last_rollback = {
        "at": state.get("verdictAt"),
        "fromModel": request.model,
        "toModel": target.get("model"),
        "reason": reason,
        "code": REASON_MONITORING_ROLLBACK,
    }
    plan.events.append(
        EventUpdate(
            "Warning",
            REASON_MONITORING_ROLLBACK,
            f"rolling back to revision {number} (model {target.get('model')}): {reason}"[:1000],
        )
    )
