from datetime import UTC, datetime, timedelta

from stt_operator.builders.serving import Revision
from stt_operator.rollout.immediate import plan_immediate, record_promotion
from stt_operator.rollout.plan import ObservedRevision

NOW = datetime(2026, 1, 1, tzinfo=UTC)
OLD = Revision("model-a", "d-a")
NEW = Revision("model-b", "d-b")


def obs(rev: Revision, available: bool) -> dict[str, ObservedRevision]:
    return {rev.id: ObservedRevision(rev.id, rev.model, available)}


def conditions(plan):
    return {c.type: c.status for c in plan.conditions}


def test_first_deploy_waits_without_a_route():
    plan = plan_immediate(OLD, {}, {}, NOW)
    assert plan.ensure == [(OLD, "stable")]
    assert plan.route is None  # never a route to a backend that is not ready
    assert conditions(plan)["Ready"] == "False"
    assert plan.requeue_after


def test_first_deploy_routes_when_available_and_records_revision_1():
    plan = plan_immediate(OLD, {}, obs(OLD, True), NOW)
    assert plan.route == {OLD.id: 100}
    assert plan.status["stableRevision"] == OLD.id
    assert plan.status["revisions"][0]["revision"] == 1
    assert conditions(plan)["Ready"] == "True"
    assert [e.reason for e in plan.events] == ["Deployed"]


def test_switch_keeps_old_route_until_new_available():
    status = {"stableRevision": OLD.id, "stableModel": OLD.model}
    plan = plan_immediate(NEW, status, {**obs(OLD, True), **obs(NEW, False)}, NOW)
    assert plan.route == {OLD.id: 100}
    assert plan.delete == []
    assert conditions(plan) == {"Progressing": "True", "Available": "True", "Ready": "True"}
    assert plan.status["canaryRevision"] == NEW.id


def test_switch_moves_route_then_retires_old_after_delay():
    history = record_promotion([], OLD, NOW - timedelta(hours=1), 10)
    status = {"stableRevision": OLD.id, "revisions": history}
    both = {**obs(OLD, True), **obs(NEW, True)}
    plan = plan_immediate(NEW, status, both, NOW, scale_down_delay_s=30)
    assert plan.route == {NEW.id: 100}
    assert plan.delete == []  # promoted just now: the old one waits for the delay
    assert plan.requeue_after and plan.requeue_after <= 30
    assert [h["outcome"] for h in plan.status["revisions"]] == ["Superseded", "Serving"]
    # A later reconcile, after the delay, removes the old revision and adds no history entry.
    later = plan_immediate(
        NEW, {**status, **plan.status}, both, NOW + timedelta(seconds=31), scale_down_delay_s=30
    )
    assert later.delete == [OLD.id]
    assert len(later.status["revisions"]) == 2
    assert [e.reason for e in later.events] == ["RevisionRetired"]


def test_plan_is_idempotent_once_converged():
    status = {}
    first = plan_immediate(OLD, status, obs(OLD, True), NOW)
    status.update(first.status)
    second = plan_immediate(OLD, status, obs(OLD, True), NOW)
    assert second.status == first.status
    assert second.events == []
    assert second.delete == []


def test_history_limit():
    history = []
    for i in range(5):
        history = record_promotion(history, Revision("m", str(i)), NOW, 3)
    assert [h["revision"] for h in history] == [3, 4, 5]


def test_stable_losing_every_replica_drops_its_weight_and_says_not_serving():
    served = plan_immediate(OLD, {}, obs(OLD, True), NOW)
    status = dict(served.status)
    lost = {OLD.id: ObservedRevision(OLD.id, OLD.model, False, replicas=1, ready_replicas=0)}
    plan = plan_immediate(OLD, status, lost, NOW)
    assert plan.route == {OLD.id: 0}  # named (a weight edit brings it back), but no traffic
    assert plan.status["phase"] == "Degraded" and plan.status["canaryRevision"] is None
    assert conditions(plan) == {"Progressing": "False", "Available": "False", "Ready": "False"}
    assert [e.reason for e in plan.events] == ["NotServing"]
    assert plan.ensure == [(OLD, "stable")] and not plan.delete
    # Recovery: back to all traffic, Healthy, no second history entry and no promotion event.
    status.update(plan.status)
    back = plan_immediate(OLD, status, obs(OLD, True), NOW)
    assert back.route == {OLD.id: 100} and back.status["phase"] == "Healthy"
    assert len(back.status["revisions"]) == 1 and not back.events


def test_stable_with_some_replicas_ready_keeps_serving_degraded():
    status = dict(plan_immediate(OLD, {}, obs(OLD, True), NOW).status)
    partial = {OLD.id: ObservedRevision(OLD.id, OLD.model, False, replicas=3, ready_replicas=2)}
    plan = plan_immediate(OLD, status, partial, NOW)
    assert plan.route == {OLD.id: 100}
    assert plan.status["phase"] == "Degraded"
    assert conditions(plan)["Available"] == "True" and conditions(plan)["Ready"] == "True"
    assert not plan.events
