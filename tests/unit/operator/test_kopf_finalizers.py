"""STTModels and ModelDeployments run in loops of our own (controllers/handlers.py: Loops), not
Kopf daemons: Kopf puts no finalizer on them and removes an old one; peering pauses and exit
stop the loops (kopf_tuning.follow_operator_pauses); a DELETED event ends an object's loop.

Kopf's own per-event processing (`process_resource_event`) and pause toggles run here for real;
only Kopf's final patch call is recorded instead of sent, so no apiserver is needed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.structs import references
from kopf._core.actions import application, lifecycles
from kopf._core.engines import daemons, indexing
from kopf._core.intents import registries
from kopf._core.reactor import inventory, processing

from stt_operator.controllers.kopf_tuning import FINALIZER, follow_operator_pauses, tune_kopf
from stt_operator.settings import OperatorSettings

GROUP, VERSION = "stt.dev", "v1alpha1"
MODELS = references.Resource(GROUP, VERSION, "sttmodels", kind="STTModel", namespaced=True)
ABTESTS = references.Resource(GROUP, VERSION, "abtests", kind="ABTest", namespaced=True)


class Harness:
    """A Kopf registry shaped like the operator's: a watching handler for STTModels, a daemon
    for ABTests."""

    def __init__(self) -> None:
        self.registry = registries.OperatorRegistry()
        self.settings = kopf.OperatorSettings()
        tune_kopf(self.settings, OperatorSettings())
        self.memories = inventory.ResourceMemories()
        self.patches: list[list[dict[str, Any]]] = []  # each as a JSON patch
        kopf.on.event(GROUP, VERSION, "sttmodels", id="sttmodels_event", registry=self.registry)(
            self.on_event
        )
        kopf.daemon(GROUP, VERSION, "abtests", id="abtests_loop", registry=self.registry)(self.daemon)

    @staticmethod
    async def on_event(**_: Any) -> None:
        pass

    @staticmethod
    async def daemon(stopped: kopf.DaemonStopped, **_: Any) -> None:
        await stopped.wait()

    async def process(self, resource: references.Resource, event: dict[str, Any]) -> None:
        await processing.process_resource_event(
            lifecycle=lifecycles.all_at_once,
            indexers=indexing.OperatorIndexers(),
            registry=self.registry,
            settings=self.settings,
            memories=self.memories,
            memobase=kopf.Memo(),
            resource=resource,
            raw_event=event,  # type: ignore[arg-type]
            event_queue=asyncio.Queue(),
        )

    async def stop_daemons(self) -> None:
        running = [
            daemon
            for memory in self.memories._items.values()
            for daemon in memory.daemons_memory.running_daemons.values()
        ]
        for daemon in running:
            daemon.stopper.set(reason=kopf.DaemonStoppingReason.OPERATOR_EXITING)
        await asyncio.wait_for(asyncio.gather(*(d.task for d in running)), timeout=5)


def body(kind: str, name: str, uid: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "1"}
    if finalizers:
        meta["finalizers"] = finalizers
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": meta}


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Harness:
    made = Harness()

    async def patch_and_check(*, patch: Any, body: Any, **_: Any) -> tuple[None, None]:
        if patch:
            made.patches.append(patch.as_json_patch(body))
        return None, None

    monkeypatch.setattr(application, "patch_and_check", patch_and_check)
    return made


async def test_a_new_model_gets_no_finalizer(harness: Harness) -> None:
    await harness.process(MODELS, {"type": "ADDED", "object": body("STTModel", "m", "u1")})
    await harness.process(MODELS, {"type": "DELETED", "object": body("STTModel", "m", "u1")})
    assert harness.patches == []


async def test_the_finalizer_of_an_older_version_is_removed(harness: Harness) -> None:
    await harness.process(MODELS, {"type": None, "object": body("STTModel", "m", "u1", [FINALIZER])})
    assert harness.patches == [[{"op": "remove", "path": "/metadata/finalizers"}]]


async def test_abtests_keep_kopfs_finalizer(harness: Harness) -> None:
    await harness.process(ABTESTS, {"type": "ADDED", "object": body("ABTest", "ab", "u2")})
    await harness.stop_daemons()
    assert harness.patches == [[{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]]


async def test_pauses_and_exit_reach_the_followers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemons, "daemon_killer", daemons.daemon_killer)  # Kopf's own comes back
    calls: list[str] = []
    follow_operator_pauses(lambda: calls.append("pause"), lambda: calls.append("resume"))
    follow_operator_pauses(lambda: calls.append("pause"), lambda: calls.append("resume"))  # idempotent
    paused = aiotoggles.ToggleSet(any)
    peering = await paused.make_toggle(name="peering")
    killer = asyncio.create_task(
        daemons.daemon_killer(
            settings=kopf.OperatorSettings(), memories=inventory.ResourceMemories(), operator_paused=paused
        )
    )

    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0.01)

    await settle()
    assert calls == []
    await peering.turn_to(True)
    await settle()
    assert calls == ["pause"]
    await peering.turn_to(False)
    await settle()
    assert calls == ["pause", "resume"]
    killer.cancel()
    await asyncio.gather(killer, return_exceptions=True)
    assert calls == ["pause", "resume", "pause"]  # exiting


def run_program(program: str) -> Any:
    """Run `program` in a fresh interpreter with the operator's handlers registered (they fill
    Kopf's process-wide registry); returns the JSON it printed last."""
    prelude = """
import asyncio, json
from kubernetes import client
from stt_operator.controllers import context
from stt_operator.services.kube import Kube
from stt_operator.settings import OperatorSettings
settings = OperatorSettings(prometheus_url="http://prometheus.monitoring:9090")
context._current = context.OperatorContext(settings=settings, kube=Kube(client.ApiClient()))
from stt_operator.controllers import handlers
"""
    run = subprocess.run(
        [sys.executable, "-c", prelude + program], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_operators_registry_has_kopf_daemons_only_for_abtests() -> None:
    # With a Prometheus configured, as analytics used to be a Kopf timer per STTModel.
    spawning = run_program("""
from kopf._core.intents import registries
handlers_ = registries.get_default_registry()._spawning.get_all_handlers()
print(json.dumps(sorted([h.id, h.requires_finalizer] for h in handlers_)))
""")
    assert spawning == [["abtests_loop", True]]


def test_loops_start_follow_and_stop_with_their_objects() -> None:
    """`Loops` with the reconcile replaced by a recorder: one loop per object, fed the newest
    body, ended by deletion, by another object taking the name, and by a pause."""
    trace: dict[str, Any] = run_program("""
import threading
calls = []
def fake_reconcile(key, uid):
    body = handlers.TRIGGERS.body(key)
    calls.append([key[2], uid, body["metadata"]["resourceVersion"]])
    return None  # settled: sleep until woken
handlers.reconcile_now = fake_reconcile
loops = handlers.Loops()
def md(name, uid, version):
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": version},
            "spec": {"model": {"name": "m"}}}
def gauge():
    return {k[0] + "/" + k[1]: v for k, v in handlers._LOOP_COUNTS.items()}
async def settle():
    for _ in range(20):
        await asyncio.sleep(0.01)
async def main():
    out = {}
    loops.see("ModelDeployment", md("a", "u1", "1"))
    loops.see("ModelDeployment", md("b", "u2", "1"))
    await settle()
    out["started"] = sorted(calls); calls.clear()
    out["gauge"] = gauge()
    loops.see("ModelDeployment", md("a", "u1", "2"))  # a new body: no reconcile by itself
    await settle()
    out["fed"] = list(calls)
    handlers.TRIGGERS.wake(("ModelDeployment", "ns", "a"))
    await settle()
    out["woken"] = list(calls); calls.clear()
    loops.see("ModelDeployment", md("a", "u3", "5"))  # deleted and created again, DELETED unseen
    await settle()
    out["replaced"] = list(calls); calls.clear()
    loops.stop(("ModelDeployment", "ns", "a"), "u1")  # the old object's DELETED, late: ignored
    loops.stop(("ModelDeployment", "ns", "b"), "u2")
    await settle()
    out["after_delete"] = sorted(loops.keys("ModelDeployment"))
    out["gauge_after_delete"] = gauge()
    loops.end_namespace("ns")  # being deleted: its loops end, and none starts there
    loops.see("ModelDeployment", md("d", "u5", "1"))
    await settle()
    out["ended_namespace"] = [sorted(loops.keys("ModelDeployment")), gauge()]
    loops.forget_namespace("ns")  # gone: the name may come back
    loops.pause()
    loops.see("ModelDeployment", md("c", "u4", "1"))
    await settle()
    out["paused"] = [sorted(loops.keys("ModelDeployment")), gauge(), list(calls)]
    loops.resume()
    loops.see("ModelDeployment", md("c", "u4", "1"))
    await settle()
    out["resumed"] = [sorted(loops.keys("ModelDeployment")), list(calls)]
    loops.pause()
    await settle()
    print(json.dumps(out))
asyncio.run(main())
""")
    assert trace["started"] == [["a", "u1", "1"], ["b", "u2", "1"]]
    assert trace["gauge"] == {"ModelDeployment/ns": 2}
    assert trace["fed"] == []
    assert trace["woken"] == [["a", "u1", "2"]]
    assert trace["replaced"] == [["a", "u3", "5"]]
    assert trace["after_delete"] == [["ModelDeployment", "ns", "a"]]
    assert trace["gauge_after_delete"] == {"ModelDeployment/ns": 1}
    assert trace["ended_namespace"] == [[], {}]
    assert trace["paused"] == [[], {}, []]
    assert trace["resumed"] == [[["ModelDeployment", "ns", "c"]], [["c", "u4", "1"]]]


def test_a_loop_whose_object_is_gone_ends_itself() -> None:
    trace = run_program("""
def gone(key, uid):
    raise handlers.ObjectGone(key)
handlers.reconcile_now = gone
loops = handlers.Loops()
async def main():
    loops.see("STTModel", {"metadata": {"name": "m", "namespace": "ns", "uid": "u1", "resourceVersion": "1"}})
    for _ in range(20):
        await asyncio.sleep(0.01)
    print(json.dumps([len(handlers._TASKS), loops.keys("STTModel"), dict(handlers._LOOP_COUNTS)]))
asyncio.run(main())
""")
    assert trace == [0, [], {}]


def test_a_waiting_loop_holds_no_task_and_wakeups_during_a_reconcile_coalesce() -> None:
    """A settled or requeued object holds a `Waker`, no task; wake-ups that arrive while its
    reconcile runs bring one more reconcile, not one each; a loop stopped meanwhile ends when
    that reconcile returns, and its result (a requeue) is dropped."""
    trace = run_program("""
import threading, time
calls = []
gate = threading.Event()
plan = {"requeue": None, "block": False}
def fake_reconcile(key, uid):
    calls.append(key[2])
    if plan["block"]:
        gate.wait(5)
    return plan["requeue"]
handlers.reconcile_now = fake_reconcile
loops = handlers.Loops()
key = ("STTModel", "ns", "m")
body = {"metadata": {"name": "m", "namespace": "ns", "uid": "u1", "resourceVersion": "1"}}
async def settle(seconds=0.2):
    await asyncio.sleep(seconds)
async def main():
    out = {}
    loops.see("STTModel", body)
    await settle()
    out["settled"] = [len(calls), len(handlers._TASKS), loops.keys("STTModel")]
    plan["requeue"] = 0.3  # the planner asks to look again soon
    handlers.TRIGGERS.wake(key)
    await settle(0.1)
    out["requeued_waiting"] = [len(calls), len(handlers._TASKS)]
    await settle(0.35)
    out["requeue_due"] = len(calls)
    plan["requeue"] = None
    await settle(0.4)
    calls.clear()
    plan["block"] = True
    handlers.TRIGGERS.wake(key)
    await settle(0.1)
    for _ in range(5):
        handlers.TRIGGERS.wake(key)
    await settle(0.1)
    out["while_running"] = [len(calls), len(handlers._TASKS)]
    plan["block"] = False
    gate.set()
    await settle()
    out["coalesced"] = [len(calls), len(handlers._TASKS)]
    gate.clear(); calls.clear()
    plan["block"] = True; plan["requeue"] = 0.05
    handlers.TRIGGERS.wake(key)
    await settle(0.1)
    loops.stop(key)
    out["stopping"] = [sum(handlers._LOOP_COUNTS.values()), len(handlers._TASKS)]
    gate.set()
    await settle(0.4)
    loops_now = sum(handlers._LOOP_COUNTS.values())
    out["stopped"] = [len(calls), loops_now, len(handlers._TASKS), loops.keys("STTModel")]
    print(json.dumps(out))
asyncio.run(main())
""")
    assert trace["settled"] == [1, 0, [["STTModel", "ns", "m"]]]
    assert trace["requeued_waiting"] == [2, 0]  # reconciled once, then a timer, no task
    assert trace["requeue_due"] >= 3
    assert trace["while_running"] == [1, 1]
    assert trace["coalesced"] == [2, 0]  # five wake-ups during it: one more reconcile
    assert trace["stopping"] == [1, 1]  # still reconciling
    assert trace["stopped"] == [1, 0, 0, []]  # ended after it; its requeue dropped


def test_own_events_start_and_stop_loops_and_an_old_finalizer_is_released() -> None:
    """`own_event`, as the informers of the own kinds call it (Kopf does not see STTModels and
    ModelDeployments then, so Kopf cannot take an older operator's finalizer off them)."""
    trace = run_program("""
import time
released = []
handlers.reconcile_now = lambda key, uid: None
handlers.namespaces.release = lambda kube, resource, obj, finalizer: released.append(
    [resource, obj["metadata"]["name"], finalizer]) or True
context.current().kube.resource = lambda api_version, kind: kind
def model(version, finalizers):
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "u1", "resourceVersion": version,
                         "finalizers": finalizers}}
async def main():
    out = {}
    handlers.own_event("STTModel", "ADDED", model("1", [handlers.FINALIZER]))
    handlers.own_event("STTModel", "MODIFIED", model("2", [handlers.FINALIZER]))
    await asyncio.sleep(0.3)
    out["loops"] = handlers.LOOPS_OF_OURS.keys("STTModel")
    out["released"] = list(released)
    handlers.own_event("STTModel", "MODIFIED", model("3", []))
    handlers.own_event("STTModel", "DELETED", model("3", []))
    await asyncio.sleep(0.1)
    out["after_delete"] = [handlers.LOOPS_OF_OURS.keys("STTModel"), sum(handlers._LOOP_COUNTS.values())]
    print(json.dumps(out))
asyncio.run(main())
""")
    assert trace["loops"] == [["STTModel", "ns", "m"]]
    # Once per event that still shows it, none while one is in flight; a late one finds it gone.
    assert 1 <= len(trace["released"]) <= 2
    assert all(r == ["STTModel", "m", "stt.dev/finalizer"] for r in trace["released"])
    assert trace["after_delete"] == [[], 0]
