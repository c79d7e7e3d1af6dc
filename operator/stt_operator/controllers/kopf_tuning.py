"""How Kopf is set up for this operator: where its bookkeeping goes, how long a watch stream
lives, how API failures are retried. A pure function of the operator's settings, so it is
testable without starting Kopf."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import kopf
from kopf._core.actions import execution  # the handler's cause, left out of our loops' context
from kopf._core.engines import daemons  # its daemon killer, followed below
from kopf._core.reactor import observation  # the namespace-discovery step mended below

from stt_operator import API_GROUP
from stt_operator.settings import OperatorSettings

# The client side gives up this much later than the server ends a stream, so a healthy stream
# always ends server-side and resumes from its last resourceVersion.
CLIENT_WATCH_MARGIN_S = 30
# Kopf's finalizer, on the objects whose deletion waits for the operator: ABTests (their
# deletion handler gives the endpoint back). STTModels and ModelDeployments have no Kopf daemon,
# timer or deletion handler (handlers.Loops), so Kopf puts none on them, and removes the one an
# older version put there ("no handlers requiring it") the first time it sees the object.
FINALIZER = f"{API_GROUP}/finalizer"
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


async def _follow_pauses(
    operator_paused: Any, on_pause: Callable[[], None], on_resume: Callable[[], None]
) -> None:
    while True:
        await operator_paused.wait_for(True)
        on_pause()
        await operator_paused.wait_for(False)
        on_resume()


def follow_operator_pauses(on_pause: Callable[[], None], on_resume: Callable[[], None]) -> None:
    """Call `on_pause` whenever Kopf pauses the operator (HA peering: a replica of higher priority
    is alive) and when it exits, `on_resume` when a pause ends.

    Kopf stops its own daemons then, from one task that holds the operator's pause toggles (its
    "daemon killer"); loops that are not Kopf daemons must stop too, or a stand-by replica would
    keep writing. Kopf offers no hook for it, so its daemon killer is wrapped: the wrapper
    follows the same toggles, for as long as Kopf's killer runs. After a pause, Kopf's watches
    list every object again, which starts the loops anew. Idempotent; call before the operator
    starts."""
    original = getattr(daemons.daemon_killer, "__wrapped__", daemons.daemon_killer)

    async def daemon_killer(*, operator_paused: Any, **kwargs: Any) -> None:
        follower = asyncio.ensure_future(_follow_pauses(operator_paused, on_pause, on_resume))
        try:
            await original(operator_paused=operator_paused, **kwargs)
        finally:
            follower.cancel()
            on_pause()  # the operator is exiting

    daemon_killer.__wrapped__ = original  # type: ignore[attr-defined]
    daemons.daemon_killer = daemon_killer  # type: ignore[assignment]


def context_without_cause() -> contextvars.Context:
    """A copy of the current context (Kopf's event posting works in it) without the cause of
    the Kopf handler running now. A task started from a handler keeps the handler's context for
    as long as it runs, and the cause holds the watch event's body: a loop started from the
    first event of its object would hold that body for good, besides the current one."""
    context = contextvars.copy_context()
    context.run(execution.cause_var.set, None)  # type: ignore[arg-type]
    return context
