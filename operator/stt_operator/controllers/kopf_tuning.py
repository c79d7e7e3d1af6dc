"""How Kopf is set up for this operator: where its bookkeeping goes, how long a watch stream
lives, how API failures are retried. A pure function of the operator's settings, so it is
testable without starting Kopf."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kopf._core.reactor import observation  # the namespace-discovery step mended below

from stt_operator import API_GROUP
from stt_operator.settings import OperatorSettings

# The client side gives up this much later than the server ends a stream, so a healthy stream
# always ends server-side and resumes from its last resourceVersion.
CLIENT_WATCH_MARGIN_S = 30
# Kopf's finalizer, on the objects whose deletion waits for the operator: ABTests (their
# deletion handler gives the endpoint back). Objects of the kinds below carried it before `KINDS_
# WITHOUT_FINALIZER`; Kopf removes it from them the first time it sees them.
FINALIZER = f"{API_GROUP}/finalizer"
# Our kinds whose deletion waits for nothing: no deletion handler (their children go with their
# ownerReferences), so Kopf's finalizer would only hold the object until its loop has stopped,
# at the cost of a patch and a watch event per new object, and a deletion that hangs for as long
# as the operator is down. `stop_on_deleted_events` stops their loops instead.
KINDS_WITHOUT_FINALIZER = frozenset({"STTModel", "ModelDeployment"})
# Our kinds with no Kopf change handler (on.create / on.update / on.delete / on.resume): Kopf never
# needs their essence. Named one by one, so every other kind keeps Kopf's behaviour; a unit test
# checks them against Kopf's registry of change handlers.
KINDS_WITHOUT_CHANGE_HANDLERS = frozenset({"STTModel", "ModelDeployment"})


class Backoffs:
    """Never-ending retry delays, iterable afresh for every request (1, 2, 4, 8, 15, 30, 30, ...)."""

    def __iter__(self) -> Iterator[float]:
        yield from (1, 2, 4, 8, 15)
        yield from itertools.repeat(30)


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Kopf's annotation diff-base, with the same essence built for less.

    Kopf builds an object's essence on every watch event (it compares essences to decide whether
    a daemon's idle time resets): it deep-copies the whole body, then drops the status and most
    of the metadata. A ModelDeployment's status (revision history, conditions, analysis) is most
    of its body, so the copy was most of Kopf's per-event work in bench/scale. Handing Kopf a
    body without the parts it drops gives the same essence (a unit test compares the two).

    For a kind in `uncompared_kinds`, the essence is empty and is not built at all: Kopf uses it
    only to find change causes, which need a change handler, and to reset a daemon's idle timer,
    which none of ours has. Building it anyway was 6 % of the operator's CPU in a 600 + 600 burst
    (bench/scale/RESULTS.md). Every other kind is compared, as Kopf does."""

    def __init__(self, *, uncompared_kinds: frozenset[str] = frozenset(), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uncompared_kinds = uncompared_kinds

    def _compared(self, body: Mapping[str, Any]) -> bool:
        return body.get("kind") not in self.uncompared_kinds

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if not self._compared(body):
            return kopf.BodyEssence()
        return super().fetch(body=body)

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if not self._compared(body):
            return kopf.BodyEssence()
        fields = list(extra_fields or [])
        if fields:  # a handler that filters on a status or metadata field: the full body
            return super().build(body=body, extra_fields=fields)
        meta = body.get("metadata") or {}
        kept = {
            k: meta[k] for k in ("labels", "annotations", "ownerReferences", "name", "namespace") if k in meta
        }
        lean = {k: v for k, v in body.items() if k not in ("status", "metadata")}
        return super().build(body=kopf.Body({**lean, "metadata": kept}))


def tune_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    # Kopf's bookkeeping goes to annotations, never into `status` (the API owns status).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration", uncompared_kinds=KINDS_WITHOUT_CHANGE_HANDLERS
    )
    settings.persistence.finalizer = FINALIZER
    # Only warnings become Kubernetes Events by themselves; the reconcilers post their own
    # Events on transitions. (INFO would post one per handler run: an API write each.)
    settings.posting.level = logging.WARNING
    # A watch the apiserver keeps open but stops feeding is only noticed when it ends: renewing
    # every stream after `watch_timeout_s` bounds that delay. (A CI failure once blamed on a
    # stalled stream, a new namespace never served, was Kopf's listing gap instead: see
    # `discover_namespaces_in_listings`; with it, a renewal's relist also serves such a namespace.)
    settings.watching.server_timeout = ours.watch_timeout_s
    settings.watching.client_timeout = ours.watch_timeout_s + CLIENT_WATCH_MARGIN_S
    # No connect timeouts of our own: under load a TLS handshake with a busy apiserver can take
    # longer than any short one, and failing it only adds handshakes. Shutdown is bounded by
    # handlers.begin_shutdown's deadline instead.
    # Kopf gives up on a watch after 8 failed attempts (about a minute) and the operator
    # stops; an apiserver outage is waited out instead, retrying every 30 s at most.
    settings.networking.error_backoffs = Backoffs()
    settings.peering.mandatory = False
    # A SIGKILLed active replica never signs off; the stand-by takes over when its lease ends.
    settings.peering.lifetime = ours.peering_lifetime_s
    settings.execution.max_workers = ours.workers
    settings.background.cancellation_polling = 1.0
    # Kopf's last resort after SIGTERM; runner.py's own deadline is shorter and exits cleanly.
    settings.process.ultimate_exiting_timeout = ours.shutdown_timeout_s + 5


async def _revise_namespaces_on_any_event(
    *,
    raw_event: Any,
    namespaces: Any,
    insights: Any,
    **_: Any,
) -> None:
    """Kopf's namespace-discovery step, listings included (its own returns early on them)."""
    async with insights.revised:
        before = set(insights.namespaces)
        observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
        if insights.namespaces != before:
            insights.revised.notify_all()


def discover_namespaces_in_listings() -> None:
    """Serve a namespace that appears in the namespace watcher's own listing.

    With `--namespace` patterns, Kopf lists namespaces once to seed the served set, then starts
    a watcher that lists them again before it watches. It skips the events of that second listing
    (and of every later relist), so a matching namespace created between the two listings, or
    during a relist gap, is never served until a restart. A test that creates its namespace as
    the operator starts hit this in CI: the operator logged nothing for the 300 s the test waited.
    Treating listed namespaces like added ones closes the gap; re-adding a known one changes
    nothing, and the orchestrator is only woken when the served set changes. Idempotent."""
    observation.process_discovered_namespace_event = _revise_namespaces_on_any_event  # type: ignore[assignment]


def spawn_without_finalizer(registry: Any, plurals: Collection[str]) -> int:
    """Kopf blocks the deletion of every object with a daemon or a timer (its handlers are made
    with `requires_finalizer=True`, and `kopf.daemon` has no argument for it). For `plurals`,
    they are re-registered without: call once every handler is registered. Returns how many
    handlers were changed. Kopf's own rule then removes an old finalizer ("no handlers
    requiring it") the first time it sees such an object."""
    handlers = registry._spawning._handlers
    changed = 0
    for index, handler in enumerate(handlers):
        selector = handler.selector
        # A selector names its resource by plural, by kind or positionally (`any_name`).
        names = {selector.plural, selector.kind, selector.any_name} if selector is not None else set()
        if names & set(plurals) and handler.requires_finalizer:
            handlers[index] = dataclasses.replace(handler, requires_finalizer=False)
            changed += 1
    return changed


def stop_on_deleted_events(event: MutableMapping[str, Any]) -> None:
    """Mark the object of a DELETED watch event as being deleted, for Kopf's step that follows.

    An object deleted without a finalizer vanishes at once: its DELETED event carries no
    deletionTimestamp, and Kopf stops an object's daemons and timers only when it sees one
    (without it, the event would even spawn a daemon for the deleted object if none ran). Kopf
    runs an event's watching handlers (`kopf.on.event`) before its daemon step, on the same
    body, so a watching handler that calls this makes Kopf stop them. Objects that carried a
    finalizer already have a deletionTimestamp and are left as they are."""
    if event.get("type") != "DELETED":
        return
    meta = (event.get("object") or {}).get("metadata")
    if isinstance(meta, dict) and not meta.get("deletionTimestamp"):
        meta["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
