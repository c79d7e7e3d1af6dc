"""Wake-up bookkeeping (controllers/triggers.py) and the bounded logging (observability.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from stt_operator.builders.serving import deployment_available
from stt_operator.controllers.triggers import (
    ANY_NAME,
    Triggers,
    Waker,
    child_fingerprint,
    dependency_fingerprint,
    own_fingerprint,
    references,
    stt_owner,
    without_field_managers,
)
from stt_operator.observability import ObjectStateLog, RateLimitFilter


def deployment(available: int, generation: int = 1, observed: int = 1) -> dict:
    return {
        "metadata": {
            "name": "asr-x",
            "namespace": "ns",
            "uid": "d1",
            "generation": generation,
            "ownerReferences": [{"apiVersion": "stt.dev/v1alpha1", "kind": "ModelDeployment", "name": "asr"}],
            "resourceVersion": "1",
        },
        "spec": {"replicas": 1},
        "status": {"availableReplicas": available, "observedGeneration": observed},
    }


def test_owner_is_the_controlling_stt_object() -> None:
    assert stt_owner(deployment(0)) == ("ModelDeployment", "ns", "asr")
    foreign = deployment(0)
    foreign["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x"}]
    assert stt_owner(foreign) is None


def test_child_fingerprint_ignores_noise_and_sees_availability() -> None:
    a = deployment(0)
    b = deployment(0)
    b["metadata"]["resourceVersion"] = "2"  # a resync or an unrelated field
    b["metadata"]["annotations"] = {"x": "y"}
    assert child_fingerprint("Deployment", a) == child_fingerprint("Deployment", b)
    assert child_fingerprint("Deployment", a) != child_fingerprint("Deployment", deployment(1))
    # Available, then a spec change the controller has not observed yet: not available any more.
    rolled_out = available(deployment(1))
    assert child_fingerprint("Deployment", rolled_out) != child_fingerprint(
        "Deployment", available(deployment(1, 2, 1))
    )


def available(body: dict) -> dict:
    """`body` as the controller manager writes it once every replica is updated and Available."""
    body["status"] |= {"updatedReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}
    return body


def test_child_fingerprint_ignores_the_controller_managers_steps_before_availability() -> None:
    """A new Deployment's status writes until it is Available change nothing its owner's
    reconcile reads (rollout/plan.py: observed_revisions): only the last one wakes it."""
    created = deployment(0, observed=0)
    created["status"] = {}
    steps = [
        {"observedGeneration": 1},
        {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1},
        {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "unavailableReplicas": 1,
        },
    ]
    first = child_fingerprint("Deployment", created)
    for status in steps:
        assert child_fingerprint("Deployment", {**created, "status": status}) == first
    done = available(deployment(1))
    assert child_fingerprint("Deployment", done) != first
    assert deployment_available(done) and not deployment_available({**created, "status": steps[-1]})


def test_own_fingerprint_sees_spec_and_control_annotations_only() -> None:
    body = {"metadata": {"generation": 3, "annotations": {"stt.dev/last-handled-configuration": "{}"}}}
    same = {"metadata": {"generation": 3, "annotations": {"stt.dev/abtest-p-state": "{}"}}}
    assert own_fingerprint(body) == own_fingerprint(same)
    promoted = {"metadata": {"generation": 3, "annotations": {"stt.dev/promote": "1"}}}
    assert own_fingerprint(body) != own_fingerprint(promoted)
    assert own_fingerprint(body) != own_fingerprint({"metadata": {"generation": 4}})
    # retry and undo wake a rolled-back endpoint that has nothing else in flight
    for key in ("stt.dev/retry", "stt.dev/undo-to-revision"):
        steered = {"metadata": {**body["metadata"], "annotations": {key: "1"}}}
        assert own_fingerprint(body) != own_fingerprint(steered)


def test_model_dependency_fingerprint_follows_readiness() -> None:
    model = {"metadata": {"generation": 1}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    ready = {"metadata": {"generation": 1}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    analytics = {**ready, "status": {**ready["status"], "analytics": {"wer": 0.1}}}
    assert dependency_fingerprint("STTModel", model) != dependency_fingerprint("STTModel", ready)
    assert dependency_fingerprint("STTModel", ready) == dependency_fingerprint("STTModel", analytics)
    assert dependency_fingerprint("ABTest", ready) is None


def test_observe_reports_new_changed_same() -> None:
    t = Triggers()
    assert t.observe("u", "child", "a") == "new"
    assert t.observe("u", "child", "a") == "same"
    assert t.observe("u", "child", "b") == "changed"
    t.forget("u")
    assert t.observe("u", "child", "b") == "new"


def test_wake_sets_the_registered_loop_and_dependents_are_found() -> None:
    async def scenario() -> None:
        t = Triggers()
        loop = asyncio.get_running_loop()
        md = Waker(loop, body={"spec": {"model": {"name": "m1"}}})
        other = Waker(loop, body={"spec": {"model": {"name": "m2"}}})
        ab = Waker(loop, body={"spec": {"endpoint": {"modelDeploymentRef": {"name": "asr"}}, "variants": []}})
        t.register(("ModelDeployment", "ns", "asr"), md)
        t.register(("ModelDeployment", "ns", "other"), other)
        t.register(("ABTest", "ns", "ab"), ab)
        assert t.dependents("STTModel", "ns", "m1") == [("ModelDeployment", "ns", "asr")]
        assert t.dependents("ModelDeployment", "ns", "asr") == [("ABTest", "ns", "ab")]
        assert t.dependents("STTModel", "elsewhere", "m1") == []
        assert t.wake(("ModelDeployment", "ns", "asr"))
        await asyncio.sleep(0)
        assert md.woken and not other.woken
        # A restarted loop replaces the old one; the old one's late exit leaves it registered.
        again = Waker(loop, body={"spec": {"model": {"name": "m1"}}})
        t.register(("ModelDeployment", "ns", "asr"), again)
        t.unregister(("ModelDeployment", "ns", "asr"), md)
        assert t.dependents("STTModel", "ns", "m1") == [("ModelDeployment", "ns", "asr")]
        t.unregister(("ModelDeployment", "ns", "asr"), again)
        assert not t.wake(("ModelDeployment", "ns", "asr"))
        assert t.dependents("STTModel", "ns", "m1") == []
        assert t.dependents("STTModel", "ns", "m2") == [("ModelDeployment", "ns", "other")]

    asyncio.run(scenario())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, name: str = "kopf.objects") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_rate_limit_bounds_a_storm_and_reports_what_it_dropped() -> None:
    clock = Clock()
    limit = RateLimitFilter(burst=5, period=60, clock=clock)
    # 1,000 objects failing the same way in one minute: 5 lines get out.
    passed = [
        limit.filter(_record("Timer for %s failed: port %d refused", f"ns/obj-{i}", 6443))
        for i in range(1000)
    ]
    assert sum(passed) == 5
    # Another kind of line has its own budget.
    assert limit.filter(_record("something else entirely"))
    clock.now = 61
    record = _record("Timer for %s failed: port %d refused", "ns/obj-1", 6443)
    assert limit.filter(record)
    assert "995 similar lines suppressed" in record.getMessage()


def test_rate_limit_groups_preformatted_lines_by_their_first_words() -> None:
    limit = RateLimitFilter(burst=3, period=60, clock=Clock())
    urls = [f"https://127.0.0.1:6443/apis/group{i}/v1/things?watch=true" for i in range(50)]
    lines = [_record(f"Request attempt #4/9 failed; will retry: GET {u} -> refused") for u in urls]
    assert sum(limit.filter(r) for r in lines) == 3


def test_object_state_log_writes_once_per_state_change(caplog) -> None:
    logger = logging.getLogger("test.state")
    states = ObjectStateLog(logger)
    key = ("ModelDeployment", "ns", "asr")
    with caplog.at_level(logging.INFO, logger="test.state"):
        written = [states.record(key, f"MaxRetryError: port 6443 attempt {i}") for i in range(50)]
        assert written.count(True) == 1  # the same error, whatever its attempt number
        assert states.record(key, "NotFoundError: route gone")  # a different error is news
        assert states.record(key, None)  # recovery is news
        assert not states.record(key, None)
    assert len(caplog.records) == 3


def test_field_managers_are_dropped_in_place_and_the_rest_kept() -> None:
    body = {
        "metadata": {"name": "asr", "resourceVersion": "7", "managedFields": [{"manager": "kubectl"}]},
        "spec": {"model": {"name": "m1"}},
    }
    same = without_field_managers(body)
    assert same is body  # in place: the caller's (Kopf's) copy is the one that shrinks
    assert body == {"metadata": {"name": "asr", "resourceVersion": "7"}, "spec": {"model": {"name": "m1"}}}
    assert without_field_managers(None) is None and without_field_managers({"metadata": None}) == {
        "metadata": None
    }


def test_references_name_what_each_reconcile_reads() -> None:
    md = {"spec": {"model": {"name": "m1"}}, "status": {"stableModel": "m0"}}
    read = {("STTModel", "ns", "m1"), ("STTModel", "ns", "m0")}
    assert references(("ModelDeployment", "ns", "asr"), md) == read
    by_selector = {"spec": {"selector": {"matchLabels": {"task": "asr"}}}}
    assert references(("ModelDeployment", "ns", "sel"), by_selector) == {("STTModel", "ns", ANY_NAME)}
    endpoint = {"modelDeploymentRef": {"name": "asr"}}
    ab = {"spec": {"endpoint": endpoint, "variants": [{"model": {"name": "a"}}, {}]}}
    read = {("STTModel", "ns", "a"), ("ModelDeployment", "ns", "asr")}
    assert references(("ABTest", "ns", "ab"), ab) == read
    assert references(("STTModel", "ns", "m1"), {"spec": {}}) == frozenset()
    # Hostile or half-written bodies reference nothing rather than failing.
    assert references(("ModelDeployment", "ns", "x"), {"spec": None, "status": None}) == frozenset()


class Unreadable(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise AssertionError("a body was read")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("a body was read")

    def __len__(self) -> int:
        raise AssertionError("a body was read")


def test_dependents_follow_each_event_and_scale_with_the_references_not_the_namespace() -> None:
    async def scenario() -> None:
        t = Triggers()
        loop = asyncio.get_running_loop()
        endpoints = [("ModelDeployment", "big", f"ep-{i}") for i in range(5000)]
        for i, key in enumerate(endpoints):
            t.register(key, Waker(loop, body={"spec": {"model": {"name": f"m-{i}"}}}))
        selector = ("ModelDeployment", "big", "by-label")
        t.register(selector, Waker(loop, body={"spec": {"selector": {"matchLabels": {"a": "b"}}}}))
        assert t.dependents("STTModel", "big", "m-7") == sorted([endpoints[7], selector])
        # A new spec.model moves the endpoint from one model's dependents to the other's; a
        # status.stableModel keeps the old model read until the rollout settles.
        t.refer(endpoints[7], {"spec": {"model": {"name": "m-8"}}, "status": {"stableModel": "m-7"}})
        assert endpoints[7] in t.dependents("STTModel", "big", "m-8")
        assert endpoints[7] in t.dependents("STTModel", "big", "m-7")
        t.refer(endpoints[7], {"spec": {"model": {"name": "m-8"}}, "status": {"stableModel": "m-8"}})
        assert t.dependents("STTModel", "big", "m-7") == [selector]
        # An event of an object with no running loop here indexes nothing.
        t.refer(("ModelDeployment", "big", "elsewhere"), {"spec": {"model": {"name": "m-9"}}})
        assert ("ModelDeployment", "big", "elsewhere") not in t.dependents("STTModel", "big", "m-9")
        # The lookup reads the index, never the loops' bodies: with every body unreadable,
        # each of the 5,000 models still finds its endpoint.
        for key in endpoints:
            waker = t._waker(key)
            assert waker is not None
            waker.body = Unreadable()
        for i in (0, 1234, 4999):
            assert endpoints[i] in t.dependents("STTModel", "big", f"m-{i}")

    asyncio.run(scenario())
