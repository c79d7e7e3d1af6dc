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

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
    ModelDeploymentStatus,
    MonitoringMetricStatus,
    MonitoringSpec,
    MonitoringStatus,
    RevisionRecord,
    RollbackRecord,
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
    status: MonitoringStatus | None = None  # the new status.monitoring (None: unchanged)
    request: MonitoringRequest | None = None  # set: look, then plan again with the answer
    conditions: list[ConditionUpdate] = field(default_factory=list)
    events: list[EventUpdate] = field(default_factory=list)
    phase: str | None = None
    revisions: list[RevisionRecord] | None = None  # the new status.revisions (None: unchanged)
    last_rollback: RollbackRecord | None = None
    undo_to_revision: int | None = None  # the controller sets stt.dev/undo-to-revision to it
    requeue_after: float | None = None


def previous_good(history: Sequence[RevisionRecord], stable_id: str) -> RevisionRecord | None:
    """The newest revision that served before the stable one and was replaced by a promotion
    (outcome Superseded): what a rollback goes back to."""
    for entry in reversed(history):
        if entry.revision_id != stable_id and entry.outcome == REVISION_SUPERSEDED and entry.promoted_at:
            return entry
    return None


def _fresh(stable_id: str, now: datetime) -> MonitoringStatus:
    return MonitoringStatus(revision=stable_id, window_start=iso(now), looks=0)


def _degraded_conditions(state: MonitoringStatus) -> list[ConditionUpdate]:
    message = state.message or "the served revision breached its SLO"
    return [ConditionUpdate(COND_DEGRADED, "True", REASON_SLO_BREACHED, message)]


def _metric_texts(results: Sequence[MonitoringMetricStatus]) -> str:
    parts = []
    for r in results:
        if r.outcome in (MONITOR_PASSED, MONITOR_BREACHED):
            parts.append(
                f"{r.name} {r.events}/{r.trials} = {r.observed:.4g} vs SLO {r.threshold:g}"
                f" (p = {r.p_value:.3g}, alpha {r.alpha:.3g}): {r.outcome}"
            )
        else:
            parts.append(f"{r.name}: {r.outcome}")
    return "; ".join(parts)


def plan_monitoring(
    spec: MonitoringSpec,
    status: ModelDeploymentStatus,
    stable_id: str,
    stable_model: str,
    now: datetime,
    look: tuple[MonitoringRequest, MonitoringLook] | None = None,
) -> MonitoringPlan:
    """What monitoring does in this reconcile of a Healthy endpoint (see the module docstring)."""
    plan = MonitoringPlan()
    state = (status.monitoring or MonitoringStatus()).model_copy(deep=True)
    if state.revision != stable_id:  # first look at this revision (or a new one serves)
        previous, state = state, _fresh(stable_id, now)
        # A new state, not an edit: the status writer clears every field of the previous
        # revision's state (a merge patch keeps what it does not name), so its verdict does not
        # stick to the revision now serving.
        plan.status = state
        if previous.verdict == VERDICT_DEGRADED:
            message = f"revision {stable_id} serves; the SLO breach was revision {previous.revision}'s"
            plan.conditions.append(ConditionUpdate(COND_DEGRADED, "False", "Healthy", message))
    if state.verdict == VERDICT_DEGRADED:  # judged once: no new look, no new Event
        plan.conditions = _degraded_conditions(state)
        plan.phase = PHASE_DEGRADED
        return plan
    interval = spec.interval_seconds()
    window_start = parse_iso(state.window_start) or now
    last = parse_iso(state.last_look_at) or window_start
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
    status: ModelDeploymentStatus,
    state: MonitoringStatus,
    plan: MonitoringPlan,
    request: MonitoringRequest,
    answer: MonitoringLook,
    interval: float,
) -> MonitoringPlan:
    state = state.model_copy(update={"last_look_at": iso(request.end)})
    plan.status = state
    plan.requeue_after = interval
    alpha = alpha_per_look(spec.max_false_alarms_per_day, interval, len(spec.metrics))
    counts = {c.name: c for c in answer.counts}
    if answer.unavailable or any(
        counts.get(m.name) is None or counts[m.name].trials is None for m in spec.metrics
    ):
        outcome = MONITOR_UNAVAILABLE if answer.unavailable else MONITOR_NO_DATA
        why = answer.message or "; ".join(c.message for c in answer.counts if c.message) or "no data"
        state.last_outcome = outcome
        state.message = f"{outcome}: {why}"[:1000]
        message = f"monitoring holds ({outcome}): {why}; no verdict, no rollback"[:1000]
        plan.conditions.append(ConditionUpdate(COND_MONITORING, "False", REASON_MONITORING_HOLD, message))
        return plan
    results: list[MonitoringMetricStatus] = []
    tested = breached = False
    for m in spec.metrics:
        c = counts[m.name]
        test = look_slo(c.events or 0.0, c.trials or 0.0, m.threshold_range.max, alpha, spec.min_samples)
        outcome = (
            MONITOR_BREACHED if test.breached else MONITOR_PASSED if test.tested else MONITOR_INSUFFICIENT
        )
        tested, breached = tested or test.tested, breached or test.breached
        results.append(
            MonitoringMetricStatus(
                name=m.name,
                events=test.events,
                trials=test.trials,
                observed=test.observed,
                threshold=test.threshold,
                p_value=test.p_value,
                alpha=alpha,
                outcome=outcome,
            )
        )
    state.metrics = results
    text = _metric_texts(results)
    if not tested:  # fewer than minSamples: the window keeps growing; a hold, never a verdict
        trials = max(r.trials for r in results)
        why = f"{trials} requests since {state.window_start}, fewer than minSamples {spec.min_samples}"
        state.last_outcome = MONITOR_INSUFFICIENT
        state.message = why
        plan.conditions.append(
            ConditionUpdate(COND_MONITORING, "False", REASON_MONITORING_HOLD, f"monitoring holds: {why}")
        )
        return plan
    state.window_start = iso(request.end)
    state.looks += 1
    if not breached:
        state.last_outcome = MONITOR_PASSED
        state.verdict = VERDICT_HEALTHY
        state.message = text[:1000]
        plan.conditions.append(ConditionUpdate(COND_MONITORING, "True", REASON_MONITORING_OK, text[:1000]))
        return plan
    message = f"model {request.model} (revision {request.revision}) breached its SLO: {text}"[:1000]
    state.last_outcome = MONITOR_BREACHED
    state.verdict = VERDICT_DEGRADED
    state.verdict_at = iso(request.end)
    state.message = message
    plan.phase = PHASE_DEGRADED
    plan.requeue_after = None
    plan.conditions.append(ConditionUpdate(COND_MONITORING, "True", REASON_SLO_BREACHED, message))
    plan.conditions += _degraded_conditions(state)
    plan.events.append(EventUpdate("Warning", REASON_SLO_BREACHED, message))
    if spec.rollback:
        _rollback(status, state, plan, request)
    return plan


def _rollback(
    status: ModelDeploymentStatus, state: MonitoringStatus, plan: MonitoringPlan, request: MonitoringRequest
) -> None:
    history = [h.model_copy() for h in status.revisions]
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
    number = target.revision
    for entry in history:
        if entry.revision_id == request.revision:
            entry.outcome = REVISION_ROLLED_BACK  # not rolled out again until retried
    plan.revisions = history
    plan.undo_to_revision = number
    state.rollback_to_revision = number
    reason = f"monitoring: {state.message}"[:1000]
    plan.last_rollback = RollbackRecord(
        at=state.verdict_at,
        from_model=request.model,
        to_model=target.model,
        reason=reason,
        code=REASON_MONITORING_ROLLBACK,
    )
    plan.events.append(
        EventUpdate(
            "Warning",
            REASON_MONITORING_ROLLBACK,
            f"rolling back to revision {number} (model {target.model}): {reason}"[:1000],
        )
    )
