"""What a new revision must pass before it gets any traffic (Canary, Gradual, BlueGreen).

1. Capacity pre-flight: its pods fit on the nodes they may use (`rollout/capacity.py`; the
   controller observes, this decides). While they do not, its stack is not created: the
   rollout waits with `CapacityAvailable=False` (reason InsufficientGPU, ...) and a Warning
   Event naming what is short, and the stable keeps all traffic.
2. `spec.progressDeadline`: a revision that is not scheduled, Available and smoke-tested within
   the deadline after its rollout started is rolled back with reason ProgressDeadlineExceeded,
   instead of the rollout waiting for ever.
3. Smoke transcription (`spec.smokeTest`): the controller sends a known utterance through the
   revision's own Service (`SmokeRequest`); a wrong transcript rolls it back (reason
   SmokeTestFailed, the transcript in the message), no answer is retried until the deadline.

`pre_traffic(...)` returns a finished plan when the rollout stops here in this reconcile, or
None when the strategy goes on.
"""

from __future__ import annotations

from stt_operator.api.common import iso, parse_duration, parse_iso
from stt_operator.api.modeldeployment import (
    PHASE_DEGRADED,
    PHASE_PROGRESSING,
    REASON_PROGRESS_DEADLINE_EXCEEDED,
    REASON_SMOKE_TEST_FAILED,
    SmokeTestStatus,
)
from stt_operator.rollout.plan import ConditionUpdate, EndpointPlan, EventUpdate, SmokeRequest
from stt_operator.rollout.transitions import RolloutInput, condition_of, not_paused, rollback, short

CAPACITY_RECHECK_S = 10.0  # a blocked revision looks at the nodes again at this pace
SMOKE_RETRY_S = 5.0


def deadline_exceeded(inp: RolloutInput, plan: EndpointPlan) -> float | None:
    """Seconds past `spec.progressDeadline` since the rollout started (None: not past it)."""
    started = parse_iso(plan.status.rollout_started_at or inp.status.rollout_started_at)
    if started is None:
        return None
    late = inp.now.timestamp() - started.timestamp() - inp.spec.progress_deadline_seconds()
    return late if late >= 0 else None


def _abort_late(inp: RolloutInput, plan: EndpointPlan, what: str) -> EndpointPlan | None:
    if deadline_exceeded(inp, plan) is None:
        return None
    reason = (
        f"revision {inp.desired.id} (model {inp.desired.model}) {what} within"
        f" progressDeadline {inp.spec.progress_deadline}"
    )
    return rollback(inp, plan, reason, code=REASON_PROGRESS_DEADLINE_EXCEEDED)


def _stable_route(inp: RolloutInput) -> dict[str, int] | None:
    stable = inp.stable_id
    return {stable: 100} if stable and inp.available(stable) else None


def _wait(inp: RolloutInput, plan: EndpointPlan, reason: str, message: str, requeue: float) -> EndpointPlan:
    plan.route = _stable_route(inp)
    plan.set_status(phase=PHASE_PROGRESSING, message=short(message), current_weight=0)
    plan.conditions += [ConditionUpdate("Progressing", "True", reason, short(message)), not_paused()]
    plan.requeue_after = requeue
    return plan


def capacity_gate(inp: RolloutInput, plan: EndpointPlan) -> EndpointPlan | None:
    verdict = inp.capacity
    if verdict is None or inp.desired.id in inp.observed:
        return None  # not checked, or its stack exists already (the scheduler has it)
    if verdict.fits:
        plan.conditions.append(ConditionUpdate("CapacityAvailable", "True", verdict.reason, verdict.message))
        return None
    desired = inp.desired
    message = short(f"revision {desired.id} (model {desired.model}) cannot be scheduled: {verdict.message}")
    plan.ensure = [(r, role) for r, role in plan.ensure if r.id != desired.id]
    plan.conditions.append(ConditionUpdate("CapacityAvailable", "False", verdict.reason, message))
    late = _abort_late(inp, plan, "found no room for its pods")
    if late is not None:
        return late
    before = condition_of(inp.status, "CapacityAvailable")
    if before is None or (before.status, before.reason) != ("False", verdict.reason):
        plan.events.append(EventUpdate("Warning", verdict.reason, message))
    return _wait(inp, plan, verdict.reason, message, CAPACITY_RECHECK_S)


def _smoke_state(inp: RolloutInput) -> SmokeTestStatus:
    """The smoke test of the desired revision so far (an empty one before its first)."""
    state = inp.status.smoke_test
    return state if state is not None and state.revision == inp.desired.id else SmokeTestStatus()


def smoke_gate(inp: RolloutInput, plan: EndpointPlan) -> EndpointPlan | None:
    if not inp.smoke_enabled:
        return None
    desired = inp.desired
    state = _smoke_state(inp)
    result = inp.smoke if inp.smoke is not None and inp.smoke.revision == desired.id else None
    if result is None:
        if state.outcome == "Passed":
            return None
        if state.outcome == "Failed":  # automatic rollback is off: a person decides
            message = short(f"smoke test of revision {desired.id} failed: {state.message or ''}")
            return _held_at_zero(inp, plan, message)
        late = _abort_late(inp, plan, "gave no smoke-test answer")
        if late is not None:
            return late
        timeout = inp.spec.smoke_test.timeout if inp.spec.smoke_test else "30s"
        plan.smoke_request = SmokeRequest(desired.id, desired.model, parse_duration(timeout))
        return plan
    attempts = state.attempts + 1
    plan.status.smoke_test = SmokeTestStatus(
        revision=desired.id,
        outcome=result.outcome,
        expected=short(result.expected),
        transcript=short(result.transcript) if result.transcript is not None else None,
        message=short(result.message),
        at=iso(inp.now),
        attempts=attempts,
    )
    if result.outcome == "Passed":
        message = short(f"revision {desired.id} (model {desired.model}): {result.message}")
        plan.conditions.append(ConditionUpdate("SmokeTest", "True", "SmokeTestPassed", message))
        plan.events.append(EventUpdate("Normal", "SmokeTestPassed", message))
        return None
    if result.outcome == "Failed":
        message = short(f"revision {desired.id} (model {desired.model}): {result.message}")
        plan.conditions.append(ConditionUpdate("SmokeTest", "False", "SmokeTestFailed", message))
        if inp.spec.rollback.automatic:
            return rollback(inp, plan, f"smoke test failed: {result.message}", code=REASON_SMOKE_TEST_FAILED)
        plan.events.append(EventUpdate("Warning", "SmokeTestFailed", message))
        return _held_at_zero(inp, plan, message)
    message = short(f"revision {desired.id} (model {desired.model}), attempt {attempts}: {result.message}")
    plan.conditions.append(ConditionUpdate("SmokeTest", "False", "SmokeTestError", message))
    late = _abort_late(inp, plan, "gave no smoke-test answer")
    if late is not None:
        return late
    smoke = condition_of(inp.status, "SmokeTest")
    if smoke is None or smoke.reason != "SmokeTestError":
        plan.events.append(EventUpdate("Warning", "SmokeTestError", message))
    return _wait(inp, plan, "SmokeTestError", message, SMOKE_RETRY_S)


def pre_traffic(
    inp: RolloutInput, plan: EndpointPlan, *, available: bool, weight: int
) -> EndpointPlan | None:
    """The gates in order; `available`: the revision's Deployment is Available; `weight`: its
    current weight (a revision that already has traffic passed them)."""
    if weight > 0:
        return None
    stopped = capacity_gate(inp, plan)
    if stopped is not None:
        return stopped
    if not available:
        late = _abort_late(inp, plan, "did not become Available")
        if late is not None:
            return late
        return None  # the strategy's own "waiting for the revision" plan
    return smoke_gate(inp, plan)


def _held_at_zero(inp: RolloutInput, plan: EndpointPlan, message: str) -> EndpointPlan:
    """A failed smoke test with automatic rollback off: the revision keeps weight 0 and the
    endpoint says Degraded until a person aborts or changes the spec."""
    plan.route = _stable_route(inp)
    plan.set_status(phase=PHASE_DEGRADED, message=message, current_weight=0)
    plan.conditions += [
        ConditionUpdate("Progressing", "Unknown", "SmokeTestFailed", message),
        ConditionUpdate("Degraded", "True", "SmokeTestFailed", message),
    ]
    return plan
