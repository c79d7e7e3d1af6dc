"""The ABTest planner, driven reconcile by reconcile from status only (no cluster, no Prometheus)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stt_harness.mergepatch import apply_merge_patch
from stt_operator.analysis.model import AnalysisResult, MetricResult
from stt_operator.api.abtest import ABTest, ABTestStatus
from stt_operator.api.common import set_condition
from stt_operator.builders.serving import Revision, revision_object_name
from stt_operator.controllers.status import status_changes
from stt_operator.experiments.objects import owned_service_name
from stt_operator.experiments.planner import (
    ABTestInput,
    ABTestPlan,
    EndpointInfo,
    Measurement,
    ModelInfo,
    active_tests,
    analysis_interval_s,
    backends,
    live_weights,
    plan_abtest,
)
from stt_operator.stats.counts import SRMResult, combine_sample_ratios, sample_ratio_mismatch

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STABLE = Revision("model-a", "sha256:a")
NAME, NS, MD = "ab", "ns", "asr"
STABLE_SVC = revision_object_name(MD, STABLE.model, STABLE.id)
B_REV = Revision("model-b", "sha256:b")
B_SVC = owned_service_name(NAME, "model-b", B_REV.id)


def spec(**extra: Any) -> Any:
    body = {
        "endpoint": {"modelDeploymentRef": {"name": MD}},
        "variants": [
            {"name": "control", "model": {"name": "model-a"}, "weight": 50},
            {"name": "candidate", "model": {"name": "model-b"}, "weight": 50},
        ],
        "duration": "10m",
        "minDuration": "1m",
        "primaryMetric": {"name": "wer", "preset": "wer", "nonInferiorityMargin": 0.01, "minSamples": 10},
        "minSamplesPerVariant": 10,
        **extra,
    }
    return ABTest.spec_from(body, name=NAME)


def endpoint(**kw: Any) -> EndpointInfo:
    base = {
        "spec_model": "model-a",
        "stable_model": "model-a",
        "stable_revision": STABLE.id,
        "stable_available": True,
    }
    return EndpointInfo(MD, **{**base, **kw})


MODELS = {
    "model-a": ModelInfo("model-a", digest="sha256:a"),
    "model-b": ModelInfo("model-b", digest="sha256:b"),
}


def primary(
    *, p_lower: float, p_higher: float, effect: float, ci: tuple[float, float], outcome: str = "Inconclusive"
) -> MetricResult:
    return MetricResult(
        "wer",
        outcome,
        f"wer {outcome}",
        value=0.10 + effect,
        baseline=0.10,
        effect=effect,
        ci_low=ci[0],
        ci_high=ci[1],
        samples={"candidate": 400, "baseline": 400},
        details={
            "p_lower": p_lower,
            "p_higher": p_higher,
            "p_raw": {"nonInferiorityMargin 0.01": (0.5, 0.01)},
        },
    )


def look(metric: MetricResult, srm: SRMResult | str | None = None) -> Measurement:
    return Measurement({"candidate": AnalysisResult(metric.outcome, metric.message, (metric,))}, srm)


BETTER = primary(p_lower=1e-6, p_higher=1.0, effect=-0.03, ci=(-0.05, -0.01))
SAME = primary(p_lower=0.6, p_higher=0.6, effect=0.0, ci=(-0.02, 0.02))
EQUIVALENT = primary(p_lower=0.6, p_higher=0.6, effect=0.0, ci=(-0.004, 0.004))
WAITING = MetricResult(
    "wer", "Inconclusive", "wer: not enough utterances yet: candidate needs 7 more", samples={"candidate": 3}
)
NO_DATA = MetricResult("wer", "NoData", "wer NoData: no series for errors")
SRM_BAD = SRMResult(
    True, 1e-6, 1e-9, {"control": 900, "candidate": 300}, {}, "sample ratio mismatch (p=1e-06)"
)
SRM_OK = SRMResult(False, 0.8, 0.5, {"control": 400, "candidate": 400}, {}, "sample ratio as configured")


@dataclass
class World:
    """Status and hold as the apiserver would keep them between reconciles."""

    spec: Any = field(default_factory=spec)
    status: dict[str, Any] = field(default_factory=dict)
    endpoint: EndpointInfo = field(default_factory=endpoint)
    available: dict[str, bool] = field(default_factory=dict)
    now: datetime = T0
    events: list[str] = field(default_factory=list)
    promoted: str | None = None

    def inp(self, measurement: Measurement | None = None, **kw: Any) -> ABTestInput:
        return ABTestInput(
            name=NAME,
            namespace=NS,
            spec=self.spec,
            status=ABTestStatus.model_validate(self.status),
            now=self.now,
            endpoint=self.endpoint,
            models=MODELS,
            available=self.available,
            analysis_interval_s=5.0,
            measurement=measurement,
            **kw,
        )

    def step(self, measurement: Measurement | None = None, **kw: Any) -> ABTestPlan:
        inp = self.inp(**kw)
        plan = plan_abtest(inp)
        looked = plan.measure
        if looked:
            assert measurement is not None, "the planner asked for a look"
            inp = self.inp(measurement, **kw)
            plan = plan_abtest(inp)
            assert not plan.measure
        changes = status_changes(inp.status, plan.status)
        assert ABTestStatus.unknown_fields(changes) == []
        # Applying the same inputs again plans the same thing (idempotent).
        again = plan_abtest(self.inp(measurement if looked else None, **kw))
        if not again.measure:
            assert again == plan
        conditions = self.status.get("conditions") or []
        for c in plan.conditions:
            conditions = set_condition(
                conditions, c.type, c.status, c.reason, c.message, generation=1, now=self.now
            )
        apply_merge_patch(self.status, changes)
        self.status["conditions"] = conditions
        self.events += [e.reason for e in plan.events]
        if plan.acquire_hold:  # the ModelDeployment reports the hold by the next reconcile
            self.endpoint = replace(self.endpoint, held_by=NAME, held_by_status=NAME)
        if plan.release_hold:
            self.endpoint = replace(self.endpoint, held_by=None, held_by_status=None)
        if plan.promote_model:
            self.promoted = plan.promote_model
            self.endpoint = replace(self.endpoint, spec_model=plan.promote_model)
        return plan

    def cond(self, type_: str) -> tuple[str, str]:
        c = next(c for c in self.status["conditions"] if c["type"] == type_)
        return c["status"], c["reason"]

    def run(self) -> ABTestPlan:
        """Start the test: hold, variant Deployment comes up, Running."""
        first = self.step()
        assert first.acquire_hold and [b.service for b in first.ensure] == [B_SVC]
        assert first.route is None and self.status["phase"] == "Pending"
        self.available[B_SVC] = True
        plan = self.step()
        assert self.status["phase"] == "Running"
        return plan

    def later(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("endpoint_kw", "models", "available", "reason", "phase"),
    [
        ({"exists": False}, MODELS, {}, "EndpointNotFound", "Pending"),
        ({"held_by": "other"}, MODELS, {}, "EndpointBusy", "Pending"),
        ({"canary_revision": "abc"}, MODELS, {}, "EndpointBusy", "Pending"),
        ({"stable_available": False}, MODELS, {}, "EndpointNotReady", "Pending"),
        ({"stable_revision": None}, MODELS, {}, "EndpointNotReady", "Pending"),
        ({"routing": "replica-ratio"}, MODELS, {}, "UnsupportedEndpoint", "Failed"),
        ({}, {"model-a": MODELS["model-a"]}, {}, "VariantNotReady", "Pending"),
        ({}, {**MODELS, "model-b": ModelInfo("model-b", ready=False)}, {}, "VariantNotReady", "Pending"),
        (
            {},
            {**MODELS, "model-b": ModelInfo("model-b", ready=False, failed="WER 0.4")},
            {},
            "VariantModelFailed",
            "Failed",
        ),
    ],
)
def test_pending_waits_with_a_reason(
    endpoint_kw: dict[str, Any],
    models: dict[str, ModelInfo],
    available: dict[str, bool],
    reason: str,
    phase: str,
) -> None:
    inp = replace(World().inp(), endpoint=endpoint(**endpoint_kw), models=models, available=available)
    plan = plan_abtest(inp)
    assert plan.status.phase == phase
    assert {(c.type, c.reason) for c in plan.conditions} >= {("Ready", reason), ("Running", reason)}
    assert not plan.acquire_hold and plan.route is None and not plan.ensure
    assert ABTestStatus.unknown_fields(status_changes(inp.status, plan.status)) == []


def test_concurrency_limit_keeps_extra_tests_pending() -> None:
    inp = replace(World().inp(), active_elsewhere=2, max_concurrent=2)
    plan = plan_abtest(inp)
    assert plan.status.phase == "Pending" and not plan.acquire_hold
    ready = next(c for c in plan.conditions if c.type == "Ready")
    assert ready.reason == "MaxConcurrentTests" and "maxConcurrentABTests=2" in ready.message
    assert plan_abtest(replace(inp, active_elsewhere=1)).acquire_hold


def test_active_tests_counts_running_and_starting_elsewhere() -> None:
    def item(uid: str, phase: str, reason: str = "") -> dict[str, Any]:
        conditions = [{"type": "Running", "status": "False", "reason": reason}] if reason else []
        return {"metadata": {"uid": uid}, "status": {"phase": phase, "conditions": conditions}}

    items = [
        item("me", "Running"),
        item("1", "Running"),
        item("2", "Pending", "StartingVariants"),
        item("3", "Pending", "EndpointBusy"),
        item("4", "Concluded"),
        {"metadata": {"uid": "5"}},
    ]
    assert active_tests(items, "me") == 2


def test_start_holds_waits_for_available_variant_then_routes_weights() -> None:
    w = World()
    first = w.step()
    assert first.acquire_hold and w.endpoint.held_by == NAME
    assert w.cond("Running") == ("False", "StartingVariants")
    assert [v["revision"] for v in w.status["variants"]] == [STABLE.id, B_REV.id]
    assert w.status["variantSummary"] == "control=50% candidate=50%"
    # Still starting: the hold is not taken twice, nothing is routed.
    again = w.step()
    assert not again.acquire_hold and again.route is None
    w.available[B_SVC] = True
    plan = w.step()
    assert plan.route == {STABLE_SVC: 50, B_SVC: 50} and plan.ensure_evaluator
    assert w.status["phase"] == "Running" and w.status["startedAt"] == "2026-01-01T00:00:00Z"
    assert w.cond("Running") == ("True", "TestStarted") and w.events == ["TestStarted"]


def test_no_variant_on_the_stable_model_routes_only_owned_variants() -> None:
    w = World(
        spec=spec(
            variants=[
                {"name": "x", "model": {"name": "model-b"}, "weight": 70},
                {"name": "y", "model": {"name": "model-c"}, "weight": 30},
            ]
        )
    )
    models = {**MODELS, "model-c": ModelInfo("model-c", digest="sha256:c")}
    plan = plan_abtest(replace(w.inp(), models=models, endpoint=endpoint(held_by=NAME, held_by_status=NAME)))
    c_svc = owned_service_name(NAME, "model-c", Revision("model-c", "sha256:c").id)
    assert [b.service for b in plan.ensure] == [B_SVC, c_svc]
    plan = plan_abtest(
        replace(
            w.inp(),
            models=models,
            endpoint=endpoint(held_by=NAME, held_by_status=NAME),
            available={B_SVC: True, c_svc: True},
        )
    )
    assert plan.route == {B_SVC: 70, c_svc: 30}


def test_unavailable_variant_share_goes_to_control_and_is_never_routed() -> None:
    w = World()
    w.run()
    w.available[B_SVC] = False
    w.later(1)
    plan = w.step(look(WAITING, SRM_OK))
    assert plan.route == {STABLE_SVC: 100}
    assert w.cond("Ready") == ("False", "VariantNotReady")
    w.endpoint = replace(w.endpoint, stable_available=False)
    assert w.step().route is None


def test_better_candidate_wins_after_min_duration_then_is_promoted() -> None:
    w = World(spec=spec(promotion={"auto": True}))
    w.run()
    w.later(1)
    plan = w.step(look(WAITING, SRM_OK))
    assert w.cond("Concluded") == ("False", "NotEnoughData")
    assert (
        "needs 7 more" in w.status["decision"]["reason"] and w.status["decision"]["outcome"] == "Inconclusive"
    )
    assert plan.route == {STABLE_SVC: 50, B_SVC: 50}
    # Not due again before the analysis interval: no look.
    w.later(1)
    assert not plan_abtest(w.inp()).measure
    w.later(10)
    w.step(look(BETTER, SRM_OK))
    assert w.status["phase"] == "Running" and w.cond("Concluded") == ("False", "MinDurationNotReached")
    assert w.status["sampleRatio"]["detected"] is False
    w.later(60)
    w.step(look(BETTER, SRM_OK))
    assert w.status["phase"] == "Concluded" and w.status["winner"] == "candidate"
    decision = w.status["decision"]
    assert decision["outcome"] == "Winner" and decision["pValue"] < 0.05 and decision["effect"] == -0.03
    assert decision["confidenceInterval"] == {"lower": -0.05, "upper": -0.01, "level": 0.95}
    assert w.status["variants"][1]["wer"] == pytest.approx(0.07) and w.status["variants"][0]["wer"] == 0.1
    assert w.status["variants"][1]["samples"] == 400
    assert "WinnerFound" in w.events and w.endpoint.held_by == NAME  # acts at the next reconcile
    w.later(1)
    plan = w.step()
    assert plan.route == {STABLE_SVC: 100} and plan.release_hold and plan.cleanup
    assert plan.promote_model == "model-b" and w.status["phase"] == "Promoted"
    assert w.events[-1] == "WinnerPromoted" and w.endpoint.held_by is None
    # Later reconciles only keep cleaning up; nothing is promoted twice.
    w.later(1)
    plan = w.step()
    assert plan.promote_model is None and not plan.release_hold and plan.route is None and plan.cleanup


def test_killed_between_the_promotion_patch_and_the_status_write_still_ends_promoted() -> None:
    """The controller patches the ModelDeployment before it writes the ABTest's status: an
    operator killed in between comes back to a Concluded test whose winner is already served."""
    w = World(spec=spec(promotion={"auto": True}))
    w.run()
    w.later(11)
    w.step(look(BETTER, SRM_OK))
    w.later(60)
    w.step(look(BETTER, SRM_OK))
    assert w.status["phase"] == "Concluded" and w.status["winner"] == "candidate"
    w.later(1)
    lost = plan_abtest(w.inp())  # its ModelDeployment patch lands; its status write does not
    assert lost.promote_model == "model-b"
    w.endpoint = replace(w.endpoint, spec_model="model-b", held_by=None, held_by_status=None)
    w.later(1)
    plan = w.step()
    assert plan.promote_model is None and w.status["phase"] == "Promoted"
    assert w.status["promotion"]["model"] == "model-b" and w.events[-1] == "WinnerPromoted"


def test_no_difference_at_duration_concludes_without_winner_and_routes_back() -> None:
    w = World(spec=spec(duration="2m", promotion={"auto": True}))
    w.run()
    w.later(60)
    w.step(look(SAME, SRM_OK))
    assert w.cond("Concluded") == ("False", "CollectingSamples")
    w.later(60)
    w.step(look(SAME, SRM_OK))
    assert w.status["phase"] == "Concluded" and "winner" not in w.status
    assert w.status["decision"]["outcome"] == "NoDifference" and w.cond("Concluded") == (
        "True",
        "DurationReached",
    )
    plan = w.step()
    assert plan.route == {STABLE_SVC: 100} and plan.release_hold and plan.promote_model is None
    assert w.status["phase"] == "Concluded"


def test_equivalence_ends_early_and_non_inferior_promotion_picks_the_candidate() -> None:
    w = World(spec=spec(promotion={"auto": True, "onlyIf": "non-inferior"}))
    w.run()
    w.later(61)
    w.step(look(EQUIVALENT, SRM_OK))
    assert w.status["decision"]["outcome"] == "NoDifference" and w.status["winner"] == "candidate"
    assert w.cond("Concluded") == ("True", "NoDifference")
    assert w.step().promote_model == "model-b"


def test_sample_ratio_mismatch_holds_the_decision() -> None:
    w = World(spec=spec(duration="2m"))
    w.run()
    w.later(61)
    w.step(look(BETTER, SRM_BAD))
    assert w.status["phase"] == "Running" and "winner" not in w.status
    assert w.cond("SampleRatioMismatch") == ("True", "SampleRatioMismatch")
    assert w.status["sampleRatio"] == {"pValue": 1e-6, "detected": True, "checkedAt": "2026-01-01T00:01:01Z"}
    assert "decision held" in w.status["decision"]["reason"]
    w.later(10)
    w.step(look(BETTER, SRM_BAD))
    assert w.events.count("SampleRatioMismatch") == 1  # an Event on the transition only
    w.later(60)
    w.step(look(BETTER, SRM_BAD))  # the duration ends while it alarms: no winner
    assert w.status["phase"] == "Concluded" and w.status["decision"]["outcome"] == "Inconclusive"
    assert "winner" not in w.status


def test_a_look_without_counts_keeps_the_last_sample_ratio_check() -> None:
    w = World()
    w.run()
    w.later(61)
    w.step(look(SAME, SRM_OK))
    w.later(10)
    w.step(look(SAME, "no request counts for variant control"))
    assert w.status["sampleRatio"] == {"pValue": 0.8, "detected": False, "checkedAt": "2026-01-01T00:01:11Z"}
    assert w.cond("SampleRatioMismatch") == ("Unknown", "NoData")


def test_no_data_pauses_and_never_decides() -> None:
    w = World(spec=spec(duration="2m", promotion={"auto": True}))
    w.run()
    w.later(61)
    w.step(look(NO_DATA, "no request counts for variant control"))
    assert w.status["phase"] == "Running" and w.cond("Paused") == ("True", "NoData")
    assert w.cond("SampleRatioMismatch")[0] == "Unknown"
    w.later(10)
    w.step(Measurement(error="Prometheus unreachable"))
    assert w.cond("Paused") == ("True", "AnalysisError")
    w.later(60)
    w.step(look(NO_DATA))
    assert w.status["phase"] == "Concluded" and w.status["decision"]["outcome"] == "Inconclusive"
    assert "winner" not in w.status and w.step().promote_model is None


def test_guardrail_failure_blocks_the_winner() -> None:
    w = World(
        spec=spec(guardrailMetrics=[{"name": "lat", "preset": "latency-p95", "maxRelativeIncrease": 0.1}])
    )
    w.run()
    w.later(61)
    lat = MetricResult(
        "lat", "Failed", "lat Failed: +40%", value=300.0, baseline=200.0, effect=100.0, p_value=0.001
    )
    m = Measurement({"candidate": AnalysisResult("Failed", "x", (BETTER, lat))}, SRM_OK)
    w.step(m)
    assert w.status["phase"] == "Running" and "winner" not in w.status
    assert (
        w.status["guardrails"][0]["outcome"] == "Failed"
        and w.status["guardrails"][0]["adjustedPValue"] == 0.001
    )
    assert w.status["variants"][1]["latencyP95Ms"] == 300.0 and "GuardrailFailed" in w.events


def test_stop_ends_the_test_and_gives_the_endpoint_back() -> None:
    w = World()
    w.run()
    w.spec = spec(stop=True)
    plan = w.step()
    assert w.status["phase"] == "Stopped" and w.status["decision"]["outcome"] == "Stopped"
    assert plan.route is None and "StoppedByUser" in w.events
    plan = w.step()
    assert plan.route == {STABLE_SVC: 100} and plan.release_hold and plan.cleanup


def test_deletion_releases_and_cleans_up() -> None:
    w = World()
    w.run()
    inp = w.inp(deleting=True)
    plan = plan_abtest(inp)
    assert (
        plan.route == {STABLE_SVC: 100}
        and plan.release_hold
        and plan.cleanup
        and not status_changes(inp.status, plan.status).get("phase")
    )


def test_endpoint_lost_or_taken_fails_the_running_test() -> None:
    w = World()
    w.run()
    assert plan_abtest(replace(w.inp(), endpoint=endpoint(exists=False))).status.phase == "Failed"
    taken = plan_abtest(replace(w.inp(), endpoint=endpoint(held_by="other")))
    assert taken.status.phase == "Failed" and taken.route is None
    # The annotation removed by someone else: the running test holds again.
    assert plan_abtest(replace(w.inp(), endpoint=endpoint(held_by=None))).acquire_hold


def test_resume_uses_the_revisions_recorded_in_status() -> None:
    w = World()
    w.run()
    # The STTModel changed after the start: the test keeps measuring the revision it started with.
    changed = {**MODELS, "model-b": ModelInfo("model-b", digest="sha256:new")}
    plan = plan_abtest(replace(w.inp(), models=changed))
    assert [b.service for b in plan.ensure] == [B_SVC] and plan.route == {STABLE_SVC: 50, B_SVC: 50}


def test_analysis_interval() -> None:
    assert analysis_interval_s(spec(duration="20s", minDuration="5s"), 60.0, 1.0) == 1.0
    assert analysis_interval_s(spec(duration="24h"), 60.0, 10.0) == 60.0
    assert analysis_interval_s(spec(duration="10m"), 60.0, 10.0) == 20.0


def test_route_written_only_once_the_endpoint_reports_the_hold() -> None:
    w = World()
    w.step()
    w.available[B_SVC] = True
    # Annotated, but the ModelDeployment has not reported status.heldBy yet: it may still write.
    w.endpoint = replace(w.endpoint, held_by_status=None)
    plan = w.step()
    assert plan.route is None and w.status["phase"] == "Pending"
    assert w.cond("Running") == ("False", "WaitingForHold")
    assert active_tests([{"metadata": {"uid": "x"}, "status": w.status}], "me") == 1
    w.endpoint = replace(w.endpoint, held_by_status=NAME)
    assert w.step().route == {STABLE_SVC: 50, B_SVC: 50} and w.status["phase"] == "Running"
    # Running, the annotation removed by someone: hold again, route only after the report.
    w.endpoint = replace(w.endpoint, held_by=None, held_by_status=None)
    plan = plan_abtest(w.inp())
    assert plan.acquire_hold and plan.route is None


def test_announce_mode_records_the_winner_and_never_writes_the_spec() -> None:
    """promotion.mode Announce (GitOps): the winner and the patch go to status and one Event."""
    w = World(spec=spec(duration="2m", minDuration="1s", promotion={"auto": True, "mode": "Announce"}))
    w.run()
    w.later(10)
    w.step(look(BETTER, SRM_OK))
    assert w.status["phase"] == "Concluded" and w.status["winner"] == "candidate"
    w.later(1)
    plan = w.step()
    assert plan.promote_model is None and plan.release_hold and w.status["phase"] == "Concluded"
    promotion = w.status["promotion"]
    assert promotion["mode"] == "Announce" and promotion["model"] == "model-b"
    assert promotion["patch"] == '{"spec":{"model":{"name":"model-b"}}}'
    assert w.cond("Ready") == ("True", "WinnerAnnounced") and w.events.count("WinnerAnnounced") == 1
    announced_at = promotion["at"]
    # Later reconciles: still announced once, nothing written, the record unchanged.
    w.later(30)
    plan = w.step()
    assert plan.promote_model is None and w.events.count("WinnerAnnounced") == 1
    assert w.status["promotion"]["at"] == announced_at and w.promoted is None


def test_patch_spec_mode_records_what_it_wrote() -> None:
    w = World(spec=spec(duration="2m", minDuration="1s", promotion={"auto": True}))
    w.run()
    w.later(10)
    w.step(look(BETTER, SRM_OK))
    w.later(1)
    w.step()
    assert w.promoted == "model-b" and w.status["phase"] == "Promoted"
    assert (
        w.status["promotion"]["mode"] == "PatchSpec" and w.status["promotion"]["endpoint"] == w.endpoint.name
    )


# --- live split (sample-ratio mismatch from Triton's counters) ---------------------------------


def test_live_weights_follow_the_route() -> None:
    world = World()
    world.run()
    inp = world.inp()
    assert live_weights(inp, backends(inp)) == {"control": 50.0, "candidate": 50.0}
    # The candidate is down: the route gives its share to the control, nothing to compare.
    down = replace(inp, available={B_SVC: False})
    assert live_weights(down, backends(down)) is None


@pytest.mark.parametrize("live_alarm", [True, False])
def test_a_live_mismatch_holds_the_decision(live_alarm: bool) -> None:
    live = sample_ratio_mismatch(
        {"control": 800, "candidate": 200} if live_alarm else {"control": 500, "candidate": 500},
        {"control": 50, "candidate": 50},
    )
    world = World()
    world.run()
    world.now += timedelta(minutes=2)  # past minDuration
    world.step(look(BETTER, combine_sample_ratios({"replay": SRM_OK, "live": live})))
    if live_alarm:
        assert world.cond("SampleRatioMismatch") == ("True", "SampleRatioMismatch")
        assert world.status["phase"] == "Running" and "winner" not in world.status
        assert world.status["sampleRatio"]["detected"] is True
    else:
        assert world.status.get("winner") == "candidate"


def test_a_failed_slice_of_a_sliced_guardrail_blocks_the_winner() -> None:
    w = World(
        spec=spec(
            guardrailMetrics=[
                {"name": "wer-noise", "preset": "wer", "slice": "noise", "nonInferiorityMargin": 0.01}
            ]
        )
    )
    w.run()
    w.later(61)
    clean = MetricResult("wer-noise[noise=clean]", "Passed", "wer-noise[noise=clean] Passed", p_value=0.9)
    noisy = MetricResult(
        "wer-noise[noise=noisy]", "Failed", "wer-noise[noise=noisy] Failed: +6 points", p_value=0.002
    )
    m = Measurement({"candidate": AnalysisResult("Failed", "x", (BETTER, clean, noisy))}, SRM_OK)
    w.step(m)
    assert w.status["phase"] == "Running" and "winner" not in w.status
    (g,) = w.status["guardrails"]
    assert g["metric"] == "wer-noise" and g["outcome"] == "Failed" and "noise=noisy" in g["message"]
    assert "GuardrailFailed" in w.events


def test_the_running_p_values_live_in_typed_status_and_carry_to_the_next_look() -> None:
    w = World()
    w.run()
    w.later(10)
    w.step(look(BETTER, SRM_OK))
    # The look's running minima are in status.sequential, which the typed model reads back as
    # the analysis context's previous_p for the next look (a restarted operator resumes them).
    assert w.status["sequential"] == [
        {"variant": "candidate", "rule": "wer/nonInferiorityMargin 0.01", "pFail": 0.5, "pPass": 0.01}
    ]
    status = ABTestStatus.model_validate(w.status)
    assert status.running_p_values() == {"candidate": {"wer/nonInferiorityMargin 0.01": (0.5, 0.01)}}
    # A look that could not read the metrics leaves them as they were.
    w.later(10)
    w.step(Measurement(error="Prometheus unreachable"))
    assert w.status["sequential"][0]["pPass"] == 0.01
