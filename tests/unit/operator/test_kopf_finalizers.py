"""STTModels and ModelDeployments carry no finalizer, and their daemons and timers still stop when
they are deleted (controllers/kopf_tuning.py: spawn_without_finalizer, stop_on_deleted_events).

Runs Kopf's real per-event processing (`process_resource_event`) with a registry of its own;
only the final patch call is recorded instead of sent, so no apiserver is needed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import references
from kopf._core.actions import application, lifecycles
from kopf._core.engines import indexing
from kopf._core.intents import registries
from kopf._core.reactor import inventory, processing

from stt_operator.controllers.kopf_tuning import (
    FINALIZER,
    spawn_without_finalizer,
    stop_on_deleted_events,
    tune_kopf,
)
from stt_operator.settings import OperatorSettings

GROUP, VERSION = "stt.dev", "v1alpha1"
MODELS = references.Resource(GROUP, VERSION, "sttmodels", kind="STTModel", namespaced=True)
ABTESTS = references.Resource(GROUP, VERSION, "abtests", kind="ABTest", namespaced=True)


class Harness:
    """One Kopf registry with a daemon and a timer per kind, as handlers.py registers them."""

    def __init__(self, mark_deletions: bool) -> None:
        self.registry = registries.OperatorRegistry()
        self.settings = kopf.OperatorSettings()
        tune_kopf(self.settings, OperatorSettings())
        self.memories = inventory.ResourceMemories()
        self.stopped: list[str] = []
        self.patches: list[list[dict[str, Any]]] = []  # each as a JSON patch
        self.memories_seen: list[inventory.ResourceMemory] = []
        for plural in ("sttmodels", "abtests"):
            kopf.daemon(GROUP, VERSION, plural, id=f"{plural}_loop", registry=self.registry)(
                self.daemon(plural)
            )
            kopf.timer(GROUP, VERSION, plural, id=f"{plural}_timer", interval=3600, registry=self.registry)(
                self.timer
            )
            if mark_deletions:
                kopf.on.event(GROUP, VERSION, plural, id=f"{plural}_event", registry=self.registry)(
                    self.on_event
                )

    def daemon(self, plural: str) -> Callable[..., Any]:
        async def loop(stopped: kopf.DaemonStopped, name: str, **_: Any) -> None:
            await stopped.wait()
            self.stopped.append(f"{plural}/{name}")

        return loop

    @staticmethod
    def timer(**_: Any) -> None:
        pass

    @staticmethod
    async def on_event(event: dict[str, Any], **_: Any) -> None:
        stop_on_deleted_events(event)

    async def process(self, resource: references.Resource, event: dict[str, Any]) -> None:
        self.memories_seen.append(await self.memories.recall(event["object"]))
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

    def daemons(self) -> list[Any]:
        """The running daemons and timers, of forgotten objects too."""
        unique = {id(m): m for m in self.memories_seen}.values()
        return [d for memory in unique for d in memory.daemons_memory.running_daemons.values()]

    async def stop_all(self) -> None:
        daemons = self.daemons()
        for daemon in daemons:
            daemon.stopper.set(reason=kopf.DaemonStoppingReason.OPERATOR_EXITING)
        await asyncio.wait_for(asyncio.gather(*(d.task for d in daemons)), timeout=5)


def body(kind: str, name: str, uid: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "1"}
    if finalizers:
        meta["finalizers"] = finalizers
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": meta}


@pytest.fixture
def record_patches(monkeypatch: pytest.MonkeyPatch) -> Callable[[Harness], None]:
    def install(harness: Harness) -> None:
        async def patch_and_check(*, patch: Any, body: Any, **_: Any) -> tuple[None, None]:
            if patch:
                harness.patches.append(patch.as_json_patch(body))
            return None, None

        monkeypatch.setattr(application, "patch_and_check", patch_and_check)

    return install


def test_only_the_named_kinds_lose_the_finalizer() -> None:
    harness = Harness(mark_deletions=False)
    assert spawn_without_finalizer(harness.registry, {"sttmodels"}) == 2  # the daemon and the timer
    by_plural = {
        handler.id: handler.requires_finalizer for handler in harness.registry._spawning.get_all_handlers()
    }
    assert by_plural == {
        "sttmodels_loop": False,
        "sttmodels_timer": False,
        "abtests_loop": True,
        "abtests_timer": True,
    }
    assert spawn_without_finalizer(harness.registry, {"sttmodels"}) == 0  # idempotent


async def test_a_new_object_gets_no_finalizer_and_its_loop_stops_on_deletion(record_patches) -> None:
    harness = Harness(mark_deletions=True)
    spawn_without_finalizer(harness.registry, {"sttmodels"})
    record_patches(harness)
    await harness.process(MODELS, {"type": "ADDED", "object": body("STTModel", "m", "u1")})
    await asyncio.sleep(0.05)
    assert len(harness.daemons()) == 2  # its loop and its timer
    assert harness.patches == []  # no finalizer patch
    deleted = {"type": "DELETED", "object": body("STTModel", "m", "u1")}
    await harness.process(MODELS, deleted)
    await asyncio.sleep(0.2)
    assert harness.stopped == ["sttmodels/m"]
    assert harness.daemons() == []
    assert harness.patches == []  # nothing is written to a deleted object


async def test_an_object_with_the_old_finalizer_is_released(record_patches) -> None:
    harness = Harness(mark_deletions=True)
    spawn_without_finalizer(harness.registry, {"sttmodels"})
    record_patches(harness)
    await harness.process(MODELS, {"type": "ADDED", "object": body("STTModel", "m", "u1", [FINALIZER])})
    await harness.stop_all()
    assert harness.patches == [[{"op": "remove", "path": "/metadata/finalizers"}]]


async def test_other_kinds_keep_kopfs_finalizer(record_patches) -> None:
    harness = Harness(mark_deletions=True)
    spawn_without_finalizer(harness.registry, {"sttmodels"})
    record_patches(harness)
    await harness.process(ABTESTS, {"type": "ADDED", "object": body("ABTest", "ab", "u2")})
    await harness.stop_all()
    assert harness.patches == [[{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]]


async def test_kopf_alone_leaves_the_loop_of_an_object_deleted_without_finalizer(record_patches) -> None:
    """The reason for `stop_on_deleted_events`: without the mark, Kopf keeps the daemon of an
    object that vanished running. Should a Kopf release stop them itself, this test fails and
    the mark can go."""
    harness = Harness(mark_deletions=False)
    spawn_without_finalizer(harness.registry, {"sttmodels"})
    record_patches(harness)
    await harness.process(MODELS, {"type": "ADDED", "object": body("STTModel", "m", "u1")})
    await harness.process(MODELS, {"type": "DELETED", "object": body("STTModel", "m", "u1")})
    await asyncio.sleep(0.2)
    assert harness.stopped == []
    assert len(harness.daemons()) == 2
    await harness.stop_all()


def test_the_mark_touches_only_deleted_events_without_a_timestamp() -> None:
    for event_type in ("ADDED", "MODIFIED", None):
        event = {"type": event_type, "object": body("STTModel", "m", "u1")}
        stop_on_deleted_events(event)
        assert "deletionTimestamp" not in event["object"]["metadata"]
    marked = {"type": "DELETED", "object": body("STTModel", "m", "u1")}
    stop_on_deleted_events(marked)
    assert marked["object"]["metadata"]["deletionTimestamp"].endswith("Z")
    kept = {"type": "DELETED", "object": body("STTModel", "m", "u1")}
    kept["object"]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    stop_on_deleted_events(kept)
    assert kept["object"]["metadata"]["deletionTimestamp"] == "2026-01-01T00:00:00Z"


def test_the_operators_registry_asks_a_finalizer_only_for_abtests() -> None:
    # In a fresh interpreter: registering the handlers fills Kopf's process-wide registry. With
    # a Prometheus configured, STTModels get their analytics timer too.
    program = """
import json
from kubernetes import client
from stt_operator.controllers import context
from stt_operator.services.kube import Kube
from stt_operator.settings import OperatorSettings
settings = OperatorSettings(prometheus_url="http://prometheus.monitoring:9090")
context._current = context.OperatorContext(settings=settings, kube=Kube(client.ApiClient()))
from stt_operator.controllers import handlers  # noqa: F401
from kopf._core.intents import registries
spawning = registries.get_default_registry()._spawning.get_all_handlers()
print(json.dumps(sorted([h.id, h.requires_finalizer] for h in spawning)))
"""
    run = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    spawning = {
        handler_id: required for handler_id, required in json.loads(run.stdout.strip().splitlines()[-1])
    }
    assert spawning == {
        "abtests_loop": True,
        "modeldeployments_loop": False,
        "sttmodels_loop": False,
        "sttmodel_analytics": False,
    }
