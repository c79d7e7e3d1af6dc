"""Pre-traffic gates of the rollout planners (rollout/gates.py): capacity pre-flight,
spec.progressDeadline and the smoke transcription, driven reconcile by reconcile."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from tests.unit.operator.test_rollout_strategies import NEW, OLD, World, canary, spec_of

from stt_operator.rollout.capacity import CapacityVerdict
from stt_operator.rollout.dispatch import plan_rollout
from stt_operator.rollout.plan import EndpointPlan, SmokeResult

SHORT = CapacityVerdict(
    False,
    "InsufficientGPU",
    "only 0 of 1 pod(s) fit on 2 matching node(s): nvidia.com/gpu needs 8 per pod, at most 4 free",
    {"nvidia.com/gpu": "needs 8 per pod, at most 4 free"},
)
FITS = CapacityVerdict(True, "CapacityAvailable", "1 pod(s) fit on 2 matching node(s)")
STEPS = ({"setWeight": 20}, {"pause": {"duration": "1m"}})


class GatedWorld(World):
    """World with a capacity verdict (while the new revision has no stack) and a smoke answer."""

    def __init__(
        self, spec: Any, *, capacity: CapacityVerdict | None = None, smoke: str | None = None, **kw: Any
    ):
        super().__init__(spec, **kw)
        self.capacity = capacity
        self.smoke_answer = smoke  # Passed | Failed | Error; None: smoke off
        self.smoke_calls = 0

    def step(self, analysis: Any = None, promote: bool = False, advance_s: float = 0.0) -> EndpointPlan:
        self.now += timedelta(seconds=advance_s)
        inp = replace(
            self.inputs(promote),
            capacity=self.capacity if NEW.id not in self.observed else None,
            smoke_enabled=self.smoke_answer is not None,
        )
        plan = plan_rollout(inp)
        if plan.smoke_request is not None:
            self.smoke_calls += 1
            assert plan.smoke_request.revision == NEW.id
            transcript = {"Passed": "turn on the kitchen lights", "Failed": "turn on the heater"}.get(
                self.smoke_answer or ""
            )
            message = "no answer" if transcript is None else f'transcribed "{transcript}"'
            result = SmokeResult(
                NEW.id, self.smoke_answer or "Error", "turn on the kitchen lights", transcript, message
            )
            plan = plan_rollout(replace(inp, smoke=result))
            assert plan.smoke_request is None
        if plan.route is not None:
            assert all(self.observed[r].available for r in plan.route) and sum(plan.route.values()) == 100
        self.apply(inp, plan)
        return plan


@pytest.mark.parametrize("strategy", ["Canary", "BlueGreen"])
def test_no_room_blocks_the_stack_with_a_condition_and_one_event_then_the_deadline_aborts(
    strategy: str,
) -> None:
    spec = (
        canary(*STEPS, progressDeadline="2m")
        if strategy == "Canary"
        else spec_of({"type": "BlueGreen"}, progressDeadline="2m")
    )
    world = GatedWorld(spec, capacity=SHORT)
    for _ in range(3):
        plan = world.step(advance_s=10)
        assert plan.ensure == [] or all(r.id != NEW.id for r, _ in plan.ensure)  # no stack for it
        assert plan.route == {OLD.id: 100}
    assert NEW.id not in world.observed
    cond = world.condition("CapacityAvailable")
    assert (cond["status"], cond["reason"]) == ("False", "InsufficientGPU")
    assert "nvidia.com/gpu needs 8 per pod" in cond["message"]
    assert world.reasons().count("InsufficientGPU") == 1  # an Event on the transition only
    assert world.status["phase"] == "Progressing"
    plan = world.step(advance_s=120)  # past the deadline
    assert plan.route == {OLD.id: 100}
    progressing = world.condition("Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert "progressDeadline 2m" in progressing["message"]
    assert "ProgressDeadlineExceeded" in world.reasons() and "RolledBack" in world.reasons()
    assert world.status["revisions"][-1]["outcome"] == "RolledBack"
    assert world.condition("CapacityAvailable")["status"] == "False"
    # It stays rolled back (not retried until the spec changes or a person retries).
    world.capacity = FITS
    world.step(advance_s=10)
    assert NEW.id not in world.observed and world.routes[-1] == {OLD.id: 100}


def test_room_frees_up_before_the_deadline_and_the_rollout_goes_on() -> None:
    world = GatedWorld(canary(*STEPS), capacity=SHORT)
    world.step()
    world.capacity = FITS
    world.step(advance_s=10)  # the stack is created
    assert NEW.id in world.observed
    assert world.condition("CapacityAvailable")["status"] == "True"
    world.step()
    assert world.status["currentWeight"] == 20


def test_a_revision_that_never_becomes_available_is_aborted_at_the_deadline() -> None:
    world = GatedWorld(canary(*STEPS, progressDeadline="30s"), capacity=FITS, canary_available=False)
    world.step()
    world.step(advance_s=20)
    assert world.status.get("phase") == "Progressing" and NEW.id in world.observed
    world.step(advance_s=20)
    assert world.condition("Progressing")["reason"] == "ProgressDeadlineExceeded"
    assert "did not become Available" in world.condition("Progressing")["message"]
    assert NEW.id not in world.observed and world.routes[-1] == {OLD.id: 100}


def test_smoke_pass_lets_weight_through_once() -> None:
    world = GatedWorld(canary(*STEPS), capacity=FITS, smoke="Passed")
    world.begin()
    world.step()
    assert world.status["currentWeight"] == 20
    assert world.smoke_calls == 1  # recorded in status, not asked again
    assert world.status["smokeTest"]["outcome"] == "Passed"
    assert world.condition("SmokeTest")["status"] == "True"


@pytest.mark.parametrize("strategy", ["Canary", "BlueGreen"])
def test_a_wrong_transcript_rolls_back_with_the_transcript_and_no_weight(strategy: str) -> None:
    spec = canary(*STEPS) if strategy == "Canary" else spec_of({"type": "BlueGreen"})
    world = GatedWorld(spec, capacity=FITS, smoke="Failed")
    world.begin()
    world.step()
    assert all(r is None or r.get(NEW.id, 0) == 0 for r in world.routes)
    cond = world.condition("SmokeTest")
    assert (cond["status"], cond["reason"]) == ("False", "SmokeTestFailed")
    assert "turn on the heater" in cond["message"]
    assert world.condition("Progressing")["reason"] == "SmokeTestFailed"
    assert "turn on the heater" in world.status["lastRollback"]["reason"]
    assert NEW.id not in world.observed


def test_a_wrong_transcript_without_automatic_rollback_holds_at_zero() -> None:
    world = GatedWorld(canary(*STEPS, rollback={"automatic": False}), capacity=FITS, smoke="Failed")
    world.begin()
    for _ in range(3):
        world.step(advance_s=5)
    assert world.smoke_calls == 1 and world.status["phase"] == "Degraded"
    assert world.condition("Degraded")["reason"] == "SmokeTestFailed"
    assert all(r is None or r.get(NEW.id, 0) == 0 for r in world.routes)


def test_no_answer_is_retried_until_the_deadline() -> None:
    world = GatedWorld(canary(*STEPS, progressDeadline="1m"), capacity=FITS, smoke="Error")
    world.begin()
    for _ in range(3):
        world.step(advance_s=10)
    assert world.condition("SmokeTest")["reason"] == "SmokeTestError"
    assert world.status["phase"] == "Progressing" and world.smoke_calls >= 3
    assert world.reasons().count("SmokeTestError") == 1
    world.step(advance_s=60)
    assert world.condition("Progressing")["reason"] == "ProgressDeadlineExceeded"
    assert all(r is None or r.get(NEW.id, 0) == 0 for r in world.routes)


def test_defaults_are_off_for_smoke_and_ten_minutes_for_the_deadline() -> None:
    spec = canary(*STEPS)
    assert spec.smoke_test is None and spec.progress_deadline_seconds() == 600
    world = GatedWorld(spec)  # no verdict, smoke off: the planner behaves as before
    world.begin()
    world.step()
    assert world.status["currentWeight"] == 20 and world.smoke_calls == 0


def test_immediate_switch_waits_for_room_and_is_aborted_at_the_deadline() -> None:
    world = GatedWorld(spec_of({"type": "Immediate"}, progressDeadline="1m"), capacity=SHORT)
    world.step()
    world.step(advance_s=30)
    assert NEW.id not in world.observed and world.routes[-1] == {OLD.id: 100}
    assert world.condition("CapacityAvailable")["reason"] == "InsufficientGPU"
    world.step(advance_s=40)
    assert world.condition("Progressing")["reason"] == "ProgressDeadlineExceeded"
    world.capacity = FITS  # rolled back: not tried again until the spec changes
    world.step(advance_s=10)
    assert NEW.id not in world.observed and world.status["stableRevision"] == OLD.id


def test_immediate_switch_happens_after_a_passed_smoke_test_and_keeps_its_record() -> None:
    world = GatedWorld(spec_of({"type": "Immediate"}), capacity=FITS, smoke="Passed")
    world.step()  # the new stack comes up
    assert world.routes[-1] == {OLD.id: 100} and world.status.get("rolloutStartedAt")
    world.step()  # smoke-tested, then all traffic
    assert world.smoke_calls == 1 and world.routes[-1] == {NEW.id: 100}
    assert world.status["stableRevision"] == NEW.id and world.status["smokeTest"]["outcome"] == "Passed"
    assert world.condition("SmokeTest")["status"] == "True" and "SmokeTestPassed" in world.reasons()


def test_immediate_switch_is_refused_on_a_wrong_transcript() -> None:
    world = GatedWorld(spec_of({"type": "Immediate"}), capacity=FITS, smoke="Failed")
    world.step()
    world.step()
    world.step()
    assert world.status["stableRevision"] == OLD.id and all(r == {OLD.id: 100} for r in world.routes if r)
    assert world.condition("Progressing")["reason"] == "SmokeTestFailed" and world.smoke_calls == 1
