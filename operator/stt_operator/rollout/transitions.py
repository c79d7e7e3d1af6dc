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
from typing import TYPE_CHECKING, Any

from stt_operator.analysis.model import AnalysisResult
from stt_operator.analysis.policy import Decision, decide
from stt_operator.analysis.verdicts import aggregate
from stt_operator.api.common import iso, parse_iso
from stt_operator.api.modeldeployment import (
    PHASE_DEGRADED,
    PHASE_HEALTHY,
    PHASE_PROGRESSING,
    PHASE_ROLLED_BACK,
    ModelDeploymentSpec,
)
from stt_operator.builders.serving import Revision
from stt_operator.rollout.capacity import CapacityVerdict
from stt_operator.rollout.immediate import record_promotion
from stt_operator.rollout.plan import (
    WAIT_REQUEUE_S,
    AnalysisRequest,
    ConditionUpdate,
    EndpointPlan,
    EventUpdate,
    ObservedRevision,
    SmokeResult,
    settled,
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
    status: Mapping[str, Any]
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
        return self.status.get("stableRevision")

    def available(self, revision_id: str | None) -> bool:
        obs = self.observed.get(revision_id or "")
        return obs is not None and obs.available

    def history(self) -> list[dict[str, Any]]:
        return [dict(h) for h in self.status.get("revisions") or []]


def rolled_back(inp: RolloutInput) -> Mapping[str, Any] | None:
    """The history entry that marks the desired revision as rolled back, if any: such a revision
    is not tried again until the spec (model or its digest) changes."""
    for entry in reversed(inp.status.get("revisions") or []):
        if entry.get("revisionId") == inp.desired.id:
            return entry if entry.get("outcome") == "RolledBack" else None
    return None


def scaled_replicas(replicas: int, weight: int) -> int:
    """Canary pods in proportion to its weight, at least one so it can be measured."""
    return max(1, math.ceil(replicas * weight / 100))


def serving_conditions(model: str) -> list[ConditionUpdate]:
    return [
        ConditionUpdate("Available", "True", "StableAvailable", f"model {model} serves traffic"),
        ConditionUpdate("Ready", "True", "Serving", f"model {model} serves the endpoint"),
    ]


def true_reason(status: Mapping[str, Any], type_: str) -> str | None:
    """The reason of a condition in `status` that is True (None otherwise)."""
    for c in status.get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c.get("reason")
    return None


def not_paused() -> ConditionUpdate:
    return ConditionUpdate("Paused", "False", "NotPaused", "the rollout is not paused")


# --- steady state, rolled back, promotion, rollback ----------------------------------------------


def plan_steady(inp: RolloutInput, scale_down_delay_s: float) -> EndpointPlan:
    """The desired revision is the stable one: serve it, retire every other revision (an old
    stable after the scale-down delay since its successor's promotion, anything else now)."""
    plan = EndpointPlan()
    desired, now = inp.desired, inp.now
    plan.ensure.append((desired, "stable"))
    history = inp.history()
    promoted_at = next(
        (parse_iso(h.get("promotedAt")) for h in reversed(history) if h.get("revisionId") == desired.id),
        None,
    )
    was_promoted = {h.get("revisionId") for h in history if h.get("promotedAt")}
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
    if inp.status.get("canaryRevision"):
        plan.events.append(
            EventUpdate(
                "Normal",
                "RolloutAborted",
                f"spec.model is back on the stable model {desired.model}: dropped revision"
                f" {inp.status.get('canaryRevision')}",
            )
        )
    plan.status.update(
        canaryRevision=None,
        canaryModel=None,
        currentStepIndex=None,
        stepStartedAt=None,
        rolloutStartedAt=None,
        analysis=None,
    )
    plan.conditions.append(not_paused())
    if inp.available(desired.id):
        plan.route = {desired.id: 100}
        plan.status.update(currentWeight=100, phase=PHASE_HEALTHY, message=f"serving model {desired.model}")
        plan.conditions += [
            *serving_conditions(desired.model),
            ConditionUpdate("Progressing", "False", "RolloutComplete", f"serving model {desired.model}"),
            ConditionUpdate("Degraded", "False", "Healthy", f"model {desired.model} serves the endpoint"),
        ]
    else:
        waiting = f"waiting for stable revision {desired.id} (model {desired.model}) to become Available"
        plan.status.update(phase=PHASE_PROGRESSING, message=waiting)
        plan.conditions += [
            ConditionUpdate("Available", "False", "NoAvailableRevision", waiting),
            ConditionUpdate("Ready", "False", "RevisionStarting", waiting),
            ConditionUpdate("Progressing", "True", "StableStarting", waiting),
        ]
        plan.requeue_after = WAIT_REQUEUE_S
    return plan


def plan_rolled_back(inp: RolloutInput, entry: Mapping[str, Any]) -> EndpointPlan:
    """The desired revision was rolled back: keep serving the stable one, remove the rest, and
    say how to try again."""
    plan = EndpointPlan()
    stable_id = inp.stable_id or ""
    stable_model = inp.status.get("stableModel") or ""
    others = sorted(r for r in inp.observed if r != stable_id)
    if inp.available(stable_id):
        plan.route = {stable_id: 100}
    plan.delete = others
    last = inp.status.get("lastRollback") or {}
    reason = last.get("reason") or "analysis failed"
    code = last.get("code") or "RolledBack"  # e.g. ProgressDeadlineExceeded stays visible
    message = short(
        f"model {inp.desired.model} (revision {inp.desired.id}) was rolled back ({reason}); serving"
        f" {stable_model}. Change spec.model or the STTModel, or retry (annotation stt.dev/retry),"
        " to roll out again."
    )
    plan.status.update(
        **settled(0),
        phase=PHASE_DEGRADED if others else PHASE_ROLLED_BACK,
        message=message,
    )
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
    desired, now = inp.desired, inp.now
    plan.route = {desired.id: 100}
    limit = inp.spec.rollback.revision_history_limit
    history = record_promotion(inp.status.get("revisions") or [], desired, now, limit)
    if inp.status.get("rolloutStartedAt") and history[-1].get("revisionId") == desired.id:
        history[-1]["createdAt"] = inp.status["rolloutStartedAt"]
    plan.status.update(
        stableRevision=desired.id,
        stableModel=desired.model,
        **settled(100),
        rolloutStartedAt=None,
        analysis=None,
        revisions=history,
        phase=PHASE_HEALTHY,
        message=f"promoted model {desired.model} ({how})",
    )
    plan.events.append(
        EventUpdate(
            "Normal",
            "Promoted",
            f"model {desired.model} (revision {desired.id}) serves 100% of traffic ({how})",
        )
    )
    plan.conditions = [
        *serving_conditions(desired.model),
        ConditionUpdate("Progressing", "False", "RolloutComplete", f"promoted model {desired.model}"),
        ConditionUpdate("Degraded", "False", "Healthy", f"model {desired.model} serves the endpoint"),
        not_paused(),
    ]
    plan.requeue_after = WAIT_REQUEUE_S  # the steady state retires the old revision
    return plan


def rollback(inp: RolloutInput, plan: EndpointPlan, reason: str, code: str = "RolledBack") -> EndpointPlan:
    """Send everything back to stable, delete the new revision, remember why (`code`: the
    reason of the Degraded/Progressing conditions, e.g. ProgressDeadlineExceeded)."""
    desired, now = inp.desired, inp.now
    stable_id = inp.stable_id or ""
    stable_model = inp.status.get("stableModel") or ""
    plan.ensure = []
    plan.replicas = {}
    plan.route = {stable_id: 100} if inp.available(stable_id) else None
    plan.delete = sorted(r for r in inp.observed if r != stable_id)
    history = inp.history()
    number = max((int(h.get("revision", 0)) for h in history), default=0) + 1
    history.append(
        {
            "revision": number,
            "revisionId": desired.id,
            "model": desired.model,
            "modelDigest": desired.model_digest,
            "createdAt": inp.status.get("rolloutStartedAt") or iso(now),
            "outcome": "RolledBack",
        }
    )
    limit = inp.spec.rollback.revision_history_limit
    message = short(f"rolled back model {desired.model} to {stable_model}: {reason}")
    plan.status.update(
        **settled(0),
        revisions=history[-limit:],
        lastRollback={
            "at": iso(now),
            "fromModel": desired.model,
            "toModel": stable_model,
            "reason": short(reason),
            "code": code,
        },
        phase=PHASE_DEGRADED,
        message=message,
    )
    if code != "RolledBack":
        plan.events.append(EventUpdate("Warning", code, message))
    plan.events.append(EventUpdate("Warning", "RolledBack", message))
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


def _trailing_error_looks(runs: Sequence[Mapping[str, Any]], step: int, since: str, policy: str) -> int:
    """Consecutive latest looks of this analysis whose aggregated outcome was Error (the policy
    pauses after several); looks are the runs sharing one `at`."""
    looks: dict[str, list[str]] = {}
    for run in runs:
        if run.get("step") == step and (run.get("at") or "") >= since:
            looks.setdefault(run.get("at") or "", []).append(str(run.get("outcome")))
    streak = 0
    for at in sorted(looks, reverse=True):
        if aggregate(looks[at], policy) != "Error":
            break
        streak += 1
    return streak


def record_look(
    inp: RolloutInput, step: int, result: AnalysisResult, state: Mapping[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], Decision]:
    """Fold one look into the analysis counters and run list, and ask the policy what next."""
    analysis = inp.spec.analysis
    assert analysis is not None  # the planners only look when spec.analysis has metrics
    state = dict(state)
    runs = [dict(r) for r in inp.status.get("analysisRuns") or []]
    since = state.get("startedAt") or ""
    errors = _trailing_error_looks(runs, step, since, analysis.no_data_policy)
    streak = int(state.get("consecutiveSuccesses", 0))
    history = (
        ["Failed"] * int(state.get("failures", 0))
        + ["Inconclusive"] * int(state.get("inconclusive", 0))
        + (["Passed"] * streak if streak else ["Error"] * errors)
        + [result]
    )
    decision = decide(history, analysis)
    at = iso(inp.now)
    for metric in result.metrics:
        entry = metric.to_status()
        entry["message"] = short(entry.get("message", ""))
        runs.append({"step": step, **entry, "at": at})
    state.update(
        failures=decision.failures,
        inconclusive=decision.inconclusive,
        consecutiveSuccesses=decision.consecutive_successes,
        noData=int(state.get("noData", 0)) + (1 if result.outcome == "NoData" else 0),
        lastCheckedAt=at,
    )
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
    state: Mapping[str, Any] | None,
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
    state = state or {}
    if not state.get("startedAt"):
        state = {
            "startedAt": iso(now),
            "failures": 0,
            "inconclusive": 0,
            "consecutiveSuccesses": 0,
            "noData": 0,
        }
        plan.status["analysis"] = state
        return StepOutcome("Wait", "analysis started", analysis.interval_seconds())
    started = parse_iso(state["startedAt"]) or now
    last = parse_iso(state.get("lastCheckedAt")) or started
    due = last.timestamp() + analysis.interval_seconds()
    if now.timestamp() < due:
        left = max(0.5, due - now.timestamp())
        kept = true_reason(inp.status, "Paused")
        if state.get("lastCheckedAt") and kept in ANALYSIS_PAUSE_REASONS:
            # The last look of this step paused it; that holds until the next look says otherwise.
            message = next(
                c.get("message", "") for c in inp.status["conditions"] if c.get("type") == "Paused"
            )
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
        plan.status["analysis"] = {**state, "lastCheckedAt": iso(now)}
        return StepOutcome("Unavailable", short(result.message), analysis.interval_seconds())
    new_state, runs, decision = record_look(inp, step, result, state)
    plan.status.update(analysis=new_state, analysisRuns=runs)
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
    status: Mapping[str, Any],
    desired: Revision,
    observed: Mapping[str, ObservedRevision],
    held_by: str | None,
) -> bool:
    """Whether the capacity preflight asks before this reconcile: only before a new revision's
    stack exists (canary, preview, or Immediate's new stack), in a rollout from a serving
    stable revision, for a revision not rolled back before, on an endpoint no A/B test holds."""
    stable = status.get("stableRevision")
    if not stable or desired.id == stable or held_by or desired.id in observed:
        return False
    history = status.get("revisions") or []
    return not any(h.get("revisionId") == desired.id and h.get("outcome") == "RolledBack" for h in history)
