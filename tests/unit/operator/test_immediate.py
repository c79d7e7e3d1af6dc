from datetime import UTC, datetime, timedelta

from stt_operator.api.modeldeployment import ModelDeploymentStatus
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
    plan = plan_immediate(OLD, ModelDeploymentStatus(), {}, NOW)
    assert plan.ensure == [(OLD, "stable")]
    assert plan.route is None  # never a route to a backend that is not ready
    assert conditions(plan)["Ready"] == "False"
    assert plan.requeue_after is None  # woken by the Deployment's watch, not by a timer


def test_first_deploy_routes_when_available_and_records_revision_1():
    plan = plan_immediate(OLD, ModelDeploymentStatus(), obs(OLD, True), NOW)
    assert plan.route == {OLD.id: 100}
    assert plan.status.stable_revision == OLD.id
    assert plan.status.revisions[0].revision == 1
    assert conditions(plan)["Ready"] == "True"
    assert [e.reason for e in plan.events] == ["Deployed"]


def test_switch_keeps_old_route_until_new_available():
    status = ModelDeploymentStatus(stable_revision=OLD.id, stable_model=OLD.model)
    plan = plan_immediate(NEW, status, {**obs(OLD, True), **obs(NEW, False)}, NOW)
    assert plan.route == {OLD.id: 100}
    assert plan.delete == []
    assert conditions(plan) == {"Progressing": "True", "Available": "True", "Ready": "True"}
    assert plan.status.canary_revision == NEW.id


def test_switch_moves_route_then_retires_old_after_delay():
    history = record_promotion([], OLD, NOW - timedelta(hours=1), 10)
    status = ModelDeploymentStatus(stable_revision=OLD.id, revisions=history)
    both = {**obs(OLD, True), **obs(NEW, True)}
    plan = plan_immediate(NEW, status, both, NOW, scale_down_delay_s=30)
    assert plan.route == {NEW.id: 100}
    assert plan.delete == []  # promoted just now: the old one waits for the delay
    assert plan.requeue_after and plan.requeue_after <= 30
    assert [h.outcome for h in plan.status.revisions] == ["Superseded", "Serving"]
    # A later reconcile, after the delay, removes the old revision and adds no history entry.
    later = plan_immediate(NEW, plan.status, both, NOW + timedelta(seconds=31), scale_down_delay_s=30)
    assert later.delete == [OLD.id]
    assert len(later.status.revisions) == 2
    assert [e.reason for e in later.events] == ["RevisionRetired"]


def test_plan_is_idempotent_once_converged():
    first = plan_immediate(OLD, ModelDeploymentStatus(), obs(OLD, True), NOW)
    second = plan_immediate(OLD, first.status, obs(OLD, True), NOW)
    assert second.status == first.status
    assert second.events == []
    assert second.delete == []


def test_history_limit():
    history = []
    for i in range(5):
        history = record_promotion(history, Revision("m", str(i)), NOW, 3)
    assert [h.revision for h in history] == [3, 4, 5]


def test_stable_losing_every_replica_drops_its_weight_and_says_not_serving():
    served = plan_immediate(OLD, ModelDeploymentStatus(), obs(OLD, True), NOW)
    status = served.status
    lost = {OLD.id: ObservedRevision(OLD.id, OLD.model, False, replicas=1, ready_replicas=0)}
    plan = plan_immediate(OLD, status, lost, NOW)
    assert plan.route == {OLD.id: 0}  # named (a weight edit brings it back), but no traffic
    assert plan.status.phase == "Degraded" and plan.status.canary_revision is None
    assert conditions(plan) == {"Progressing": "False", "Available": "False", "Ready": "False"}
    assert [e.reason for e in plan.events] == ["NotServing"]
    assert plan.ensure == [(OLD, "stable")] and not plan.delete
    # Recovery: back to all traffic, Healthy, no second history entry and no promotion event.
    back = plan_immediate(OLD, plan.status, obs(OLD, True), NOW)
    assert back.route == {OLD.id: 100} and back.status.phase == "Healthy"
    assert len(back.status.revisions) == 1 and not back.events


def test_stable_with_some_replicas_ready_keeps_serving_degraded():
    status = plan_immediate(OLD, ModelDeploymentStatus(), obs(OLD, True), NOW).status
    partial = {OLD.id: ObservedRevision(OLD.id, OLD.model, False, replicas=3, ready_replicas=2)}
    plan = plan_immediate(OLD, status, partial, NOW)
    assert plan.route == {OLD.id: 100}
    assert plan.status.phase == "Degraded"
    assert conditions(plan)["Available"] == "True" and conditions(plan)["Ready"] == "True"
    assert not plan.events


def test_promote_revision_is_the_bookkeeping_every_strategy_shares():
    from stt_operator.rollout.immediate import promote_revision
    from stt_operator.rollout.plan import EndpointPlan

    history = record_promotion([], OLD, NOW - timedelta(hours=1), 10)
    status = ModelDeploymentStatus(stable_revision=OLD.id, canary_revision=NEW.id, revisions=history)
    started = "2025-12-31T23:00:00Z"
    plan = EndpointPlan.from_status(status)
    new_history = promote_revision(
        plan, NEW, status, NOW, 10, event="Promoted", how="canary", created_at=started
    )
    assert plan.route == {NEW.id: 100}
    assert (plan.status.stable_revision, plan.status.canary_revision, plan.status.phase) == (
        NEW.id,
        None,
        "Healthy",
    )
    assert plan.status.revisions == new_history and new_history[-1].created_at == started
    assert [h.outcome for h in new_history] == ["Superseded", "Serving"]
    assert [e.message for e in plan.events] == [
        f"model model-b (revision {NEW.id}) serves 100% of traffic (canary)"
    ]
    quiet = EndpointPlan.from_status(status)
    promote_revision(quiet, NEW, status, NOW, 10, event=None)
    assert (
        quiet.events == [] and quiet.status.revisions[-1].created_at == quiet.status.revisions[-1].promoted_at
    )
