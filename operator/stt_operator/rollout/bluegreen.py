"""`BlueGreen` strategy: a full preview stack at weight 0, optional pre-promotion analysis, then
one switch of all traffic; the old stack stays for `scaleDownDelaySeconds`.

`currentStepIndex` is 0 while the preview is checked and 1 once it waits for promotion
(after `autoPromotionSeconds`, or for a person's `stt.dev/promote` annotation when
`autoPromotionEnabled` is false). The preview-ready time is `stepStartedAt`.
"""

from __future__ import annotations

from stt_operator.api.modeldeployment import PHASE_DEGRADED, PHASE_PAUSED, PHASE_PROGRESSING
from stt_operator.rollout.gates import pre_traffic
from stt_operator.rollout.plan import ConditionUpdate, EndpointPlan, EventUpdate
from stt_operator.rollout.progressive import hold_if_paused, start_or_resume
from stt_operator.rollout.transitions import (
    ANALYSIS_UNAVAILABLE,
    ANNOTATION_PROMOTE,
    WAIT_REQUEUE_S,
    RolloutInput,
    iso,
    not_paused,
    parse_iso,
    promote,
    rollback,
    run_analysis_step,
    serving_conditions,
    short,
    true_reason,
)

STEP_CHECK, STEP_AWAIT_PROMOTION = 0, 1


def plan_blue_green(inp: RolloutInput) -> EndpointPlan:
    plan = inp.new_plan()
    desired, now, status, spec = inp.desired, inp.now, inp.status, inp.spec
    bg = spec.strategy.effective_blue_green()
    stable_id = inp.stable_id or ""
    fresh = start_or_resume(inp, plan, "preview")
    index = STEP_CHECK if fresh else status.current_step_index or 0
    ready_at = None if fresh else parse_iso(status.step_started_at)
    stable_ok, preview_ok = inp.available(stable_id), inp.available(desired.id)
    plan.replicas[desired.id] = spec.replicas  # a full stack: promotion is a pure switch

    route: dict[str, int] = {}
    if stable_ok:
        route[stable_id] = 100
    if preview_ok:
        route[desired.id] = 0  # listed at 0 so the gateway has it warm when the switch comes
    plan.route = route or None
    if stable_ok:
        plan.conditions += serving_conditions(status.stable_model or "")
    if hold_if_paused(inp, plan, plan.route):
        return plan
    stopped = pre_traffic(inp, plan, available=preview_ok, weight=0)
    if stopped is not None:
        return stopped
    if not preview_ok:
        waiting = f"waiting for preview revision {desired.id} (model {desired.model}) to become Available"
        plan.set_status(phase=PHASE_PROGRESSING, message=waiting)
        plan.conditions += [ConditionUpdate("Progressing", "True", "PreviewStarting", waiting), not_paused()]
        plan.requeue_after = WAIT_REQUEUE_S
        return plan
    if ready_at is None:
        ready_at = now
        plan.events.append(
            EventUpdate(
                "Normal", "PreviewReady", f"preview of model {desired.model} is Available at weight 0"
            )
        )

    message = ""
    paused_reason: str | None = None
    if index == STEP_CHECK:
        if bg.pre_promotion_analysis:
            outcome = run_analysis_step(
                inp,
                plan,
                step=STEP_CHECK,
                state=None if fresh else status.analysis,
                metrics=(),
                variant="preview",
                step_started=ready_at,
            )
            if outcome.action == "Request":
                return plan
            if outcome.action == "Rollback":
                return rollback(inp, plan, f"pre-promotion analysis: {outcome.reason}")
            if outcome.action == "Advance":
                plan.events.append(
                    EventUpdate("Normal", "AnalysisPassed", f"pre-promotion analysis: {outcome.reason}")
                )
                index = STEP_AWAIT_PROMOTION
            else:
                plan.requeue_after = outcome.requeue_after
                message = f"pre-promotion analysis: {outcome.reason}"
                if outcome.kept is not None:
                    paused_reason, message = outcome.kept
                elif outcome.action == "Pause":
                    paused_reason = "AnalysisNoData" if "no data" in outcome.reason else "AnalysisPaused"
                elif outcome.action == "Hold":
                    paused_reason = "AnalysisFailed"
                elif outcome.action == "Unavailable":
                    paused_reason = ANALYSIS_UNAVAILABLE
        else:
            index = STEP_AWAIT_PROMOTION

    if index == STEP_AWAIT_PROMOTION:
        if inp.promote_requested:
            plan.consumed.append(ANNOTATION_PROMOTE)
            return promote(inp, plan, "promoted by a person")
        if bg.auto_promotion_enabled:
            due = ready_at.timestamp() + (bg.auto_promotion_seconds or 0)
            if now.timestamp() >= due:
                return promote(inp, plan, "automatic blue-green switch")
            plan.requeue_after = max(0.5, due - now.timestamp())
            message = f"preview ready; switching in {due - now.timestamp():.0f}s"
        else:
            paused_reason = "AwaitingPromotion"
            message = "preview ready; annotate stt.dev/promote=true to switch traffic"

    plan.set_status(
        current_step_index=index,
        current_weight=0,
        step_started_at=iso(ready_at),
        message=short(message),
    )
    if paused_reason is not None:
        degraded = paused_reason == "AnalysisFailed"
        plan.status.phase = PHASE_DEGRADED if degraded else PHASE_PAUSED
        plan.conditions += [
            ConditionUpdate("Paused", "True", paused_reason, short(message)),
            ConditionUpdate("Progressing", "Unknown", paused_reason, short(message)),
        ]
        if degraded:
            plan.conditions.append(ConditionUpdate("Degraded", "True", paused_reason, short(message)))
        if true_reason(status, "Paused") != paused_reason:  # an Event when the pause begins
            kind = "Warning" if degraded else "Normal"
            plan.events.append(EventUpdate(kind, paused_reason, short(message)))
    else:
        plan.status.phase = PHASE_PROGRESSING
        plan.conditions += [
            ConditionUpdate("Progressing", "True", "PreviewReady", short(message)),
            not_paused(),
        ]
    if plan.requeue_after is None:
        plan.requeue_after = WAIT_REQUEUE_S
    return plan
