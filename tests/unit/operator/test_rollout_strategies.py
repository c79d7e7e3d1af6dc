"""The Gradual / Canary / BlueGreen planners, driven reconcile by reconcile from status only."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stt_harness.mergepatch import apply_merge_patch
from stt_operator.analysis.model import AnalysisResult, MetricResult
from stt_operator.analysis.prom import NOT_CONFIGURED
from stt_operator.api.modeldeployment import ModelDeployment, ModelDeploymentStatus
from stt_operator.builders.serving import Revision
from stt_operator.controllers.status import status_changes
from stt_operator.rollout.dispatch import plan_rollout
from stt_operator.rollout.plan import AnalysisRequest, EndpointPlan, ObservedRevision
from stt_operator.rollout.progressive import Step, steps_for
from stt_operator.rollout.transitions import RolloutInput

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OLD = Revision("model-a", "sha256:a")
NEW = Revision("model-b", "sha256:b")
WER = {"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.05, "minSamples": 10}


def spec_of(strategy: dict[str, Any], **extra: Any) -> Any:
    return ModelDeployment.spec_from(
        {"model": {"name": NEW.model}, "strategy": strategy, **extra}, name="asr"
    )


def canary(*steps: dict[str, Any], **extra: Any) -> Any:
    return spec_of({"type": "Canary", "canary": {"steps": list(steps)}}, **extra)


ANALYSIS = {"analysis": {"interval": "10s", "metrics": [WER]}}


def result(outcome: str, message: str = "") -> AnalysisResult:
    message = message or f"wer {outcome}"
    return AnalysisResult(outcome, message, (MetricResult("wer", outcome, message, value=0.1, baseline=0.1),))


def stable_status(at: datetime = T0 - timedelta(hours=1)) -> dict[str, Any]:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "stableRevision": OLD.id,
        "stableModel": OLD.model,
        "currentWeight": 100,
        "phase": "Healthy",
        "revisions": [
            {
                "revision": 1,
                "revisionId": OLD.id,
                "model": OLD.model,
                "modelDigest": OLD.model_digest,
                "createdAt": stamp,
                "promotedAt": stamp,
                "outcome": "Serving",
            }
        ],
    }


class World:
    """The cluster as the planner sees it, plus status; `step()` is one reconcile."""

    def __init__(self, spec: Any, *, canary_available: bool = True, desired: Revision = NEW) -> None:
        self.spec = spec
        self.desired = desired
        self.status: dict[str, Any] = stable_status()
        self.observed: dict[str, ObservedRevision] = {OLD.id: ObservedRevision(OLD.id, OLD.model, True, 1, 1)}
        self.canary_available = canary_available
        self.now = T0
        self.requests: list[AnalysisRequest] = []
        self.events: list[tuple[str, str]] = []
        self.routes: list[dict[str, int] | None] = []

    def begin(self) -> None:
        """Two reconciles at T0: the rollout starts, then its new revision is found Available."""
        self.step()
        self.step()

    def inputs(self, promote: bool = False) -> RolloutInput:
        status = ModelDeploymentStatus.model_validate(self.status)
        return RolloutInput(self.desired, self.spec, status, self.observed, self.now, promote)

    def step(
        self,
        analysis: Callable[[AnalysisRequest], AnalysisResult] | None = None,
        promote: bool = False,
        advance_s: float = 0.0,
    ) -> EndpointPlan:
        self.now += timedelta(seconds=advance_s)
        inp = self.inputs(promote)
        plan = plan_rollout(inp)
        if plan.analysis_request is not None:
            assert analysis is not None, f"unexpected analysis request {plan.analysis_request}"
            self.requests.append(plan.analysis_request)
            plan = plan_rollout(
                replace(inp, analysis=(plan.analysis_request, analysis(plan.analysis_request)))
            )
            assert plan.analysis_request is None
        # Every route names only ready revisions (Available, or a routed canary scaling up).
        if plan.route is not None:
            assert all(self.observed[r].available or self.observed[r].ready_replicas for r in plan.route)
            assert sum(plan.route.values()) == 100
        self.apply(inp, plan)
        return plan

    def apply(self, inp: RolloutInput, plan: EndpointPlan) -> None:
        apply_merge_patch(self.status, status_changes(inp.status, plan.status))
        conditions = {c["type"]: c for c in self.status.get("conditions") or []}
        for c in plan.conditions:
            conditions[c.type] = {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
            }
        self.status["conditions"] = list(conditions.values())
        for revision, _role in plan.ensure:
            replicas = plan.replicas.get(revision.id, self.spec.replicas)
            available = self.canary_available if revision.id != OLD.id else True
            ready = replicas if available else 0
            self.observed[revision.id] = ObservedRevision(
                revision.id, revision.model, available, replicas, ready
            )
        for rid in plan.delete:
            self.observed.pop(rid, None)
        self.events += [(e.type, e.reason) for e in plan.events]
        self.routes.append(plan.route)
        assert ModelDeploymentStatus.unknown_fields(self.status) == []

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == type_)

    def reasons(self) -> list[str]:
        return [r for _, r in self.events]


# --- steps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "extra", "expected"),
    [
        (
            {"type": "Canary", "canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]}},
            {},
            [Step("setWeight", 10), Step("pause"), Step("setWeight", 50)],
        ),
        (
            {"type": "Canary"},
            {},
            [
                Step("setWeight", 10),
                Step("pause", duration_s=60),
                Step("setWeight", 50),
                Step("pause", duration_s=60),
            ],
        ),
        (
            {"type": "Canary"},
            ANALYSIS,
            [Step("setWeight", 10), Step("analysis"), Step("setWeight", 50), Step("analysis")],
        ),
        (
            {"type": "Gradual", "gradual": {"stepWeight": 40, "interval": "30s"}},
            {},
            [
                Step("setWeight", 40),
                Step("pause", duration_s=30),
                Step("setWeight", 80),
                Step("pause", duration_s=30),
                Step("setWeight", 100),
                Step("pause", duration_s=30),
            ],
        ),
        (
            {"type": "Gradual", "gradual": {"stepWeight": 30, "maxWeight": 50, "interval": "1m"}},
            ANALYSIS,
            [
                Step("setWeight", 30),
                Step("analysis", duration_s=60),
                Step("setWeight", 50),
                Step("analysis", duration_s=60),
            ],
        ),
    ],
)
def test_steps_for_each_strategy(
    strategy: dict[str, Any], extra: dict[str, Any], expected: list[Step]
) -> None:
    assert steps_for(spec_of(strategy, **extra)) == expected


# --- canary -----------------------------------------------------------------------------------------


def test_canary_waits_for_available_then_walks_weights_and_pauses_then_promotes() -> None:
    w = World(
        canary({"setWeight": 20}, {"pause": {"duration": "10s"}}, {"setWeight": 60}), canary_available=False
    )
    plan = w.step()
    assert w.reasons() == ["RolloutStarted"]
    assert plan.ensure == [(NEW, "canary")]
    assert plan.route == {OLD.id: 100}  # the canary is not ready: no weight for it
    assert w.status["phase"] == "Progressing" and w.status["currentWeight"] == 0
    w.step(advance_s=1)
    assert w.status["currentStepIndex"] == 0
    w.canary_available = True
    w.observed[NEW.id] = replace(w.observed[NEW.id], available=True)
    plan = w.step(advance_s=1)
    assert plan.route == {OLD.id: 80, NEW.id: 20}
    assert w.status["currentStepIndex"] == 1 and w.status["currentWeight"] == 20
    assert "WeightChanged" in w.reasons()
    plan = w.step(advance_s=5)
    assert plan.route == {OLD.id: 80, NEW.id: 20} and w.status["currentStepIndex"] == 1
    plan = w.step(advance_s=5)  # the pause is over: 60 %, the last step, then promotion
    assert w.status["stableRevision"] == NEW.id and w.status["phase"] == "Healthy"
    assert plan.route == {NEW.id: 100}
    assert [h["outcome"] for h in w.status["revisions"]] == ["Superseded", "Serving"]
    assert w.reasons()[-1] == "Promoted"
    # The old stable stays for scaleDownDelay (30s default), then goes.
    plan = w.step(advance_s=1)
    assert plan.delete == [] and OLD.id in w.observed
    plan = w.step(advance_s=31)
    assert plan.delete == [OLD.id] and "RevisionRetired" in w.reasons()
    assert w.status["phase"] == "Healthy" and "canaryRevision" not in w.status


def test_canary_analysis_passes_then_promotes() -> None:
    w = World(canary({"setWeight": 10}, {"analysis": {}}, **ANALYSIS))
    w.begin()
    assert w.status["currentWeight"] == 10 and w.status["currentStepIndex"] == 1
    assert w.status["analysis"]["startedAt"] == "2026-01-01T00:00:00Z"
    w.step(advance_s=5)
    assert w.requests == []  # the first look comes one interval after the start
    w.step(lambda r: result("Inconclusive", "wer Inconclusive: 5/10 utterances"), advance_s=5)
    assert w.requests[-1] == AnalysisRequest(1, ("wer",), NEW.id, "canary", OLD.id, T0)
    assert w.status["analysis"]["inconclusive"] == 1 and w.status["phase"] == "Progressing"
    assert w.status["analysisRuns"][-1]["outcome"] == "Inconclusive"
    w.step(lambda r: result("Passed"), advance_s=10)
    assert w.status["stableRevision"] == NEW.id
    assert "AnalysisPassed" in w.reasons() and "Promoted" in w.reasons()


def test_failed_analysis_rolls_back_and_is_not_retried() -> None:
    w = World(canary({"setWeight": 30}, {"analysis": {}}, {"setWeight": 100}, **ANALYSIS))
    w.begin()
    plan = w.step(lambda r: result("Failed", "wer Failed: +20% relative"), advance_s=10)
    assert plan.route == {OLD.id: 100}
    assert plan.delete == [NEW.id]
    assert w.status["phase"] == "Degraded"
    assert w.status["lastRollback"]["fromModel"] == NEW.model
    assert w.status["lastRollback"]["toModel"] == OLD.model
    assert "wer Failed" in w.status["lastRollback"]["reason"]
    assert [h["outcome"] for h in w.status["revisions"]] == ["Serving", "RolledBack"]
    assert ("Warning", "RolledBack") in w.events
    assert w.condition("Degraded")["status"] == "True" and w.condition("Ready")["status"] == "True"
    # Later reconciles keep the stable model and do not start the same revision again.
    for _ in range(3):
        plan = w.step(advance_s=10)
        assert plan.route == {OLD.id: 100} and plan.ensure == []
    assert w.status["phase"] == "RolledBack" and NEW.id not in w.observed
    assert w.reasons().count("RolledBack") == 1 and w.reasons().count("RolloutStarted") == 1
    # A new model (another digest) is a new rollout.
    w.desired = Revision(NEW.model, "sha256:b2")
    w.step(advance_s=1)
    assert w.reasons().count("RolloutStarted") == 2 and w.status["canaryRevision"] == w.desired.id


def test_failure_limit_tolerates_failures() -> None:
    spec = canary({"setWeight": 30}, {"analysis": {}}, analysis={**ANALYSIS["analysis"], "failureLimit": 1})
    w = World(spec)
    w.begin()
    w.step(lambda r: result("Failed"), advance_s=10)
    assert w.status["analysis"]["failures"] == 1 and w.status["phase"] == "Progressing"
    w.step(lambda r: result("Failed"), advance_s=10)
    assert w.status["phase"] == "Degraded" and w.status["lastRollback"]


def test_no_data_pauses_and_never_rolls_back_or_promotes() -> None:
    w = World(canary({"setWeight": 30}, {"analysis": {}}, **ANALYSIS))
    w.begin()
    for _ in range(6):
        plan = w.step(lambda r: result("NoData", "wer NoData: no series"), advance_s=10)
        assert plan.route == {OLD.id: 70, NEW.id: 30}
    assert w.status["phase"] == "Paused"
    assert w.condition("Paused")["reason"] == "AnalysisNoData"
    assert "no data" in w.condition("Paused")["message"]
    # Between two looks the pause holds (reconciles come more often than looks).
    for _ in range(3):
        w.step(advance_s=2)
        assert w.status["phase"] == "Paused" and w.condition("Paused")["reason"] == "AnalysisNoData"
    assert "lastRollback" not in w.status and w.status["stableRevision"] == OLD.id
    assert w.reasons().count("AnalysisNoData") == 1  # an Event when the pause begins, not every look
    assert w.status["analysis"]["noData"] == 6
    # Data arrives: the rollout goes on by itself.
    w.step(lambda r: result("Passed"), advance_s=4)
    assert w.status["stableRevision"] == NEW.id


def test_no_data_with_fail_policy_rolls_back() -> None:
    spec = canary(
        {"setWeight": 30}, {"analysis": {}}, analysis={**ANALYSIS["analysis"], "noDataPolicy": "Fail"}
    )
    w = World(spec)
    w.begin()
    w.step(lambda r: result("NoData"), advance_s=10)
    assert w.status["phase"] == "Degraded" and w.status["lastRollback"]


def test_repeated_errors_pause_without_rollback() -> None:
    w = World(canary({"setWeight": 30}, {"analysis": {}}, **ANALYSIS))
    w.begin()
    for i in range(4):
        w.step(lambda r: result("Error", "wer Error: Prometheus unreachable"), advance_s=10)
        assert w.status["phase"] == ("Paused" if i == 3 else "Progressing"), i
    assert w.condition("Paused")["reason"] == "AnalysisPaused"
    assert "4 analysis errors" in w.condition("Paused")["message"]
    assert "lastRollback" not in w.status


def test_automatic_rollback_off_holds_and_degrades() -> None:
    w = World(canary({"setWeight": 30}, {"analysis": {}}, rollback={"automatic": False}, **ANALYSIS))
    w.begin()
    plan = w.step(lambda r: result("Failed"), advance_s=10)
    assert w.status["phase"] == "Degraded" and "lastRollback" not in w.status
    assert plan.route == {OLD.id: 70, NEW.id: 30}
    assert w.condition("Paused")["reason"] == "AnalysisFailed"


def test_indefinite_pause_waits_for_a_person() -> None:
    w = World(canary({"setWeight": 10}, {"pause": {}}, {"setWeight": 50}))
    for _ in range(3):
        plan = w.step(advance_s=100)
    assert w.status["phase"] == "Paused" and w.condition("Paused")["reason"] == "PausedAtStep"
    assert plan.route == {OLD.id: 90, NEW.id: 10} and not plan.consumed
    plan = w.step(promote=True)
    assert plan.consumed == ["stt.dev/promote"] and w.status["stableRevision"] == NEW.id


def test_spec_paused_holds_everything() -> None:
    w = World(canary({"setWeight": 10}, {"pause": {"duration": "1s"}}, {"setWeight": 50}))
    w.begin()
    w.spec = w.spec.model_copy(update={"paused": True})
    for _ in range(3):
        plan = w.step(advance_s=10)
        assert plan.route == {OLD.id: 90, NEW.id: 10}
    assert w.status["phase"] == "Paused" and w.condition("Paused")["reason"] == "RolloutPaused"
    w.spec = w.spec.model_copy(update={"paused": False})
    w.step(advance_s=1)
    assert w.status["stableRevision"] == NEW.id


def test_abtest_hold_leaves_the_route_alone() -> None:
    w = World(canary({"setWeight": 10}, {"pause": {}}, {"setWeight": 50}))
    w.begin()
    w.status["heldBy"] = "ab-1"
    plan = w.step(advance_s=5)
    assert plan.route is None and w.condition("Paused")["reason"] == "HeldByABTest"


def test_scale_replicas_with_weight_scales_before_the_weight_moves() -> None:
    w = World(canary({"setWeight": 25}, {"setWeight": 75}, replicas=4, scaleReplicasWithWeight=True))
    plan = w.step()
    assert plan.replicas[NEW.id] == 1 and plan.route == {OLD.id: 100}  # 1 replica asked, weight waits
    plan = w.step(advance_s=1)
    assert plan.route == {OLD.id: 75, NEW.id: 25} and plan.replicas[NEW.id] == 3
    # Scaling up: one pod of three ready keeps the canary at its weight, the next weight waits.
    w.observed[NEW.id] = ObservedRevision(NEW.id, NEW.model, False, 3, ready_replicas=1)
    plan = w.step(advance_s=1)
    assert plan.route == {OLD.id: 75, NEW.id: 25} and plan.replicas[NEW.id] == 3
    w.observed[NEW.id] = ObservedRevision(NEW.id, NEW.model, True, 3, ready_replicas=3)
    plan = w.step(advance_s=1)
    assert plan.route == {OLD.id: 25, NEW.id: 75} and plan.replicas[NEW.id] == 4  # full before promotion
    plan = w.step(advance_s=1)
    assert w.status["stableRevision"] == NEW.id and plan.route == {NEW.id: 100}


def test_reverting_spec_mid_rollout_drops_the_canary() -> None:
    w = World(canary({"setWeight": 10}, {"pause": {}}))
    w.step()
    w.desired = OLD
    plan = w.step(advance_s=1)
    assert plan.route == {OLD.id: 100} and plan.delete == [NEW.id]
    assert "RolloutAborted" in w.reasons() and w.status["phase"] == "Healthy"


# --- gradual ----------------------------------------------------------------------------------------


def test_gradual_moves_step_weight_every_interval() -> None:
    w = World(spec_of({"type": "Gradual", "gradual": {"stepWeight": 25, "interval": "10s"}}))
    weights = []
    for _ in range(10):
        w.step(advance_s=5)
        weights.append(w.status.get("currentWeight"))
    assert weights == [0, 25, 25, 50, 50, 75, 75, 100, 100, 100]  # 100 is held one interval too
    assert w.status["stableRevision"] == NEW.id


def test_gradual_with_analysis_needs_both_the_interval_and_a_pass() -> None:
    spec = spec_of({"type": "Gradual", "gradual": {"stepWeight": 50, "interval": "20s"}}, **ANALYSIS)
    w = World(spec)
    w.begin()
    w.step(lambda r: result("Passed"), advance_s=10)  # passed, but the interval is not over
    assert w.status["currentWeight"] == 50 and w.status["currentStepIndex"] == 1
    w.step(lambda r: result("Passed"), advance_s=10)
    assert w.status["currentWeight"] == 100


# --- blue-green -------------------------------------------------------------------------------------


def test_blue_green_preview_at_zero_then_auto_promotion() -> None:
    w = World(spec_of({"type": "BlueGreen", "blueGreen": {"autoPromotionSeconds": 20}}, replicas=3))
    plan = w.step()
    assert plan.route == {OLD.id: 100}
    plan = w.step()
    assert plan.ensure == [(NEW, "preview")] and plan.replicas[NEW.id] == 3
    assert plan.route == {OLD.id: 100, NEW.id: 0}
    plan = w.step(advance_s=10)
    assert w.status["stableRevision"] == OLD.id and w.status["phase"] == "Progressing"
    plan = w.step(advance_s=10)
    assert plan.route == {NEW.id: 100} and w.status["stableRevision"] == NEW.id
    plan = w.step(advance_s=10)
    assert plan.delete == []  # scaleDownDelaySeconds (30) keeps the blue stack
    plan = w.step(advance_s=25)
    assert plan.delete == [OLD.id]


def test_blue_green_manual_promotion() -> None:
    w = World(spec_of({"type": "BlueGreen", "blueGreen": {"autoPromotionEnabled": False}}))
    for _ in range(3):
        w.step(advance_s=60)
    assert w.status["phase"] == "Paused" and w.condition("Paused")["reason"] == "AwaitingPromotion"
    plan = w.step(promote=True)
    assert plan.consumed == ["stt.dev/promote"] and w.status["stableRevision"] == NEW.id


def test_blue_green_pre_promotion_analysis_failure_rolls_back() -> None:
    spec = spec_of({"type": "BlueGreen", "blueGreen": {"prePromotionAnalysis": True}}, **ANALYSIS)
    w = World(spec)
    w.begin()
    plan = w.step(lambda r: result("Failed"), advance_s=10)
    assert w.requests[-1].candidate_variant == "preview"
    assert plan.route == {OLD.id: 100} and w.status["lastRollback"]["fromModel"] == NEW.model


def test_blue_green_pre_promotion_analysis_pass_promotes() -> None:
    spec = spec_of({"type": "BlueGreen", "blueGreen": {"prePromotionAnalysis": True}}, **ANALYSIS)
    w = World(spec)
    w.begin()
    w.step(lambda r: result("Passed"), advance_s=10)
    assert w.status["stableRevision"] == NEW.id


# --- properties: idempotence and restart ------------------------------------------------------------


def _snapshot(plan: EndpointPlan) -> tuple[Any, ...]:
    return (plan.ensure, plan.route, plan.delete, plan.status, plan.conditions, plan.events, plan.replicas)


SCENARIOS: list[tuple[Any, Callable[[AnalysisRequest], AnalysisResult]]] = [
    (
        canary({"setWeight": 10}, {"pause": {"duration": "10s"}}, {"setWeight": 50}),
        lambda r: result("Passed"),
    ),
    (canary({"setWeight": 10}, {"analysis": {}}, {"setWeight": 50}, **ANALYSIS), lambda r: result("Passed")),
    (canary({"setWeight": 10}, {"analysis": {}}, **ANALYSIS), lambda r: result("Failed")),
    (canary({"setWeight": 10}, {"analysis": {}}, **ANALYSIS), lambda r: result("NoData")),
    (
        spec_of({"type": "Gradual", "gradual": {"stepWeight": 30, "interval": "10s"}}),
        lambda r: result("Passed"),
    ),
    (
        spec_of({"type": "BlueGreen", "blueGreen": {"prePromotionAnalysis": True}}, **ANALYSIS),
        lambda r: result("Passed"),
    ),
]


@pytest.mark.parametrize(("spec", "look"), SCENARIOS)
def test_planning_twice_gives_the_same_plan_and_restart_resumes(spec: Any, look: Any) -> None:
    w = World(spec)
    for _ in range(12):
        inp = w.inputs()
        first, second = plan_rollout(inp), plan_rollout(inp)
        assert _snapshot(first) == _snapshot(second)
        # A "restarted operator" has nothing but a deep copy of status and the observed objects.
        restarted = World(spec)
        restarted.status, restarted.observed, restarted.now = copy.deepcopy(w.status), dict(w.observed), w.now
        assert _snapshot(plan_rollout(restarted.inputs())) == _snapshot(first)
        w.step(look, advance_s=6)


def test_converged_rollout_is_quiet() -> None:
    w = World(canary({"setWeight": 50}))
    for _ in range(3):
        w.step(advance_s=1)
    events = len(w.events)
    status = dict(w.status)
    for _ in range(3):
        w.step(advance_s=1)
    assert len(w.events) == events
    assert {k: v for k, v in w.status.items() if k != "conditions"} == {
        k: v for k, v in status.items() if k != "conditions"
    }


def test_status_written_is_schema_known() -> None:
    w = World(canary({"setWeight": 30}, {"analysis": {}}, **ANALYSIS))
    w.begin()
    w.step(lambda r: result("Failed"), advance_s=10)
    # `apply` checks every status it produced; this asserts the final one has what users read.
    assert set(w.status) >= {"lastRollback", "revisions", "analysisRuns", "analysis", "conditions", "phase"}


# --- a person's requests ----------------------------------------------------------------------------


def test_abort_rolls_back_the_rollout_in_flight() -> None:
    w = World(canary({"setWeight": 40}, {"pause": {}}))
    w.begin()
    inp = replace(w.inputs(), abort_requested=True)
    plan = plan_rollout(inp)
    w.apply(inp, plan)
    assert plan.consumed == ["stt.dev/abort"] and plan.route == {OLD.id: 100}
    assert "aborted by a person" in w.status["lastRollback"]["reason"]
    assert w.status["revisions"][-1]["outcome"] == "RolledBack"


def test_promote_skips_the_current_analysis_step() -> None:
    w = World(canary({"setWeight": 10}, {"analysis": {}}, {"setWeight": 50}, {"pause": {}}, **ANALYSIS))
    w.begin()
    plan = w.step(promote=True, advance_s=1)
    assert plan.consumed == ["stt.dev/promote"] and w.requests == []
    assert "StepSkipped" in w.reasons() and w.status["currentWeight"] == 50
    assert w.status["currentStepIndex"] == 3 and "analysis" not in w.status  # one step per request


@pytest.mark.parametrize("annotation", ["promote", "abort"])
def test_requests_without_a_rollout_are_dropped(annotation: str) -> None:
    w = World(canary({"setWeight": 10}), desired=OLD)
    inp = replace(w.inputs(), **{f"{annotation}_requested": True})
    plan = plan_rollout(inp)
    assert plan.consumed == [f"stt.dev/{annotation}"] and plan.route == {OLD.id: 100}
    assert "lastRollback" not in status_changes(inp.status, plan.status)


def test_blue_green_awaiting_promotion_emits_one_event() -> None:
    w = World(spec_of({"type": "BlueGreen", "blueGreen": {"autoPromotionEnabled": False}}))
    for _ in range(4):
        w.step(advance_s=5)
    assert w.reasons().count("AwaitingPromotion") == 1


def test_abtest_hold_in_steady_state_leaves_the_route_and_says_so() -> None:
    w = World(canary({"setWeight": 10}), desired=OLD)
    w.status["heldBy"] = "ab-1"
    plan = w.step()
    assert plan.route is None and w.condition("Paused")["reason"] == "HeldByABTest"
    assert w.status["phase"] == "Healthy"
    del w.status["heldBy"]  # the ABTest gives the endpoint back: the route returns to stable
    plan = w.step()
    assert plan.route == {OLD.id: 100} and w.condition("Paused")["status"] == "False"


def test_switching_to_immediate_mid_rollout_finishes_it_cleanly() -> None:
    w = World(canary({"setWeight": 10}, {"analysis": {}}, **ANALYSIS))
    w.begin()
    w.spec = spec_of({"type": "Immediate"})
    plan = w.step(advance_s=1)
    assert plan.route == {NEW.id: 100} and w.status["stableRevision"] == NEW.id
    assert not {"currentStepIndex", "analysis", "stepStartedAt", "canaryRevision"} & set(w.status)


def test_abtest_hold_freezes_an_immediate_switch() -> None:
    """Under a hold nothing is promoted or retired: the test's route may name the stable revision."""
    w = World(spec_of({"type": "Immediate"}))
    w.status["heldBy"] = "ab-1"
    before = {k: w.status.get(k) for k in ("stableRevision", "stableModel", "revisions", "phase")}
    for _ in range(3):
        plan = w.step(advance_s=60)
        assert plan.route is None and plan.delete == [] and plan.events == []
    assert {k: w.status.get(k) for k in before} == before
    assert w.condition("Paused")["reason"] == "HeldByABTest"
    assert NEW.id in w.observed  # the new revision is up, ready for when the hold ends
    del w.status["heldBy"]
    plan = w.step(advance_s=1)
    assert plan.route == {NEW.id: 100} and w.status["stableRevision"] == NEW.id


# --- no Prometheus to ask: the rollout holds ---------------------------------------------------------

UNAVAILABLE = AnalysisResult("Error", NOT_CONFIGURED, (), unavailable="NoPrometheus")


def test_canary_holds_without_prometheus_and_goes_on_when_it_answers() -> None:
    w = World(canary({"setWeight": 30}, {"analysis": {}}, **ANALYSIS))
    w.begin()
    for _ in range(8):
        plan = w.step(lambda r: UNAVAILABLE, advance_s=10)
        assert plan.route == {OLD.id: 70, NEW.id: 30}  # held at the step's weight
        assert plan.delete == []
    assert w.status["phase"] == "Paused"
    paused = w.condition("Paused")
    assert paused["reason"] == "AnalysisUnavailable" and "config.prometheusUrl" in paused["message"]
    # Not a look: nothing counted, no Error runs piling up, nothing rolled back or promoted.
    assert not w.status.get("analysisRuns")
    assert w.status["analysis"]["failures"] == 0 and w.status["analysis"]["inconclusive"] == 0
    assert "lastRollback" not in w.status and w.status["stableRevision"] == OLD.id
    assert w.reasons().count("AnalysisUnavailable") == 1  # one Event, when the hold begins
    # Between looks the hold stays (reconciles come more often than looks).
    for _ in range(3):
        w.step(advance_s=2)
        assert w.condition("Paused")["reason"] == "AnalysisUnavailable"
    w.step(lambda r: result("Passed"), advance_s=10)
    assert w.status["stableRevision"] == NEW.id


def test_blue_green_pre_promotion_analysis_holds_without_prometheus() -> None:
    spec = spec_of({"type": "BlueGreen", "blueGreen": {"prePromotionAnalysis": True}}, **ANALYSIS)
    w = World(spec)
    w.begin()
    for _ in range(5):
        plan = w.step(lambda r: UNAVAILABLE, advance_s=10)
        assert plan.route == {OLD.id: 100, NEW.id: 0}
    assert w.condition("Paused")["reason"] == "AnalysisUnavailable"
    assert w.status["stableRevision"] == OLD.id and "lastRollback" not in w.status
