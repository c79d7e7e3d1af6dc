"""A namespace that first shows up in the namespace watcher's own listing is served
(controllers/kopf_tuning.py: discover_namespaces_in_listings), with Kopf's real insights and
its real discovery step."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kopf._cogs.structs import references
from kopf._core.reactor import observation

from stt_operator.controllers.kopf_tuning import discover_namespaces_in_listings

PATTERNS = ["stt-node-*"]


def namespace_event(name: str, event_type: str | None, deleting: bool = False) -> dict[str, Any]:
    """`deleting`: marked for deletion, with the namespace controller's conditions reporting
    nothing left to wait for (what Kopf takes as deleted)."""
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if deleting:
        body["metadata"]["deletionTimestamp"] = "2026-12-06T00:00:00Z"
        body["status"] = {"conditions": [{"type": "NamespaceContentRemaining", "status": "False"}]}
    return {"type": event_type, "object": body}


async def process(event: dict[str, Any], insights: references.Insights) -> int:
    """Run the discovery step as Kopf's namespace watcher does; how many times it woke the
    orchestrator (a waiter on the insights' condition, as Kopf's orchestrator waits)."""
    woken = 0

    async def orchestrator() -> None:
        nonlocal woken
        async with insights.revised:
            await insights.revised.wait()
            woken += 1

    waiter = asyncio.create_task(orchestrator())
    await asyncio.sleep(0)  # the waiter holds the condition first, as Kopf's does from startup
    await observation.process_discovered_namespace_event(
        raw_event=event, namespaces=PATTERNS, insights=insights
    )
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    return woken


@pytest.fixture
def mended(monkeypatch: pytest.MonkeyPatch) -> None:
    # Kopf's own step comes back after the test.
    step = observation.process_discovered_namespace_event
    monkeypatch.setattr(observation, "process_discovered_namespace_event", step)
    discover_namespaces_in_listings()


def test_kopf_alone_skips_a_namespace_seen_only_in_a_listing() -> None:
    """The gap being closed: if a Kopf upgrade serves listed namespaces by itself, this fails and
    the mend can go."""
    assert run([namespace_event("stt-node-a", None)]) == (set(), [0])


def run(events: list[dict[str, Any]], served: set[str] | None = None) -> tuple[set[str], list[int]]:
    """Feed events in order to fresh insights (all in one event loop, as in Kopf); the served
    namespaces at the end and the wake-ups each event caused."""

    async def feed() -> tuple[set[str], list[int]]:
        insights = references.Insights()
        insights.namespaces.update(served or set())
        woken = [await process(event, insights) for event in events]
        return set(insights.namespaces), woken

    return asyncio.run(feed())


@pytest.mark.usefixtures("mended")
def test_a_matching_namespace_in_a_listing_is_served_and_wakes_the_orchestrator() -> None:
    assert run([namespace_event("stt-node-a", None)]) == ({"stt-node-a"}, [1])


@pytest.mark.usefixtures("mended")
def test_a_namespace_already_served_does_not_wake_the_orchestrator_again() -> None:
    events = [namespace_event("stt-node-a", None), namespace_event("stt-node-a", "MODIFIED")]
    assert run(events, served={"stt-node-a"}) == ({"stt-node-a"}, [0, 0])


@pytest.mark.usefixtures("mended")
def test_other_namespaces_and_deletions_are_decided_as_kopf_decides_them() -> None:
    events = [
        namespace_event("default", None),
        namespace_event("stt-node-b", "ADDED"),
        namespace_event("stt-node-b", "MODIFIED", deleting=True),
        # A namespace being deleted that shows up in a listing is not served again.
        namespace_event("stt-node-c", None, deleting=True),
        namespace_event("stt-node-d", None),
        namespace_event("stt-node-d", "DELETED"),
    ]
    assert run(events) == (set(), [0, 1, 1, 0, 1, 1])


@pytest.mark.usefixtures("mended")
def test_mending_twice_keeps_one_mend() -> None:
    step = observation.process_discovered_namespace_event
    discover_namespaces_in_listings()
    assert observation.process_discovered_namespace_event is step
