"""Monitoring after promotion (rollout/monitoring.py through the dispatcher), reconcile by
reconcile from status only: hold on no data, breach -> verdict, rollback vs condition only,
restart resume, no second verdict after one."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stt_harness.cluster import free_port
from stt_harness.mergepatch import apply_merge_patch
from stt_operator.analysis.model import MonitoringLook, WindowCounts
from stt_operator.analysis.monitoring import window_counts
from stt_operator.analysis.prom import QueryResult, Sample
from stt_operator.api.common import iso
from stt_operator.api.modeldeployment import ModelDeployment, ModelDeploymentStatus
from stt_operator.builders.serving import Revision
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.looks import run_monitoring_look
from stt_operator.controllers.status import status_changes
from stt_operator.observability import ENDPOINTS
from stt_operator.rollout.dispatch import plan_rollout
from stt_operator.rollout.monitoring import MonitoringRequest
from stt_operator.rollout.plan import ObservedRevision
from stt_operator.rollout.transitions import RolloutInput
from stt_operator.settings import OperatorSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OLD = Revision("model-a", "sha256:a")
NEW = Revision("model-b", "sha256:b")
INTERVAL = timedelta(minutes=5)
Answer = Callable[[MonitoringRequest], MonitoringLook]


def spec_of(rollback: bool = False, strategy: str = "Canary", **monitoring: Any) -> Any:
    mon = {
        "interval": "5m",
        "minSamples": 500,
        "maxFalseAlarmsPerDay": 0.01,
        "rollback": rollback,
        "metrics": [{"name": "errors", "preset": "error-rate", "thresholdRange": {"max": 0.01}}],
        **monitoring,
    }
    body = {"model": {"name": NEW.model}, "monitoring": mon, "strategy": {"type": strategy}}
    return ModelDeployment.spec_from(body, name="asr")


def promoted_status(with_previous: bool = True) -> dict[str, Any]:
    stamp = iso(T0 - timedelta(hours=2))
    old = {"revision": 1, "revisionId": OLD.id, "model": OLD.model, "modelDigest": OLD.model_digest}
    new = {"revision": 2, "revisionId": NEW.id, "model": NEW.model, "modelDigest": NEW.model_digest}
    history = [
        {**old, "createdAt": stamp, "promotedAt": stamp, "outcome": "Superseded"},
        {**new, "createdAt": stamp, "promotedAt": stamp, "outcome": "Serving"},
    ]
    return {
        "stableRevision": NEW.id,
        "stableModel": NEW.model,
        "currentWeight": 100,
        "phase": "Healthy",
        "revisions": history[1:] if not with_previous else history,
    }


def counts(events: float | None, trials: float | None) -> Answer:
    message = "" if trials else "no series"
    return lambda req: MonitoringLook((WindowCounts("errors", events, trials, message),))


UNAVAILABLE: Answer = lambda req: MonitoringLook((), "NoPrometheus", "no Prometheus is configured")  # noqa: E731


def typed(status: Mapping[str, Any]) -> ModelDeploymentStatus:
    """The status as the controller hands it to the planner."""
    return ModelDeploymentStatus.model_validate(status)


class World:
    """status + the cluster as the planner sees them; `step()` is one reconcile."""

    def __init__(self, spec: Any, status: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.status = status if status is not None else promoted_status()
        self.observed = {NEW.id: ObservedRevision(NEW.id, NEW.model, True, 1, 1)}
        self.now = T0
        self.requests: list[MonitoringRequest] = []
        self.events: list[tuple[str, str]] = []
        self.undo: list[int] = []
        self.requeue: float | None = None

    def step(self, answer: Answer | None = None) -> None:
        inp = RolloutInput(NEW, self.spec, typed(self.status), self.observed, self.now)
        plan = plan_rollout(inp)
        if plan.monitoring_request is not None:
            assert answer is not None, "a look was requested"
            self.requests.append(plan.monitoring_request)
            inp = replace(inp, monitoring=(plan.monitoring_request, answer(plan.monitoring_request)))
            plan = plan_rollout(inp)
            assert plan.monitoring_request is None
        # What the controller writes: a merge patch of what changed.
        apply_merge_patch(self.status, status_changes(inp.status, plan.status))
        conditions = {c.get("type"): c for c in self.status.get("conditions") or []}
        for c in plan.conditions:
            conditions[c.type] = {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
            }
        self.status["conditions"] = list(conditions.values())
        self.events += [(e.type, e.reason) for e in plan.events]
        if plan.undo_to_revision is not None:
            self.undo.append(plan.undo_to_revision)
        self.requeue = plan.requeue_after
        ModelDeploymentStatus.model_validate(self.status)  # status stays typed
        assert ModelDeploymentStatus.unknown_fields(self.status) == []  # nothing the apiserver prunes

    def after(self, delta: timedelta = INTERVAL, answer: Answer | None = None) -> None:
        self.now += delta
        self.step(answer)

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == type_)

    @property
    def mon(self) -> dict[str, Any]:
        return self.status["monitoring"]


def test_first_reconcile_opens_a_window_and_waits_one_interval() -> None:
    w = World(spec_of())
    w.step()
    assert w.mon == {"revision": NEW.id, "windowStart": iso(T0), "looks": 0}
    assert w.requests == [] and w.requeue == pytest.approx(300.0)
    w.after(timedelta(minutes=2))  # not due yet
    assert w.requests == []
    w.after(timedelta(minutes=3), counts(2, 1000))
    assert [(r.start, r.end, r.revision, r.metrics) for r in w.requests] == [
        (T0, T0 + INTERVAL, NEW.id, (("errors", "error-rate"),))
    ]
    assert w.mon["lastOutcome"] == "Passed" and w.mon["looks"] == 1
    assert w.mon["windowStart"] == iso(T0 + INTERVAL)  # the next window starts where this one ended
    assert w.condition("Monitoring")["status"] == "True"
    assert w.status["phase"] == "Healthy" and w.events == []


@pytest.mark.parametrize("strategy", ["Immediate", "BlueGreen"])
def test_every_strategys_steady_state_is_monitored(strategy: str) -> None:
    w = World(spec_of(rollback=True, strategy=strategy))
    w.step()
    w.after(answer=counts(60, 1000))
    assert len(w.requests) == 1 and w.undo == [1] and w.status["phase"] == "Degraded"


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [(counts(None, None), "NoData"), (UNAVAILABLE, "Unavailable"), (counts(40, 100), "InsufficientData")],
)
def test_no_data_unavailable_or_too_few_requests_hold_and_never_judge(answer: Answer, outcome: str) -> None:
    # 40 failures in 100 requests is far above 1 %, but 100 < minSamples: no verdict.
    w = World(spec_of(rollback=True))
    w.step()
    for _ in range(3):
        w.after(answer=answer)
    assert w.mon["lastOutcome"] == outcome
    assert w.mon["windowStart"] == iso(T0)  # the window keeps growing
    assert [r.start for r in w.requests] == [T0, T0, T0]
    assert w.mon["looks"] == 0 and "verdict" not in w.mon
    assert w.condition("Monitoring")["status"] == "False"
    assert w.condition("Monitoring")["reason"] == "MonitoringHold"
    assert w.status["phase"] == "Healthy" and w.events == [] and w.undo == []


def test_breach_without_rollback_sets_degraded_and_one_event() -> None:
    w = World(spec_of(rollback=False))
    w.step()
    w.after(answer=counts(40, 1000))  # 4 % against an SLO of 1 %
    assert w.mon["verdict"] == "Degraded" and w.mon["lastOutcome"] == "Breached"
    assert w.status["phase"] == "Degraded"
    assert w.condition("Degraded") | {"message": ""} == {
        "type": "Degraded",
        "status": "True",
        "reason": "SLOBreached",
        "message": "",
    }
    assert w.events == [("Warning", "SLOBreached")] and w.undo == []
    assert "lastRollback" not in w.status
    for _ in range(3):  # judged once: no new look, no new Event, still Degraded
        w.after()
    assert len(w.requests) == 1 and w.events == [("Warning", "SLOBreached")]
    assert w.status["phase"] == "Degraded" and w.condition("Degraded")["status"] == "True"


def test_breach_with_rollback_goes_back_to_the_previous_good_revision() -> None:
    w = World(spec_of(rollback=True))
    w.step()
    w.after(answer=counts(3, 1000))  # 0.3 %: within the SLO
    w.after(answer=counts(60, 1500))
    assert w.undo == [1]
    assert w.events == [("Warning", "SLOBreached"), ("Warning", "MonitoringRollback")]
    assert [h["outcome"] for h in w.status["revisions"]] == ["Superseded", "RolledBack"]
    assert w.status["lastRollback"]["code"] == "MonitoringRollback"
    last = w.status["lastRollback"]
    assert (last["fromModel"], last["toModel"]) == (NEW.model, OLD.model)
    assert w.mon["rollbackToRevision"] == 1
    w.after()
    w.after()  # the undo has not rolled out yet: the verdict is not repeated
    assert w.undo == [1] and len(w.events) == 2 and len(w.requests) == 2


def test_breach_with_rollback_but_no_previous_revision_only_reports() -> None:
    w = World(spec_of(rollback=True), promoted_status(with_previous=False))
    w.step()
    w.after(answer=counts(60, 1000))
    assert w.undo == [] and w.mon["verdict"] == "Degraded"
    assert [e for e in w.events if e[1] == "SLOBreached"] == [("Warning", "SLOBreached")] * 2
    assert "lastRollback" not in w.status and w.status["revisions"][-1]["outcome"] == "Serving"


def test_a_restarted_operator_resumes_the_same_window_from_status() -> None:
    w = World(spec_of())
    w.step()
    w.after(answer=counts(1, 100))  # too few: the window from T0 keeps growing
    saved = copy.deepcopy(w.status)
    restarted = World(spec_of(), saved)  # nothing but status survives
    restarted.now = w.now + timedelta(minutes=1)
    restarted.step()
    assert restarted.requests == []  # the interval counts from the last look, not the restart
    restarted.after(timedelta(minutes=4), counts(2, 800))
    assert restarted.requests[0].start == T0
    assert restarted.mon["looks"] == 1 and restarted.mon["windowStart"] == iso(restarted.now)


def test_planning_twice_gives_the_same_plan() -> None:
    w = World(spec_of(rollback=True))
    w.step()
    w.now += INTERVAL
    inp = RolloutInput(NEW, w.spec, typed(w.status), w.observed, w.now)
    first = plan_rollout(inp)
    assert first.monitoring_request is not None
    look = (first.monitoring_request, counts(60, 1000)(first.monitoring_request))
    a, b = plan_rollout(replace(inp, monitoring=look)), plan_rollout(replace(inp, monitoring=look))
    assert (a.status, a.events, a.undo_to_revision) == (b.status, b.events, b.undo_to_revision)


def test_a_new_stable_revision_starts_afresh() -> None:
    w = World(spec_of())
    w.step()
    w.after(answer=counts(60, 1000))
    assert w.mon["verdict"] == "Degraded"
    w.status["monitoring"] = {**w.mon, "revision": OLD.id}  # as if another revision had been judged
    w.after()
    # Nothing of the judged revision's state is left (the verdict would stick otherwise).
    assert w.mon == {"revision": NEW.id, "windowStart": iso(w.now), "looks": 0}
    assert w.status["phase"] == "Healthy"
    assert w.condition("Degraded")["status"] == "False"
    w.after(answer=counts(2, 1000))  # the new revision is judged on its own counts
    assert w.mon["lastOutcome"] == "Passed" and w.status["phase"] == "Healthy"


def test_no_monitoring_during_a_rollout_and_removed_spec_clears_status() -> None:
    w = World(spec_of())
    w.step()
    assert "monitoring" in w.status
    w.spec = ModelDeployment.spec_from({"model": {"name": NEW.model}}, name="asr")
    w.after()
    assert "monitoring" not in w.status
    # A rollout in flight (desired is not the stable revision): no look.
    spec = spec_of()
    inp = RolloutInput(OLD, spec, typed(promoted_status()), w.observed, T0 + timedelta(hours=1))
    assert plan_rollout(inp).monitoring_request is None


def test_the_look_reads_the_stable_services_triton_counters_over_the_window() -> None:
    queries: list[str] = []

    class Client:
        def instant(self, query: str, at: float | None = None) -> QueryResult:
            queries.append(query)
            if query.startswith("last_over_time("):
                # The stable pod's counters existed before the window: each counts from its
                # value at the start, not from its first sample inside the window.
                assert at == T0.timestamp()
                return QueryResult(query, (Sample({}, 8.0 if "failure" in query else 480.0),), 0.0)
            assert at == (T0 + INTERVAL).timestamp()
            if "nv_inference_request_failure" in query:
                return QueryResult(query, (Sample({}, 5.0, ((0.0, 10.0), (1.0, 15.0))),), 0.0)
            return QueryResult(query, (Sample({}, 1500.0, ((0.0, 500.0), (1.0, 1490.0))),), 0.0)

    look = window_counts(
        Client(),
        (("errors", "error-rate"),),
        namespace="ns",
        endpoint="asr",
        service="asr-model-b-1234",
        model=NEW.model,
        start=T0,
        end=T0 + INTERVAL,
    )
    # errors 15 - 8; requests (1490 - 480) + 7
    assert look.unavailable is None and look.counts == (WindowCounts("errors", 7.0, 1017.0),)
    assert all('service="asr-model-b-1234"' in q for q in queries)
    assert all("[300s]" in q for q in queries if not q.startswith("last_over_time("))


def _md() -> ModelDeployment:
    mon = {"metrics": [{"name": "errors", "thresholdRange": {"max": 0.01}}], "rollback": True}
    return ModelDeployment.from_body(
        {
            "metadata": {"name": "asr", "namespace": "ns"},
            "spec": {"model": {"name": NEW.model}, "monitoring": mon},
        }
    )


REQUEST = MonitoringRequest(NEW.id, NEW.model, (("errors", "error-rate"),), T0, T0 + INTERVAL)


def test_the_controllers_look_holds_when_prometheus_is_down_or_missing() -> None:
    def ctx(url: str) -> OperatorContext:
        return OperatorContext(settings=OperatorSettings(prometheus_url=url), kube=None)  # type: ignore[arg-type]

    down = run_monitoring_look(ctx(f"http://127.0.0.1:{free_port()}"), _md(), REQUEST)
    assert down.unavailable == "unreachable" and down.counts == ()
    missing = run_monitoring_look(ctx(""), _md(), REQUEST)
    assert missing.unavailable == "NoPrometheus" and missing.counts == ()
    w = World(spec_of(rollback=True))
    w.step()
    w.after(answer=lambda req: down)
    assert w.mon["lastOutcome"] == "Unavailable" and w.undo == [] and w.events == []


class _Kube:
    """Just enough of the API facade for one ModelDeployment reconcile in steady state."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.applied: list[dict[str, Any]] = []

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        return next(
            (o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name),
            None,
        )

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Any = None,
        cached: bool = False,
    ) -> Any:
        return [o for o in self.objects if o["kind"] == kind]

    def apply(self, obj: dict[str, Any]) -> None:
        self.applied.append(obj)

    def apply_all(self, objs: list[dict[str, Any]]) -> None:
        self.applied += objs

    def delete(self, *args: Any) -> None:
        raise AssertionError(f"nothing is deleted in steady state: {args}")


def test_one_reconcile_takes_the_look_and_requests_the_undo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller path (controllers/modeldeployment.py): the planner's look is taken, the
    verdict is written to status and the undo annotation is set for rollout/history.py."""
    import kopf

    from stt_operator.builders.metadata import LABEL_DEPLOYMENT, LABEL_MODEL, LABEL_REVISION
    from stt_operator.controllers import looks
    from stt_operator.controllers import modeldeployment as controller

    model = {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "STTModel",
        "metadata": {"name": NEW.model, "namespace": "ns"},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    desired = Revision(NEW.model, controller.model_digest(model))
    deployment = {
        "kind": "Deployment",
        "metadata": {
            "name": "asr-b",
            "generation": 1,
            "labels": {LABEL_DEPLOYMENT: "asr", LABEL_REVISION: desired.id, LABEL_MODEL: NEW.model},
        },
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "availableReplicas": 1,
            "updatedReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }
    status = promoted_status()
    status["stableRevision"] = desired.id
    status["revisions"][1]["revisionId"] = desired.id
    status["monitoring"] = {"revision": desired.id, "windowStart": "2026-01-01T00:00:00Z", "looks": 3}
    mon = {"metrics": [{"name": "errors", "thresholdRange": {"max": 0.01}}], "rollback": True}
    body = {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "asr", "namespace": "ns", "generation": 1, "uid": "u1", "annotations": {}},
        "spec": {"model": {"name": NEW.model}, "strategy": {"type": "Immediate"}, "monitoring": mon},
        "status": status,
    }
    seen: list[MonitoringRequest] = []

    def look(ctx: Any, md: Any, request: MonitoringRequest) -> MonitoringLook:
        seen.append(request)
        return counts(80, 2000)(request)

    monkeypatch.setattr(looks, "run_monitoring_look", look)
    monkeypatch.setattr(kopf, "event", lambda *a, **k: None)
    ctx = OperatorContext(
        settings=OperatorSettings(capacity_preflight=False), kube=_Kube([model, deployment])
    )  # type: ignore[arg-type]
    patch = kopf.Patch()
    before = ENDPOINTS.rollbacks("ns", "asr")
    controller.reconcile(body, patch, ctx)
    assert ENDPOINTS.rollbacks("ns", "asr") == before + 1  # stt_operator_rollbacks_total counts it
    assert [r.revision for r in seen] == [desired.id]
    assert patch["metadata"]["annotations"] == {"stt.dev/undo-to-revision": "1"}
    assert patch["status"]["phase"] == "Degraded"
    assert patch["status"]["monitoring"]["verdict"] == "Degraded"
    assert patch["status"]["lastRollback"]["code"] == "MonitoringRollback"
    assert [h["outcome"] for h in patch["status"]["revisions"]] == ["Superseded", "RolledBack"]
    degraded = next(c for c in patch["status"]["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "SLOBreached")


def test_the_next_reconcile_undoes_to_the_previous_revision_through_history() -> None:
    """The annotation the verdict sets is planned by rollout/history.py like `kubectl stt undo`:
    spec.model goes back to the previous good model, which then rolls out through the strategy."""
    from stt_operator.rollout.history import ANNOTATION_UNDO, plan_history_requests

    w = World(spec_of(rollback=True))
    w.step()
    w.after(answer=counts(60, 1000))
    digests = {OLD.model: OLD.model_digest, NEW.model: NEW.model_digest}
    annotations = {ANNOTATION_UNDO: str(w.undo[0])}
    plan = plan_history_requests(annotations, typed(w.status), NEW.model, 10, digests.get)
    assert plan.model == OLD.model and plan.consumed == [ANNOTATION_UNDO]
    assert [e.reason for e in plan.events] == ["UndoRequested"]


@pytest.mark.parametrize("old_available", [False, True])
def test_the_rollback_rollout_serves_the_old_revision_before_switching(old_available: bool) -> None:
    w = World(spec_of(rollback=True, strategy="Immediate"))
    w.step()
    w.after(answer=counts(60, 1000))
    observed = dict(w.observed)
    observed[OLD.id] = ObservedRevision(OLD.id, OLD.model, old_available, 1, 1 if old_available else 0)
    # After the undo spec.model names the old model again: it is desired, the degraded one serves.
    inp = RolloutInput(OLD, spec_of(rollback=True, strategy="Immediate"), typed(w.status), observed, w.now)
    plan = plan_rollout(inp)
    assert [r for r, _ in plan.ensure] == [OLD]
    assert plan.monitoring_request is None  # no look while the rollback rolls out
    if old_available:
        assert plan.route == {OLD.id: 100}
    else:
        assert plan.route in (None, {NEW.id: 100})  # the degraded one serves until the old is ready


@pytest.mark.parametrize("first", [True, False])
def test_the_reconcile_that_promotes_a_revision_starts_watching_it(first: bool) -> None:
    """Reconciles are event-driven: the one that makes a revision stable must open its window
    and ask to be woken after one interval, or a Healthy endpoint would never be looked at."""
    if first:  # the endpoint's first revision turns Available
        status: dict[str, Any] = {}
    else:  # an Immediate switch from OLD to NEW, NEW now Available
        status = {**promoted_status(), "stableRevision": OLD.id, "stableModel": OLD.model}
        status["revisions"] = [{**status["revisions"][0], "outcome": "Serving"}]
    w = World(spec_of(strategy="Immediate"), status)
    if not first:
        w.observed = {**w.observed, OLD.id: ObservedRevision(OLD.id, OLD.model, True, 1, 1)}
    w.step()
    assert w.status["stableRevision"] == NEW.id and w.status["phase"] == "Healthy", w.status
    assert w.mon == {"revision": NEW.id, "windowStart": iso(T0), "looks": 0}
    assert w.requeue is not None and 0 < w.requeue <= 300.0  # woken within one interval


def test_a_reconcile_from_the_stale_spec_does_not_promote_the_rolled_back_revision_again() -> None:
    """The reconcile that acts on monitoring's undo still plans from the spec naming the
    degraded model: its history entry stays RolledBack, no new entry serves it (seen on the
    real node: the degraded revision came back as a new `Serving` entry, later `Superseded`)."""
    w = World(spec_of(rollback=True, strategy="Immediate"))
    w.step()
    w.after(answer=counts(60, 1000))
    before = copy.deepcopy(w.status["revisions"])
    assert [r["outcome"] for r in before] == ["Superseded", "RolledBack"]
    w.after(timedelta(seconds=1))  # spec.model not yet changed by the undo
    assert w.status["revisions"] == before
