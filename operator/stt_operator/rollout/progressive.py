"""`Canary` and `Gradual` strategies: a list of steps (set a weight, pause, analyse), then promotion.

Gradual is Canary with generated steps: `stepWeight` more every `interval` up to `maxWeight`,
each weight held for the interval and, when `spec.analysis` has metrics, analysed before the
next. A weight is applied only once the new revision is Available (and, with
`scaleReplicasWithWeight`, scaled for that weight), so the route never names a backend that is
not ready. Step index, weight and timers live in status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stt_operator.api.common import parse_duration
from stt_operator.api.modeldeployment import (
    PHASE_DEGRADED,
    PHASE_PAUSED,
    PHASE_PROGRESSING,
    REASON_HELD_BY_ABTEST,
    REASON_ROLLOUT_PAUSED,
    ModelDeploymentSpec,
)
from stt_operator.rollout.gates import pre_traffic
from stt_operator.rollout.plan import ConditionUpdate, EndpointPlan, EventUpdate
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
    scaled_replicas,
    serving_conditions,
    short,
    true_reason,
)


@dataclass(frozen=True)
class Step:
    kind: str  # setWeight | pause | analysis
    weight: int = 0
    duration_s: float | None = None  # pause: None = until a person promotes; analysis: minimum
    metrics: tuple[str, ...] = ()  # analysis: names in spec.analysis.metrics (empty = all)

    def describe(self) -> str:
        if self.kind == "setWeight":
            return f"setWeight {self.weight}"
        if self.kind == "pause":
            return "pause" if self.duration_s is None else f"pause {self.duration_s:g}s"
        return "analysis" + (f" of {', '.join(self.metrics)}" if self.metrics else "")


def steps_for(spec: ModelDeploymentSpec) -> list[Step]:
    """The steps of a Canary (explicit or default) or Gradual strategy."""
    has_metrics = bool(spec.analysis and spec.analysis.metrics)
    if spec.strategy.type == "Gradual":
        gradual = spec.strategy.gradual
        assert gradual is not None  # admission requires the block
        interval = parse_duration(gradual.interval)
        hold = Step("analysis", duration_s=interval) if has_metrics else Step("pause", duration_s=interval)
        return [s for w in gradual.weights() for s in (Step("setWeight", weight=w), hold)]
    out: list[Step] = []
    for step in spec.canary_steps():
        if step.set_weight is not None:
            out.append(Step("setWeight", weight=step.set_weight))
        elif step.pause is not None:
            d = step.pause.duration
            out.append(Step("pause", duration_s=parse_duration(d) if d else None))
        else:
            assert step.analysis is not None
            out.append(Step("analysis", metrics=tuple(step.analysis.template_metrics or ())))
    return out


def start_or_resume(inp: RolloutInput, plan: EndpointPlan, role: str) -> bool:
    """Mark a new rollout in status when the desired revision is not the one in flight; drop a
    revision that was in flight before. Returns True when this reconcile starts the rollout."""
    status, desired = inp.status, inp.desired
    fresh = status.canary_revision != desired.id
    plan.ensure.append((desired, role))
    if not fresh:
        return False
    plan.delete = sorted(r for r in inp.observed if r not in (desired.id, inp.stable_id))
    plan.set_status(
        canary_revision=desired.id,
        canary_model=desired.model,
        current_step_index=0,
        current_weight=0,
        step_started_at=None,
        rollout_started_at=iso(inp.now),
        analysis=None,
    )
    plan.events.append(
        EventUpdate(
            "Normal",
            "RolloutStarted",
            f"{inp.spec.strategy.type} rollout of model {desired.model} ({desired.id}) started;"
            f" {status.stable_model} stays stable",
        )
    )
    return True


def hold_if_paused(inp: RolloutInput, plan: EndpointPlan, route: dict[str, int] | None) -> bool:
    """`spec.paused` or an ABTest holding the route: keep everything where it is."""
    held_by = inp.status.held_by
    if not (inp.spec.paused or held_by):
        return False
    if held_by:
        reason = REASON_HELD_BY_ABTEST
        message = f"ABTest {held_by} holds the route weights; the rollout waits"
    else:
        reason, message = REASON_ROLLOUT_PAUSED, "spec.paused is true; the rollout holds its current step"
        plan.route = route
    plan.set_status(phase=PHASE_PAUSED, message=message)
    plan.conditions += [
        ConditionUpdate("Paused", "True", reason, message),
        ConditionUpdate("Progressing", "Unknown", reason, message),
    ]
    return True


def plan_progressive(inp: RolloutInput, steps: Sequence[Step]) -> EndpointPlan:
    plan = inp.new_plan()
    desired, now, status, spec = inp.desired, inp.now, inp.status, inp.spec
    stable_id = inp.stable_id or ""
    fresh = start_or_resume(inp, plan, "canary")
    index = 0 if fresh else status.current_step_index or 0
    weight = 0 if fresh else status.current_weight or 0
    step_started = None if fresh else parse_iso(status.step_started_at)
    state = None if fresh else status.analysis
    canary_obs = inp.observed.get(desired.id)
    # Once the canary has traffic it keeps it while scaling up, as long as a pod of it is ready.
    serving = weight > 0 and canary_obs is not None and canary_obs.ready_replicas > 0
    stable_ok, canary_ok = inp.available(stable_id), inp.available(desired.id) or serving

    def scaled_for(need: int) -> bool:
        return canary_obs is not None and canary_obs.available and (canary_obs.replicas or 0) >= need

    stable_model = status.stable_model or ""

    def route(w: int) -> dict[str, int] | None:
        r = {}
        if stable_ok:
            r[stable_id] = 100 - w
        if canary_ok:
            r[desired.id] = w
        return r or None

    def replicas_for(w: int) -> int:
        return scaled_replicas(spec.replicas, w) if spec.scale_replicas_with_weight else spec.replicas

    plan.replicas[desired.id] = replicas_for(weight)
    plan.conditions += serving_conditions(stable_model) if stable_ok else []
    if hold_if_paused(inp, plan, route(weight)):
        return plan
    stopped = pre_traffic(inp, plan, available=canary_ok, weight=weight)
    if stopped is not None:
        return stopped
    if not canary_ok:
        waiting = f"waiting for revision {desired.id} (model {desired.model}) to become Available"
        plan.route = route(weight)
        plan.set_status(phase=PHASE_PROGRESSING, message=waiting)
        plan.conditions += [
            ConditionUpdate("Progressing", "True", "NewRevisionStarting", waiting),
            not_paused(),
        ]
        plan.requeue_after = WAIT_REQUEUE_S
        return plan

    progressing = ("Progressing", "StepInProgress", "")
    paused_why: tuple[str, str] | None = None
    total = len(steps)
    while index < total:
        step = steps[index]
        started = step_started or now
        where = f"step {index + 1}/{total} ({step.describe()})"
        if step.kind == "setWeight":
            need = replicas_for(step.weight)
            if not scaled_for(need if spec.scale_replicas_with_weight else 0):
                plan.replicas[desired.id] = need
                progressing = (
                    "Progressing",
                    "ScalingCanary",
                    f"{where}: scaling canary to {need} replica(s)",
                )
                plan.requeue_after = WAIT_REQUEUE_S
                break
            if step.weight != weight:
                plan.events.append(
                    EventUpdate(
                        "Normal",
                        "WeightChanged",
                        f"{where}: model {desired.model} gets {step.weight}% of traffic",
                    )
                )
                weight = step.weight
        elif inp.promote_requested and ANNOTATION_PROMOTE not in plan.consumed:
            # A person's promote ends the current pause or analysis step (one step per request).
            plan.consumed.append(ANNOTATION_PROMOTE)
            plan.events.append(
                EventUpdate("Normal", "StepSkipped", f"{where}: skipped on {ANNOTATION_PROMOTE}")
            )
            plan.status.analysis = state = None
        elif step.kind == "pause":
            if step.duration_s is None:
                paused_why = (
                    "PausedAtStep",
                    f"{where}: paused until a person resumes (annotate {ANNOTATION_PROMOTE}=true)",
                )
                step_started = started
                break
            if now.timestamp() < started.timestamp() + step.duration_s:
                step_started = started
                left = started.timestamp() + step.duration_s - now.timestamp()
                progressing = ("Progressing", "StepInProgress", f"{where}: {left:.0f}s left")
                plan.requeue_after = max(0.5, left)
                break
        else:
            outcome = run_analysis_step(
                inp,
                plan,
                step=index,
                state=state,
                metrics=step.metrics,
                variant="canary",
                step_started=started,
                min_duration_s=step.duration_s or 0.0,
            )
            step_started = started
            if outcome.action == "Request":
                return plan  # the controller queries Prometheus and plans again
            if outcome.action == "Rollback":
                return rollback(inp, plan, f"{where}: {outcome.reason}")
            if outcome.action != "Advance":
                plan.requeue_after = outcome.requeue_after
                if outcome.kept is not None:
                    paused_why = outcome.kept
                elif outcome.action == "Pause":
                    reason = "AnalysisNoData" if "no data" in outcome.reason else "AnalysisPaused"
                    paused_why = (reason, f"{where}: {outcome.reason}")
                elif outcome.action == "Hold":
                    paused_why = (
                        "AnalysisFailed",
                        f"{where}: {outcome.reason}; automatic rollback is off, a person decides",
                    )
                elif outcome.action == "Unavailable":
                    paused_why = (ANALYSIS_UNAVAILABLE, f"{where}: {outcome.reason}")
                else:
                    progressing = ("Progressing", "AnalysisRunning", f"{where}: {outcome.reason}")
                break
            plan.events.append(EventUpdate("Normal", "AnalysisPassed", f"{where}: {outcome.reason}"))
            plan.status.analysis = state = None
        # The step is done: on to the next one, with its own timer.
        index += 1
        step_started = None
        plan.events.append(EventUpdate("Normal", "StepAdvanced", f"{where} done"))

    if index >= total:
        need = spec.replicas
        if not scaled_for(need if spec.scale_replicas_with_weight else 0):
            plan.replicas[desired.id] = need
            progressing = (
                "Progressing",
                "ScalingCanary",
                f"scaling model {desired.model} to {need} replica(s)",
            )
            plan.requeue_after = WAIT_REQUEUE_S
        else:
            plan.replicas[desired.id] = need
            return promote(inp, plan, f"after {total} step(s)")

    plan.route = route(weight)
    plan.replicas[desired.id] = max(plan.replicas[desired.id], replicas_for(weight))
    plan.set_status(
        current_step_index=index,
        current_weight=weight,
        step_started_at=iso(step_started or now),
    )
    if paused_why is not None:
        reason, message = paused_why
        degraded = reason == "AnalysisFailed"
        plan.set_status(phase=PHASE_DEGRADED if degraded else PHASE_PAUSED, message=short(message))
        plan.conditions += [
            ConditionUpdate("Paused", "True", reason, short(message)),
            ConditionUpdate("Progressing", "Unknown", reason, short(message)),
        ]
        if degraded:
            plan.conditions.append(ConditionUpdate("Degraded", "True", reason, short(message)))
        if true_reason(status, "Paused") != reason:  # an Event when the pause begins, not every look
            plan.events.append(EventUpdate("Warning" if degraded else "Normal", reason, short(message)))
    else:
        _, reason, message = progressing
        message = message or f"step {index + 1}/{total}: model {desired.model} at {weight}%"
        plan.set_status(phase=PHASE_PROGRESSING, message=short(message))
        plan.conditions += [ConditionUpdate("Progressing", "True", reason, short(message)), not_paused()]
    if plan.requeue_after is None:
        plan.requeue_after = WAIT_REQUEUE_S
    return plan
