"""Pieces every progressive strategy (Gradual, Canary, BlueGreen) shares.

The planners are pure: they read the desired revision, `status` and the revisions found in the
cluster, and return an `EndpointPlan`. Everything a rollout must remember between reconciles
(step index, weight, timers, analysis counters, history) goes back into `status`, so planning
twice gives the same plan and a restarted operator resumes where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from stt_operator.analysis.model import AnalysisResult
from stt_operator.analysis.policy import Decision, decide
from stt_operator.analysis.verdicts import aggregate
from stt_operator.api.common import Condition, iso, parse_iso
from stt_operator.api.modeldeployment import (
    PHASE_DEGRADED,
    PHASE_HEALTHY,
    PHASE_PROGRESSING,
    PHASE_ROLLED_BACK,
    REASON_ROLLED_BACK,
    REVISION_ROLLED_BACK,
    AnalysisRun,
    AnalysisState,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RevisionRecord,
    RollbackRecord,
)
from stt_operator.builders.serving import Revision
from stt_operator.rollout.capacity import CapacityVerdict
from stt_operator.rollout.immediate import promote_revision
from stt_operator.rollout.plan import (
    WAIT_REQUEUE_S,
    AnalysisRequest,
    ConditionUpdate,
    EndpointPlan,
    EventUpdate,
    ObservedRevision,
    SmokeResult,
    settle,
)

if TYPE_CHECKING:  # rollout/monitoring.py is planned after this module's planners
    from stt_operator.analysis.model import MonitoringLook
    from stt_operator.rollout.monitoring import MonitoringRequest

MAX_ANALYSIS_RUNS = 100  # status.analysisRuns maxItems
MAX_TEXT = 1000  # ShortText fields hold 1024 characters

# Annotations a person sets to act on a rollout (see docs/rollouts.md).
ANNOTATION_PROMOTE = "stt.dev/promote"  # any value: end an indefinite pause / promote a blue-green preview
ANNOTATION_ABORT = "stt.dev/abort"  # any value: roll the rollout in flight back to the stable model now
# Set by an ABTest while it writes the endpoint's route weights (experiments.planner uses the same key).
ANNOTATION_HELD_BY = "stt.dev/held-by"


def short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


@dataclass(frozen=True)
class RolloutInput:
    """Everything a planner reads. `analysis` is the result of the look the planner asked for
    in its previous call (`EndpointPlan.analysis_request`), with that request."""

    desired: Revision
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus
    observed: Mapping[str, ObservedRevision]
    now: datetime
    promote_requested: bool = False
    abort_requested: bool = False
    analysis: tuple[AnalysisRequest, AnalysisResult] | None = None
    # Capacity pre-flight of the desired revision (None: not checked, e.g. its pods exist).
    capacity: CapacityVerdict | None = None
    smoke_enabled: bool = False  # spec.smokeTest.enabled, or the operator's default
    smoke: SmokeResult | None = None  # the result of the smoke request of the previous plan
    # The answer to the previous plan's monitoring_request, with that request.
    monitoring: tuple[MonitoringRequest, MonitoringLook] | None = None

    @property
    def stable_id(self) -> str | None:
        return self.status.stable_revision

    def available(self, revision_id: str | None) -> bool:
        obs = self.observed.get(revision_id or "")
        return obs is not None and obs.available

    def history(self) -> list[RevisionRecord]:
        """A copy of status.revisions the planner may edit."""
        return [h.model_copy() for h in self.status.revisions]

    def new_plan(self) -> EndpointPlan:
        return EndpointPlan.from_status(self.status)


def rolled_back(inp: RolloutInput) -> RevisionRecord | None:
    """The history entry that marks the desired revision as rolled back, if any: such a revision
    is not tried again until the spec (model or its digest) changes."""
    for entry in reversed(inp.status.revisions):
        if entry.revision_id == inp.desired.id:
            return entry if entry.outcome == REVISION_ROLLED_BACK else None
    return None


def scaled_replicas(replicas: int, weight: int) -> int:
    """Canary pods in proportion to its weight, at least one so it can be measured."""
    return max(1, math.ceil(replicas * weight / 100))


def serving_conditions(model: str) -> list[ConditionUpdate]:
    return [
        ConditionUpdate("Available", "True", "StableAvailable", f"model {model} serves traffic"),
        ConditionUpdate("Ready", "True", "Serving", f"model {model} serves the endpoint"),
    ]


def condition_of(status: ModelDeploymentStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def true_reason(status: ModelDeploymentStatus, type_: str) -> str | None:
    """The reason of a condition in `status` that is True (None otherwise)."""
    cond = condition_of(status, type_)
    return cond.reason if cond is not None and cond.status == "True" else None


def not_paused() -> ConditionUpdate:
    return ConditionUpdate("Paused", "False", "NotPaused", "the rollout is not paused")


# --- steady state, rolled back, promotion, rollback ----------------------------------------------


def plan_steady(inp: RolloutInput, scale_down_delay_s: float) -> EndpointPlan:
    """The desired revision is the stable one: serve it, retire every other revision (an old
    stable after the scale-down delay since its successor's promotion, anything else now)."""
    plan = inp.new_plan()
    desired, now = inp.desired, inp.now
    plan.ensure.append((desired, "stable"))
    history = inp.status.revisions
    promoted_at = next(
        (parse_iso(h.promoted_at) for h in reversed(history) if h.revision_id == desired.id),
        None,
    )
    was_promoted = {h.revision_id for h in history if h.promoted_at}
    retire_at = (promoted_at or now).timestamp() + scale_down_delay_s
    for rid in sorted(r for r in inp.observed if r != desired.id):
        if rid not in was_promoted or now.timestamp() >= retire_at:
            plan.delete.append(rid)
        else:
            plan.requeue_after = max(1.0, retire_at - now.timestamp())
    if plan.delete:
        plan.events.append(
            EventUpdate("Normal", "RevisionRetired", f"removed old revision(s) {', '.join(plan.delete)}")
        )
    if inp.status.canary_revision:
        plan.events.append(
            EventUpdate(
                "Normal",
                "RolloutAborted",
                f"spec.model is back on the stable model {desired.model}: dropped revision"
                f" {inp.status.canary_revision}",
            )
        )
    plan.set_status(
        canary_revision=None,
        canary_model=None,
        current_step_index=None,
        step_started_at=None,
        rollout_started_at=None,
        analysis=None,
    )
    plan.conditions.append(not_paused())
    if inp.available(desired.id):
        plan.route = {desired.id: 100}
        plan.set_status(current_weight=100, phase=PHASE_HEALTHY, message=f"serving model {desired.model}")
        plan.conditions += [
            *serving_conditions(desired.model),
            ConditionUpdate("Progressing", "False", "RolloutComplete", f"serving model {desired.model}"),
            ConditionUpdate("Degraded", "False", "Healthy", f"model {desired.model} serves the endpoint"),
        ]
    else:
        waiting = f"waiting for stable revision {desired.id} (model {desired.model}) to become Available"
        plan.set_status(phase=PHASE_PROGRESSING, message=waiting)
        plan.conditions += [
            ConditionUpdate("Available", "False", "NoAvailableRevision", waiting),
            ConditionUpdate("Ready", "False", "RevisionStarting", waiting),
            ConditionUpdate("Progressing", "True", "StableStarting", waiting),
        ]
        plan.requeue_after = WAIT_REQUEUE_S
    return plan


def plan_rolled_back(inp: RolloutInput) -> EndpointPlan:
    """The desired revision was rolled back: keep serving the stable one, remove the rest, and
    say how to try again."""
    plan = inp.new_plan()
    stable_id = inp.stable_id or ""
    stable_model = inp.status.stable_model or ""
    others = sorted(r for r in inp.observed if r != stable_id)
    if inp.available(stable_id):
        plan.route = {stable_id: 100}
    plan.delete = others
    last = inp.status.last_rollback or RollbackRecord()
    reason = last.reason or "analysis failed"
    code = last.code or REASON_ROLLED_BACK  # e.g. ProgressDeadlineExceeded stays visible
    message = short(
        f"model {inp.desired.model} (revision {inp.desired.id}) was rolled back ({reason}); serving"
        f" {stable_model}. Change spec.model or the STTModel, or retry (annotation stt.dev/retry),"
        " to roll out again."
    )
    settle(plan, 0)
    plan.set_status(phase=PHASE_DEGRADED if others else PHASE_ROLLED_BACK, message=message)
    plan.conditions += [
        *serving_conditions(stable_model),
        ConditionUpdate("Degraded", "True", code, message),
        ConditionUpdate("Progressing", "False", code, message),
        not_paused(),
    ]
    if others:
        plan.requeue_after = WAIT_REQUEUE_S
    return plan


def promote(inp: RolloutInput, plan: EndpointPlan, how: str) -> EndpointPlan:
    """All traffic to the desired revision; the old stable is retired later by `plan_steady`."""
    desired = inp.desired
    limit = inp.spec.rollback.revision_history_limit
    started = inp.status.rollout_started_at
    promote_revision(plan, desired, inp.status, inp.now, limit, event="Promoted", how=how, created_at=started)
    plan.set_status(rollout_started_at=None, analysis=None, message=f"promoted model {desired.model} ({how})")
    plan.conditions = [
        *serving_conditions(desired.model),
        ConditionUpdate("Progressing", "False", "RolloutComplete", f"promoted model {desired.model}"),
        ConditionUpdate("Degraded", "False", "Healthy", f"model {desired.model} serves the endpoint"),
        not_paused(),
    ]
    plan.requeue_after = WAIT_REQUEUE_S  # the steady state retires the old revision
    return plan


def rollback(
    inp: RolloutInput, plan: EndpointPlan, reason: str, code: str = REASON_ROLLED_BACK
) -> EndpointPlan:
    """Send everything back to stable, delete the new revision, remember why (`code`: the
    reason of the Degraded/Progressing conditions, e.g. ProgressDeadlineExceeded)."""
    desired, now = inp.desired, inp.now
    stable_id = inp.stable_id or ""
    stable_model = inp.status.stable_model or ""
    plan.ensure = []
    plan.replicas = {}
    plan.route = {stable_id: 100} if inp.available(stable_id) else None
    plan.delete = sorted(r for r in inp.observed if r != stable_id)
    history = inp.history()
    number = max((h.revision for h in history), default=0) + 1
    history.append(
        RevisionRecord(
            revision=number,
            revision_id=desired.id,
            model=desired.model,
            model_digest=desired.model_digest,
            created_at=inp.status.rollout_started_at or iso(now),
            outcome=REVISION_ROLLED_BACK,
        )
    )
    limit = inp.spec.rollback.revision_history_limit
    message = short(f"rolled back model {desired.model} to {stable_model}: {reason}")
    settle(plan, 0)
    plan.set_status(
        revisions=history[-limit:],
        last_rollback=RollbackRecord(
            at=iso(now),
            from_model=desired.model,
            to_model=stable_model,
            reason=short(reason),
            code=code,
        ),
        phase=PHASE_DEGRADED,
        message=message,
    )
    if code != REASON_ROLLED_BACK:
        plan.events.append(EventUpdate("Warning", code, message))
    plan.events.append(EventUpdate("Warning", REASON_ROLLED_BACK, message))
    kept = [c for c in plan.conditions if c.type in ("CapacityAvailable", "SmokeTest")]
    plan.conditions = [
        *serving_conditions(stable_model),
        ConditionUpdate("Degraded", "True", code, message),
        ConditionUpdate("Progressing", "False", code, message),
        not_paused(),
        *kept,
    ]
    plan.requeue_after = WAIT_REQUEUE_S
    return plan


# --- analysis between steps ------------------------------------------------------------------------


def _trailing_error_looks(runs: Sequence[AnalysisRun], step: int, since: str, policy: str) -> int:
    """Consecutive latest looks of this analysis whose aggregated outcome was Error (the policy
    pauses after several); looks are the runs sharing one `at`."""
    looks: dict[str, list[str]] = {}
    for run in runs:
        if run.step == step and (run.at or "") >= since:
            looks.setdefault(run.at or "", []).append(run.outcome)
    streak = 0
    for at in sorted(looks, reverse=True):
        if aggregate(looks[at], policy) != "Error":
            break
        streak += 1
    return streak


def record_look(
    inp: RolloutInput, step: int, result: AnalysisResult, state: AnalysisState
) -> tuple[AnalysisState, list[AnalysisRun], Decision]:
    """Fold one look into the analysis counters and run list, and ask the policy what next."""
    analysis = inp.spec.analysis
    assert analysis is not None  # the planners only look when spec.analysis has metrics
    runs = list(inp.status.analysis_runs)
    errors = _trailing_error_looks(runs, step, state.started_at or "", analysis.no_data_policy)
    streak = state.consecutive_successes
    history = (
        ["Failed"] * state.failures
        + ["Inconclusive"] * state.inconclusive
        + (["Passed"] * streak if streak else ["Error"] * errors)
        + [result]
    )
    decision = decide(history, analysis)
    at = iso(inp.now)
    for metric in result.metrics:
        entry = metric.to_status()
        entry["message"] = short(entry.get("message", ""))
        runs.append(AnalysisRun.model_validate({"step": step, **entry, "at": at}))
    state = state.model_copy()
    state.failures = decision.failures
    state.inconclusive = decision.inconclusive
    state.consecutive_successes = decision.consecutive_successes
    state.no_data = state.no_data + (1 if result.outcome == "NoData" else 0)
    state.last_checked_at = at
    return state, runs[-MAX_ANALYSIS_RUNS:], decision


@dataclass
class StepOutcome:
    """What an analysis step decided in this reconcile."""

    action: str  # Request | Wait | Advance | Rollback | Pause | Hold | Unavailable
    reason: str = ""
    requeue_after: float | None = None
    kept: tuple[str, str] | None = None  # between looks: the Paused condition (reason, message) stays


ANALYSIS_UNAVAILABLE = "AnalysisUnavailable"
ANALYSIS_PAUSE_REASONS = ("AnalysisNoData", "AnalysisPaused", "AnalysisFailed", ANALYSIS_UNAVAILABLE)


def run_analysis_step(
    inp: RolloutInput,
    plan: EndpointPlan,
    *,
    step: int,
    state: AnalysisState | None,
    metrics: Sequence[str],
    variant: str,
    step_started: datetime,
    min_duration_s: float = 0.0,
) -> StepOutcome:
    """One reconcile of an analysis step: start it, wait for the next look, ask the controller
    for a look (`plan.analysis_request`), or fold the look in and decide. Counters go to
    `plan.status`; `state` holds this step's counters (None: the step has not started)."""
    analysis = inp.spec.analysis
    if analysis is None or not analysis.metrics:
        return StepOutcome("Advance", "no analysis metrics")
    now = inp.now
    if state is None or not state.started_at:
        plan.status.analysis = AnalysisState(
            started_at=iso(now), failures=0, inconclusive=0, consecutive_successes=0, no_data=0
        )
        return StepOutcome("Wait", "analysis started", analysis.interval_seconds())
    started = parse_iso(state.started_at) or now
    last = parse_iso(state.last_checked_at) or started
    due = last.timestamp() + analysis.interval_seconds()
    if now.timestamp() < due:
        left = max(0.5, due - now.timestamp())
        kept = true_reason(inp.status, "Paused")
        paused = condition_of(inp.status, "Paused")
        if state.last_checked_at and kept in ANALYSIS_PAUSE_REASONS and paused is not None:
            # The last look of this step paused it; that holds until the next look says otherwise.
            message = paused.message
            action = "Hold" if kept == "AnalysisFailed" else "Pause"
            return StepOutcome(action, message, left, kept=(kept, message))
        return StepOutcome("Wait", "waiting for the next look", left)
    names = tuple(metrics) or tuple(m.name for m in analysis.metrics)
    request = AnalysisRequest(step, names, inp.desired.id, variant, inp.stable_id, started)
    if inp.analysis is None or inp.analysis[0] != request:
        plan.analysis_request = request
        return StepOutcome("Request")
    result = inp.analysis[1]
    if result.unavailable:
        # No Prometheus to ask: not a look (no counters, no runs), so the rollout neither
        # promotes nor rolls back on it; it holds where it is and asks again next interval.
        plan.status.analysis = state.model_copy(update={"last_checked_at": iso(now)})
        return StepOutcome("Unavailable", short(result.message), analysis.interval_seconds())
    new_state, runs, decision = record_look(inp, step, result, state)
    plan.set_status(analysis=new_state, analysis_runs=runs)
    reason = short(decision.reason)
    if decision.action == "Advance":
        remaining = step_started.timestamp() + min_duration_s - now.timestamp()
        if remaining > 0:
            return StepOutcome("Wait", f"analysis passed; step lasts {remaining:.0f}s more", remaining)
        return StepOutcome("Advance", reason)
    if decision.action == "Rollback":
        return StepOutcome("Rollback" if inp.spec.rollback.automatic else "Hold", reason)
    if decision.action == "Pause":
        return StepOutcome("Pause", reason, analysis.interval_seconds())
    return StepOutcome("Wait", reason, analysis.interval_seconds())


def needs_preflight(
    status: ModelDeploymentStatus,
    desired: Revision,
    observed: Mapping[str, ObservedRevision],
    held_by: str | None,
) -> bool:
    """Whether the capacity preflight asks before this reconcile: only before a new revision's
    stack exists (canary, preview, or Immediate's new stack), in a rollout from a serving
    stable revision, for a revision not rolled back before, on an endpoint no A/B test holds."""
    stable = status.stable_revision
    if not stable or desired.id == stable or held_by or desired.id in observed:
        return False
    return not any(
        h.revision_id == desired.id and h.outcome == REVISION_ROLLED_BACK for h in status.revisions
    )
