"""One entry point for every strategy: which planner runs for this reconcile.

- no stable revision yet: the first model is deployed directly (nothing to compare it with);
- the desired revision is stable: steady state (serve it, retire the rest);
- the desired revision was rolled back: keep the stable one until the spec changes;
- a person annotated `stt.dev/abort`: roll the rollout in flight back now;
- otherwise the spec's strategy moves traffic: Immediate, Gradual, Canary or BlueGreen.
"""

from __future__ import annotations

from stt_operator.api.common import iso
from stt_operator.api.modeldeployment import (
    PHASE_HEALTHY,
    REASON_HELD_BY_ABTEST,
    STRATEGY_BLUE_GREEN,
    STRATEGY_IMMEDIATE,
)
from stt_operator.rollout.bluegreen import plan_blue_green
from stt_operator.rollout.gates import pre_traffic
from stt_operator.rollout.immediate import plan_immediate
from stt_operator.rollout.monitoring import plan_monitoring
from stt_operator.rollout.plan import ConditionUpdate, EndpointPlan
from stt_operator.rollout.progressive import plan_progressive, steps_for
from stt_operator.rollout.transitions import (
    ANNOTATION_ABORT,
    ANNOTATION_PROMOTE,
    RolloutInput,
    plan_rolled_back,
    plan_steady,
    rollback,
    rolled_back,
    serving_conditions,
)


def scale_down_delay_s(inp: RolloutInput) -> float:
    spec = inp.spec
    if spec.strategy.type == STRATEGY_BLUE_GREEN:
        return float(spec.strategy.effective_blue_green().scale_down_delay_seconds)
    return spec.scale_down_delay_seconds()


def _nothing_in_flight(inp: RolloutInput, plan: EndpointPlan) -> EndpointPlan:
    """A promote or abort with no rollout to act on is dropped, so it cannot surprise the next one."""
    if inp.promote_requested:
        plan.consumed.append(ANNOTATION_PROMOTE)
    if inp.abort_requested:
        plan.consumed.append(ANNOTATION_ABORT)
    return plan


def plan_rollout(inp: RolloutInput) -> EndpointPlan:
    plan = _plan(inp)
    held_by = inp.status.held_by
    if not held_by:
        _monitor(inp, plan)
    if held_by:
        # Exactly one controller writes an endpoint's weights: while an ABTest holds the route,
        # this one leaves it alone and says so. Nothing moves either: the test's route may name
        # the stable revision, so no promotion, rollback or retirement happens under a hold
        # (the new revision may still be brought up, ready for when the test lets go).
        message = f"ABTest {held_by} holds the route weights; the rollout waits"
        plan.route = None
        plan.delete = []
        found = inp.status.model_copy(deep=True)  # the plan keeps owning what it holds
        plan.set_status(**{name: getattr(found, name) for name in HELD_STATUS_FIELDS})
        plan.events = []
        plan.conditions = [c for c in plan.conditions if c.type != "Paused"]
        plan.conditions.append(ConditionUpdate("Paused", "True", REASON_HELD_BY_ABTEST, message))
    return plan


def _monitor(inp: RolloutInput, plan: EndpointPlan) -> None:
    """spec.monitoring on a Healthy endpoint (the desired revision serves, nothing in flight):
    one look per interval, judged by rollout/monitoring.py, merged into the steady plan."""
    monitoring = inp.spec.monitoring
    if monitoring is None:
        plan.status.monitoring = None  # removed from the spec: re-adding starts afresh
        return
    # The plan's own stable revision when it promotes one in this reconcile: nothing else
    # would wake a Healthy endpoint to start watching it (reconciles are event-driven).
    stable = plan.status.stable_revision
    if not stable or inp.desired.id != stable or plan.status.phase != PHASE_HEALTHY:
        return
    if plan.status.canary_revision or plan.analysis_request is not None or plan.smoke_request is not None:
        return
    stable_model = plan.status.stable_model or inp.desired.model
    mon = plan_monitoring(monitoring, inp.status, stable, stable_model, inp.now, inp.monitoring)
    if mon.status is not None:
        plan.status.monitoring = mon.status
    plan.monitoring_request = mon.request
    plan.conditions = [c for c in plan.conditions if c.type not in {m.type for m in mon.conditions}]
    plan.conditions += mon.conditions
    plan.events += mon.events
    if mon.phase is not None:
        plan.status.phase = mon.phase
    if mon.revisions is not None:
        plan.status.revisions = mon.revisions
    if mon.last_rollback is not None:
        plan.status.last_rollback = mon.last_rollback
    plan.undo_to_revision = mon.undo_to_revision
    if mon.requeue_after is not None:
        plan.requeue_after = min(plan.requeue_after or mon.requeue_after, mon.requeue_after)


# Status that says which revision serves and how far a rollout got: frozen while an ABTest holds.
HELD_STATUS_FIELDS = (
    "phase",
    "stable_revision",
    "stable_model",
    "canary_revision",
    "canary_model",
    "current_weight",
    "current_step_index",
    "step_started_at",
    "rollout_started_at",
    "revisions",
    "last_rollback",
    "analysis",
)


def _immediate_gates(inp: RolloutInput, plan: EndpointPlan) -> EndpointPlan | None:
    """Immediate from a serving stable: the same pre-traffic gates as the other strategies
    (capacity, progressDeadline, smoke test) before the switch; a revision they rolled back
    stays so until the spec changes. None: go on with the Immediate planner (what the gates
    recorded in `plan` is kept)."""
    if rolled_back(inp) is not None:
        return _nothing_in_flight(inp, plan_rolled_back(inp))
    plan.ensure.append((inp.desired, "canary"))
    if inp.status.canary_revision != inp.desired.id or not inp.status.rollout_started_at:
        plan.set_status(
            canary_revision=inp.desired.id, canary_model=inp.desired.model, rollout_started_at=iso(inp.now)
        )
    if inp.available(inp.stable_id):
        plan.conditions += serving_conditions(inp.status.stable_model or "")
    gated = pre_traffic(inp, plan, available=inp.available(inp.desired.id), weight=0)
    if gated is not None:
        return _nothing_in_flight(inp, gated)
    return None


def _plan(inp: RolloutInput) -> EndpointPlan:
    spec, stable_id = inp.spec, inp.stable_id
    started: str | None = None  # Immediate past its gates: when its rollout started
    gates = inp.new_plan()
    if stable_id is not None and spec.strategy.type == STRATEGY_IMMEDIATE and inp.desired.id != stable_id:
        gated = _immediate_gates(inp, gates)
        if gated is not None:
            return gated
        started = inp.status.rollout_started_at or iso(inp.now)
    if stable_id is None or spec.strategy.type == STRATEGY_IMMEDIATE:
        plan = plan_immediate(
            inp.desired,
            inp.status,
            inp.observed,
            inp.now,
            scale_down_delay_s=scale_down_delay_s(inp),
            history_limit=spec.rollback.revision_history_limit,
        )
        if plan.status.phase == PHASE_HEALTHY:
            # The strategy may have changed to Immediate mid-rollout: no step state survives it.
            plan.set_status(
                current_step_index=None, step_started_at=None, rollout_started_at=None, analysis=None
            )
        elif started:
            plan.status.rollout_started_at = started  # the progressDeadline counts from here
        # What the gates found (a passed smoke test, the capacity verdict) is kept.
        plan.status.smoke_test = gates.status.smoke_test
        plan.conditions += [c for c in gates.conditions if c.type in ("CapacityAvailable", "SmokeTest")]
        plan.events += gates.events
        return _nothing_in_flight(inp, plan)
    if inp.desired.id == stable_id:
        return _nothing_in_flight(inp, plan_steady(inp, scale_down_delay_s(inp)))
    if rolled_back(inp) is not None:
        return _nothing_in_flight(inp, plan_rolled_back(inp))
    if inp.abort_requested:
        # A person's rollback of the rollout in flight: the same path as an automatic one.
        plan = rollback(inp, inp.new_plan(), f"aborted by a person ({ANNOTATION_ABORT})")
        plan.consumed.append(ANNOTATION_ABORT)
        return plan
    if spec.strategy.type == STRATEGY_BLUE_GREEN:
        return plan_blue_green(inp)
    return plan_progressive(inp, steps_for(spec))
