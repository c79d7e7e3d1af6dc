"""Kopf registrations: when each reconciler runs. The reconcilers themselves are level-triggered
pure-ish functions (observe → plan → apply); this module only decides *when*.

No polling: each STTModel, ModelDeployment and ABTest has one waiting loop that reconciles
when it starts (creation, or operator start/resume), when a watch event wakes it
(`triggers.py`: its own spec or control annotations, an owned Deployment/Job/route changing,
a referenced model or endpoint changing), and when its planner's `requeue_after` is due (pause
durations, analysis intervals, scale-down delays), never later than `reconcile_interval_s`
while something is in flight. A settled object costs nothing until something changes.

A loop is a `Waker`: while the object waits it holds no task, only its packed body and, when
its planner asked for one, a timer; a wake-up starts a task that reconciles (again if woken
meanwhile) and ends. STTModels' and ModelDeployments' loops are ours (`Loops`), fed by informers
of our own (services/informers.py) where the owned kinds have them (every namespace, or named
ones), by Kopf's watch with namespace globs; ABTests' are started by Kopf daemons. Peering (HA
stand-by) and shutdown stop both; a loop ends at once when stopped, and a reconcile running
then finishes in its thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ConflictError, DynamicApiError

from stt_operator import API_GROUP, API_VERSION
from stt_operator.builders.metadata import LABEL_DEPLOYMENT, LABEL_MANAGED_BY, MANAGED_BY
from stt_operator.controllers import abtest, context, modeldeployment, namespaces, sttmodel
from stt_operator.controllers.kopf_tuning import (
    FINALIZER,
    context_without_cause,
    follow_operator_pauses,
    tune_kopf,
)
from stt_operator.controllers.triggers import (
    TRIGGERS,
    Key,
    Waker,
    child_fingerprint,
    dependency_fingerprint,
    newest_copy,
    own_fingerprint,
    stt_owner,
    without_field_managers,
)
from stt_operator.experiments.objects import LABEL_ABTEST
from stt_operator.heap import release_free_heap
from stt_operator.observability import CONFLICTS, ENDPOINTS, LOOPS, WAKEUPS, ObjectStateLog, WriteEchoes
from stt_operator.services.informers import Informer, Informers, WatchedKind, resource_version

log = logging.getLogger(__name__)

_SETTINGS = context.current().settings
_INTERVAL = _SETTINGS.reconcile_interval_s
_CANCEL_TIMEOUT_S = 2.0
_MAX_BACKOFF_S = 60.0
API = f"{API_GROUP}/{API_VERSION}"
PLURALS = {"STTModel": "sttmodels", "ModelDeployment": "modeldeployments", "ABTest": "abtests"}

# Sync reconcilers run here, bounded; the pool is never joined at exit (runner.py exits hard
# once Kopf has stopped, so a call hanging on a dead apiserver cannot hold the process).
_EXECUTOR = ThreadPoolExecutor(max_workers=_SETTINGS.workers, thread_name_prefix="reconcile")
_LOCKS: dict[Key, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_ERRORS = ObjectStateLog(log)


def _lock(key: Key) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


@kopf.on.startup()
def configure_kopf(settings: kopf.OperatorSettings, **_: Any) -> None:
    tune_kopf(settings, _SETTINGS)


@kopf.on.cleanup()
def begin_shutdown(**_: Any) -> None:
    """Kopf is stopping (SIGTERM, or peering): stop taking work and set a deadline that holds
    even if the apiserver never answers again (peering sign-off, patches in flight)."""
    _EXECUTOR.shutdown(wait=False, cancel_futures=True)
    context.current().kube.close()
    for task in (*_ANALYTICS, *_HOUSEKEEPING):
        task.cancel()
    deadline = threading.Timer(_SETTINGS.shutdown_timeout_s, _exit_now)
    deadline.daemon = True
    deadline.start()


def _exit_now() -> None:
    log.warning("shutdown not finished after %.0fs; exiting now", _SETTINGS.shutdown_timeout_s)
    logging.shutdown()
    os._exit(0)


# --- one reconcile, outside Kopf's handler machinery -----------------------------------------------

Reconciler = Callable[[Mapping[str, Any], kopf.Patch, context.OperatorContext], float | None]
_RECONCILERS: dict[str, Reconciler] = {
    "STTModel": sttmodel.reconcile,
    "ModelDeployment": modeldeployment.reconcile,
    "ABTest": abtest.reconcile,
}


# What our own last write of each object returned, and the objects whose next reconcile must
# read the apiserver (after a failure or a conflict: our view may be stale).
_WRITTEN: dict[Key, dict[str, Any]] = {}
_MUST_READ: set[Key] = set()
# Our writes' way back through Kopf's watches (stt_operator_watch_lag_seconds).
_ECHOES = {kind: WriteEchoes(kind) for kind in PLURALS}


def _known_body(key: Key) -> dict[str, Any] | None:
    """A private copy of the newest body of the object this process already holds, without an
    API call: its loop's (kept current by the watch) or the response to our own last write,
    whichever has the higher resourceVersion (the watch may not have delivered that write
    yet). None when neither is usable; the caller reads the apiserver then."""
    if key in _MUST_READ:
        return None
    live, written = TRIGGERS.body(key), _WRITTEN.get(key)  # `live` is a private copy already
    newest = newest_copy(live, written)
    if written is not None and newest is live:
        _WRITTEN.pop(key, None)  # the watch has caught up: hold one copy per object, not two
    if newest is None:
        return None
    return live if newest is live else copy.deepcopy(dict(newest))


def _watched_copy(api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    """`Kube.get` of an stt.dev object another reconciler reads (an endpoint's STTModel): the
    copy its own loop holds, if it runs here. A stale copy only delays: the referenced object's
    next status change wakes its dependents (`triggers.dependency_fingerprint`)."""
    if api_version != API or kind not in PLURALS or namespace is None:
        return None
    return _known_body((kind, namespace, name))


context.current().kube.known = _watched_copy


class ObjectGone(Exception):
    """The loop's object is no longer in the apiserver (or the name now holds another object)."""


def reconcile_now(key: Key, uid: str | None = None) -> float | None:
    """Reconcile the object as last seen, write its patch. Returns the planner's requeue.
    Raises `ObjectGone` when the apiserver no longer has the object of `uid`: its loop ends.

    Reading the object costs no API call in the normal case: each reconcile is woken by a watch
    event that carried the object (or its loop just started with it), and our own writes return
    it. A reconcile on a stale copy is harmless anyway: its writes are idempotent applies and
    merge patches, and the next watch event wakes it again (level-triggered)."""
    kind, namespace, name = key
    ctx = context.current()
    with _lock(key):
        body = _known_body(key)
        if body is None:
            body = ctx.kube.get(API, kind, name, namespace)
            _MUST_READ.discard(key)
        if body is None or (uid and body["metadata"].get("uid") != uid):
            # Deleted while a watch gap hid its DELETED event from Kopf (a relist after 410 Gone
            # shows no deletions): nothing stops this loop but itself.
            _WRITTEN.pop(key, None)
            raise ObjectGone(key)
        if body["metadata"].get("deletionTimestamp"):
            _WRITTEN.pop(key, None)
            return None  # Kopf's deletion handling owns it now
        patch = kopf.Patch()
        try:
            requeue = _RECONCILERS[kind](body, patch, ctx)
            written = _write_patch(ctx, kind, body, patch)
        except BaseException:
            _MUST_READ.add(key)  # a 409 or an outage: look at the apiserver's copy next time
            raise
        if written is not None:
            _WRITTEN[key] = without_field_managers(written)
            # The newest version this process had seen: a write answered with it changed nothing.
            seen = max(resource_version(body) or 0, TRIGGERS.version(key) or 0)
            _ECHOES[kind].wrote((namespace, name), seen, resource_version(written))
    return requeue


def _write_patch(
    ctx: context.OperatorContext, kind: str, body: Mapping[str, Any], patch: kopf.Patch
) -> dict[str, Any] | None:
    """Write the patch; returns the object as the last write left it (None: nothing written)."""
    meta = body["metadata"]
    resource = ctx.kube.resource(API, kind)
    written = None
    # Metadata first (a consumed promote/abort annotation goes), then the status that records
    # what was done: whoever sees the new status sees the request consumed.
    main = {k: v for k, v in patch.items() if k != "status" and v}
    if main:
        written = ctx.kube.merge_patch(resource, meta["name"], meta["namespace"], main)
    if patch.get("status"):
        written = ctx.kube.merge_patch(
            resource, meta["name"], meta["namespace"], {"status": patch["status"]}, status=True
        )
    return written


# API and network failures: expected during outages, logged without a traceback.
_TRANSIENT = (OSError, TimeoutError, urllib3.exceptions.HTTPError, ApiException, DynamicApiError)


def _next_delay(requeue: float | None) -> float | None:
    if requeue is None:
        return None  # settled: sleep until woken
    return max(0.2, min(float(requeue), _INTERVAL))


# The context reconcile tasks start in: Kopf's (its event posting reads it), captured from a
# Kopf handler without the handler's cause (`context_without_cause`). One for all tasks: a task
# started from a watch event would otherwise keep that event's body for as long as it runs.
_TASK_CONTEXT: list[contextvars.Context] = []
# The reconcile tasks running now (referenced until done, as asyncio asks).
_TASKS: set[asyncio.Task[None]] = set()


def _remember_kopf_context() -> None:
    if not _TASK_CONTEXT:
        _TASK_CONTEXT.append(context_without_cause())


def start_loop(waker: Waker, on_end: Callable[[Waker], None]) -> None:
    """Serve the object of `waker.key` (kind, namespace, name): reconcile it now, then whenever
    woken or due, until `waker.stop()`. `on_end` runs once after that, and must call
    `loop_ended`."""
    kind, namespace, _ = waker.key
    TRIGGERS.register(waker.key, waker)
    _count_loop(kind, namespace, +1)
    waker.on_end = on_end
    waker.runner = _run_reconciles
    waker.fire()  # a new loop starts awake


def loop_ended(waker: Waker) -> None:
    kind, namespace, name = waker.key
    _count_loop(kind, namespace, -1)
    if TRIGGERS.unregister(waker.key, waker):  # not when a newer loop holds the name now
        _WRITTEN.pop(waker.key, None)
        _MUST_READ.discard(waker.key)
        if kind == "ModelDeployment":
            ENDPOINTS.forget(namespace, name)  # deleted, or served by another replica now


def _run_reconciles(waker: Waker) -> None:
    """The waker's runner: a task that reconciles while the object is woken, then ends."""
    waker.busy = True
    context_ = _TASK_CONTEXT[0].copy() if _TASK_CONTEXT else contextvars.copy_context()
    task = asyncio.get_running_loop().create_task(
        _reconcile_while_woken(waker), name=f"reconcile {'/'.join(waker.key)}", context=context_
    )
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def _reconcile_while_woken(waker: Waker) -> None:
    """Reconcile, again while woken meanwhile; then leave a timer for the planner's requeue (or
    the retry of a failure) and end. Failures are logged once per change of error."""
    loop = asyncio.get_running_loop()
    key = waker.key
    try:
        while waker.woken and not waker.stopped:
            waker.woken = False
            waker.cancel_timer()
            delay: float | None
            try:
                requeue = await loop.run_in_executor(
                    _EXECUTOR, contextvars.copy_context().run, reconcile_now, key, waker.uid
                )
            except ObjectGone:
                waker.stopped = True
                break
            except kopf.TemporaryError as exc:  # e.g. a 409 on an optimistic write: look again soon
                if isinstance(exc.__cause__, ConflictError):
                    CONFLICTS.labels(key[0]).inc()
                delay = float(exc.delay or _INTERVAL)
            except Exception as exc:
                waker.failures += 1
                # A traceback only for what looks like a bug, not for an unreachable apiserver.
                bug = not isinstance(exc, _TRANSIENT) and waker.failures == 1
                _ERRORS.record(key, f"{type(exc).__name__}: {str(exc)[:300]}", exc_info=bug)
                delay = min(_MAX_BACKOFF_S, _INTERVAL * 2 ** min(waker.failures, 8))
            else:
                if waker.failures:
                    _ERRORS.record(key, None)
                waker.failures = 0
                delay = _next_delay(requeue)
            if delay is not None and not waker.stopped:
                waker.requeue(delay)  # a wake-up meanwhile (`woken`) runs the loop again now
    finally:
        waker.busy = False
        if waker.stopped:
            waker.end()


_LOOP_COUNTS: dict[tuple[str, str], int] = {}


def _count_loop(kind: str, namespace: str, change: int) -> None:
    """`stt_operator_loops`; called on Kopf's event loop only, so never concurrently."""
    count = _LOOP_COUNTS.get((kind, namespace), 0) + change
    if count > 0:
        _LOOP_COUNTS[(kind, namespace)] = count
        LOOPS.labels(kind, namespace).set(count)
    else:
        _LOOP_COUNTS.pop((kind, namespace), None)
        LOOPS.remove(kind, namespace)


# Kinds whose loops are ours (`Loops`); ABTests' are Kopf daemons.
OWN_LOOP_KINDS = frozenset({"STTModel", "ModelDeployment"})


class Loops:
    """The loops of STTModels and ModelDeployments, started and fed by `own_event` (from our
    informers, or Kopf's watch with namespace globs; listings included, so an operator start or a
    resume after a peering pause starts every loop), stopped by the object's DELETED event, by a
    peering pause and at exit (`kopf_tuning.follow_operator_pauses`).

    Not Kopf daemons: with its daemon, a settled ModelDeployment held about 28.6 KiB (runner
    task, stopper, loggers, handler state, the decoded body); with a task and an event of our
    own, 7.0 KiB (bench/scale/kopf_memory.py); with a `Waker` and no task while it waits, less
    (bench/scale/RESULTS.md). At 10,000 endpoints that was the largest part of the operator's
    memory. Kopf keeps daemons for ABTests (few, and their deletion handler needs Kopf's
    finalizer); their reconciles run the same way (`start_loop`)."""

    def __init__(self) -> None:
        self._running: dict[Key, Waker] = {}
        self._ended_namespaces: set[str] = set()  # being deleted: no loop starts there
        self.paused = False

    def see(self, kind: str, body: Mapping[str, Any]) -> None:
        """A watch event (or listing) of the object: start its loop, or hand it the new body."""
        meta = body.get("metadata") or {}
        # Interned: the same few namespaces and each name are keys of several maps here.
        key: Key = (kind, sys.intern(meta.get("namespace") or ""), sys.intern(meta.get("name") or ""))
        uid = meta.get("uid") or ""
        running = self._running.get(key)
        if running is not None:
            if running.uid == (uid or None) and not running.stopped:
                running.body = body
                return
            self.stop(key)  # ended, or another object now holds the name
        if self.paused or meta.get("deletionTimestamp") or key[1] in self._ended_namespaces:
            return
        _remember_kopf_context()
        waker = Waker(asyncio.get_running_loop(), body=body, packed=True, key=key)
        self._running[key] = waker
        start_loop(waker, self._ended)

    def _ended(self, waker: Waker) -> None:
        """A loop ended (stopped, or its object found gone): forget it, unless the name is
        another object's loop now."""
        loop_ended(waker)
        if self._running.get(waker.key) is waker:
            del self._running[waker.key]

    def stop(self, key: Key, uid: str | None = None) -> None:
        running = self._running.get(key)
        if running is not None and (uid is None or running.uid == (uid or None)):
            del self._running[key]
            running.stop()

    def keys(self, kind: str) -> list[Key]:
        return [key for key in self._running if key[0] == kind]

    def running(self, key: Key) -> bool:
        return key in self._running

    def end_namespace(self, namespace: str) -> None:
        """The namespace is being deleted, and its objects with it: end their loops, ABTests'
        (Kopf daemons) included, which Kopf would otherwise leave running."""
        self._ended_namespaces.add(namespace)
        for key in [key for key in self._running if key[1] == namespace]:
            self.stop(key)
        for waker in TRIGGERS.wakers(namespace):
            waker.stop()

    def forget_namespace(self, namespace: str) -> None:
        self._ended_namespaces.discard(namespace)

    def pause(self) -> None:
        self.paused = True
        for key in list(self._running):
            self.stop(key)

    def resume(self) -> None:
        self.paused = False


LOOPS_OF_OURS = Loops()


@kopf.daemon(
    API_GROUP, API_VERSION, PLURALS["ABTest"], id="abtests_loop", cancellation_timeout=_CANCEL_TIMEOUT_S
)
async def abtest_loop(
    stopped: kopf.DaemonStopped, body: kopf.Body, name: str, namespace: str, **_: Any
) -> None:
    _remember_kopf_context()
    loop = asyncio.get_running_loop()
    over: asyncio.Future[None] = loop.create_future()  # the loop ended by itself (object gone)

    def ended(waker: Waker) -> None:
        loop_ended(waker)
        if not over.done():
            over.set_result(None)

    # Kopf keeps this body current.
    waker = Waker(loop, body=body, key=("ABTest", namespace, name))
    start_loop(waker, ended)
    stop = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({stop, over}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        waker.stop()


# --- wake-ups from watch events ---------------------------------------------------------------------


def _wake(key: Key) -> None:
    if TRIGGERS.wake(key):
        WAKEUPS.labels(key[0]).inc()


def own_event(kind: str, event_type: str, body: Mapping[str, Any]) -> None:
    """A watch event of an STTModel, ModelDeployment or ABTest (from Kopf, or from our own
    informer): start, feed or stop its loop; wake it, and the loops that read it, when what they
    read changed. On the event loop's thread."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    key: Key = (kind, namespace, name)
    uid = meta.get("uid", "")
    _ECHOES[kind].seen((namespace, name), resource_version(body))
    if event_type == "DELETED":
        if kind in OWN_LOOP_KINDS:
            LOOPS_OF_OURS.stop(key, uid)
        _ECHOES[kind].forget((namespace, name))
        TRIGGERS.forget(uid)
        for dependent in TRIGGERS.dependents(kind, namespace, name):
            _wake(dependent)
        return
    if kind in OWN_LOOP_KINDS:
        LOOPS_OF_OURS.see(kind, body)
        if FINALIZER in (meta.get("finalizers") or []):
            _release_legacy_finalizer(kind, body)
    TRIGGERS.refer(key, body)
    written = _WRITTEN.get(key)
    if written is not None and newest_copy(written, body) is body:
        # The watch caught up with our last write: hold one copy of a settled object, not
        # two (a full body each; they stayed until its next reconcile).
        _WRITTEN.pop(key, None)
    # A first sighting wakes nobody: a new object's loop starts awake, and so does every
    # loop after an operator restart.
    if TRIGGERS.observe(uid, "own", own_fingerprint(body)) == "changed":
        _wake(key)
    if TRIGGERS.observe(uid, "dependency", dependency_fingerprint(kind, body)) == "changed":
        for dependent in TRIGGERS.dependents(kind, namespace, name):
            _wake(dependent)


def _release_legacy_finalizer(kind: str, body: Mapping[str, Any]) -> None:
    """An older operator put Kopf's finalizer on STTModels and ModelDeployments; nothing needs
    it now, and where our informers watch them Kopf never sees them to take it off: without
    this, deleting such an object would wait for good."""
    meta = body["metadata"]
    if (kind, meta.get("uid")) in _RELEASING:
        return
    _RELEASING.add((kind, meta.get("uid")))
    ctx = context.current()

    def release() -> None:
        try:
            namespaces.release(ctx.kube, ctx.kube.resource(API, kind), copy.deepcopy(dict(body)), FINALIZER)
        except Exception as exc:  # the next event of the object tries again
            log.warning(
                "could not remove the finalizer %s from %s %s/%s: %s",
                FINALIZER,
                kind,
                meta.get("namespace"),
                meta.get("name"),
                exc,
            )
        finally:
            _RELEASING.discard((kind, meta.get("uid")))

    _EXECUTOR.submit(contextvars.copy_context().run, release)


_RELEASING: set[tuple[str, str | None]] = set()


def _on_own_event(kind: str) -> None:
    async def on_event(event: MutableMapping[str, Any], **_: Any) -> None:
        # This very dict is the body the object's loop holds (Kopf's live body for an ABTest)
        # until the next event: without its field managers (nearly half of a body's JSON, read
        # by nobody here or in Kopf) every STTModel, ModelDeployment and ABTest costs less.
        raw = event.get("object") or {}
        without_field_managers(raw)
        own_event(kind, str(event.get("type")), raw)

    kopf.on.event(API_GROUP, API_VERSION, PLURALS[kind], id=f"{PLURALS[kind]}_event")(on_event)


def _child_event(kind: str, event_type: str, body: Mapping[str, Any]) -> None:
    """An owned object changed: forget a skipped apply it invalidates, wake its owner when what
    the owner reads of it changed (or it is gone). Runs on an informer thread (or Kopf's loop)."""
    owner = stt_owner(body)
    if owner is None:
        return
    deleted = event_type == "DELETED"
    context.current().kube.observed(kind, body, deleted=deleted)
    uid = (body.get("metadata") or {}).get("uid", "")
    if deleted:
        TRIGGERS.forget(uid)
        _wake(owner)
    elif TRIGGERS.observe(uid, "child", child_fingerprint(kind, body)) == "changed":
        _wake(owner)


# Unchanged applies of these kinds are skipped: their watches tell `Kube` when to apply again.
context.current().kube.watched_kinds = frozenset({"Deployment", "HTTPRoute", "Service"})
OWNED_KINDS = (
    # Read by every reconcile, by the label naming its endpoint or A/B test.
    WatchedKind("apps/v1", "Deployment", "deployments", keep=True, indexed=(LABEL_DEPLOYMENT, LABEL_ABTEST)),
    WatchedKind("v1", "Service", "services"),
    WatchedKind("batch/v1", "Job", "jobs"),
    WatchedKind("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"),
    WatchedKind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
)
_INFORMER_NAMESPACES = namespaces.informer_scopes(_SETTINGS.namespaces)
_INFORMERS = Informers()
# Where the owned kinds have informers, the kinds whose loops are ours have too, and Kopf does
# not watch them: its per-event processing (a worker per object, its memory of the object,
# handler selection, logging context) was most of what an event cost the operator, for events
# that only feed `own_event`.
OWN_KINDS_WATCHED = tuple(WatchedKind(API, kind, PLURALS[kind]) for kind in sorted(OWN_LOOP_KINDS))
_OWN_INFORMERS = Informers()

for _kind in PLURALS:
    if _kind not in OWN_LOOP_KINDS or _INFORMER_NAMESPACES is None:
        _on_own_event(_kind)


@kopf.on.startup()
def start_informers(**_: Any) -> None:
    """Owned objects are watched by informers of our own (services/informers.py): filtered by
    label at the apiserver, held trimmed, outside Kopf's per-object machinery."""
    if _INFORMER_NAMESPACES is None or _INFORMERS.all():
        return  # Kopf watches them (namespace globs), or already started
    kube = context.current().kube
    # A pool of their own: each open watch holds a connection for minutes.
    configuration = copy.deepcopy(kube.api_client.configuration)
    watches = len(OWNED_KINDS) + len(OWN_KINDS_WATCHED)
    configuration.connection_pool_maxsize = watches * len(_INFORMER_NAMESPACES)
    api_client = k8s.ApiClient(configuration)
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    timeout = _SETTINGS.watch_timeout_s
    for namespace in _INFORMER_NAMESPACES:
        for watched in OWNED_KINDS:
            _INFORMERS.add(Informer(api_client, watched, namespace, selector, _child_event, timeout))
        for watched in OWN_KINDS_WATCHED:
            _OWN_INFORMERS.add(Informer(api_client, watched, namespace, "", _deliver_own_event, timeout))
    kube.informers = _INFORMERS
    _INFORMERS.start()  # the own kinds' wait for Kopf's first event (`_start_own_informers`)


_EVENT_LOOP: list[asyncio.AbstractEventLoop] = []


def _deliver_own_event(kind: str, event_type: str, body: Mapping[str, Any]) -> None:
    """An own kind's informer event (on the informer's thread), handed to the event loop. The
    body is the informer's fresh decode of the event, held by nobody else."""
    _EVENT_LOOP[0].call_soon_threadsafe(own_event, kind, event_type, without_field_managers(body))


def _start_own_informers() -> None:
    """Start the own kinds' informers, from Kopf's first resource event (a namespace's): the
    reconcile tasks they start need the context of a Kopf handler, where Kopf's event posting
    finds its queue (`_remember_kopf_context`), and the event loop."""
    if _EVENT_LOOP or not _OWN_INFORMERS.all():
        return
    _remember_kopf_context()
    _EVENT_LOOP.append(asyncio.get_running_loop())
    _OWN_INFORMERS.start()


def _resume_loops() -> None:
    """A peering pause ended: the loops start again, for every object (the own kinds' events
    were ignored meanwhile; Kopf lists the kinds it watches again by itself)."""
    LOOPS_OF_OURS.resume()
    if _EVENT_LOOP:
        for informer in _OWN_INFORMERS.all():
            informer.report_all_soon()


follow_operator_pauses(LOOPS_OF_OURS.pause, _resume_loops)


@kopf.on.cleanup()
def stop_informers(**_: Any) -> None:
    _INFORMERS.stop()
    _OWN_INFORMERS.stop()


def _owned(body: kopf.Body, **_: Any) -> bool:
    return stt_owner(body) is not None


def _on_child_event(watched: WatchedKind) -> None:
    """Namespace globs: Kopf finds the namespaces and watches the owned kinds itself."""
    group, _, version = watched.api_version.rpartition("/")

    async def on_event(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        _child_event(watched.kind, str(event.get("type")), body)

    kopf.on.event(group, version, watched.plural, id=f"owned_{watched.plural}_event", when=_owned)(on_event)


if _INFORMER_NAMESPACES is None:
    for _watched in OWNED_KINDS:
        _on_child_event(_watched)


# --- a served namespace being deleted ----------------------------------------------------------------


def _terminating(body: kopf.Body, **_: Any) -> bool:
    return bool(body.get("metadata", {}).get("deletionTimestamp"))


@kopf.on.event("", "v1", "namespaces", id="namespace_loops")
async def namespace_loops(event: Mapping[str, Any], name: str, body: kopf.Body, **_: Any) -> None:
    _start_own_informers()
    # Kopf may stop watching a terminating namespace before its objects' DELETED events arrive:
    # their loops end here, and none starts there until the namespace is gone (its name may
    # then be used again).
    if event.get("type") == "DELETED":
        LOOPS_OF_OURS.forget_namespace(name)
    elif _terminating(body):
        LOOPS_OF_OURS.end_namespace(name)


@kopf.on.event("", "v1", "namespaces", id="namespace_terminating", when=_terminating)
def namespace_terminating(name: str, **_: Any) -> None:
    # Kopf may stop serving a terminating namespace before it releases our finalizers
    # (namespaces.py); whatever is left of ours there goes with the namespace anyway.
    if not namespaces.served(name, _SETTINGS.namespaces):
        return
    ctx = context.current()
    try:
        released = namespaces.release_finalizers(ctx.kube, name, FINALIZER)
    except Exception as exc:
        if not namespaces.forbidden(exc):
            raise  # Kopf logs it; the namespace controller's next status update retries
        log.warning(
            "namespace %s is being deleted but its stt.dev objects cannot be listed or patched (403):"
            " remove the finalizer %s from them by hand",
            name,
            FINALIZER,
        )
        return
    if released:
        log.info("namespace %s is being deleted: released %s", name, ", ".join(released))


# --- STTModel analytics (a slow, time-driven refresh) ---------------------------------------------


# How many models' summaries are asked of Prometheus at once.
_ANALYTICS_CONCURRENCY = 4


def refresh_model_analytics(key: Key) -> None:
    """One STTModel's `status.analytics`, from Prometheus (sttmodel.refresh_analytics)."""
    ctx = context.current()
    with _lock(key):
        body = _known_body(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        patch = kopf.Patch()
        sttmodel.refresh_analytics(body, patch, ctx)
        written = _write_patch(ctx, key[0], body, patch)
        if written is not None:
            _WRITTEN[key] = without_field_managers(written)


async def _refresh_analytics(key: Key) -> None:
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(_EXECUTOR, contextvars.copy_context().run, refresh_model_analytics, key)
    except Exception as exc:  # logged once per change of error; the next round tries again
        _ERRORS.record(("STTModel analytics", key[1], key[2]), f"{type(exc).__name__}: {str(exc)[:300]}")
    else:
        _ERRORS.record(("STTModel analytics", key[1], key[2]), None)


async def refresh_analytics_forever(interval_s: float) -> None:
    """Every `interval_s`, the analytics of every STTModel this replica serves: one task for all
    models (a Kopf timer per model held a daemon's bookkeeping each), a few models at a time."""
    await asyncio.sleep(_INTERVAL)
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        keys = LOOPS_OF_OURS.keys("STTModel")
        for first in range(0, len(keys), _ANALYTICS_CONCURRENCY):
            batch = keys[first : first + _ANALYTICS_CONCURRENCY]
            # Not a model whose loop ended meanwhile (deleted, or a peering pause).
            await asyncio.gather(*(_refresh_analytics(key) for key in batch if LOOPS_OF_OURS.running(key)))
        await asyncio.sleep(max(0.0, interval_s - (loop.time() - started)))


_ANALYTICS: list[asyncio.Task[None]] = []
# Background tasks of the process (heap release), cancelled at shutdown like the analytics.
_HOUSEKEEPING: list[asyncio.Task[None]] = []
HEAP_RELEASE_INTERVAL_S = 60.0


@kopf.on.startup()
async def start_analytics(**_: Any) -> None:
    # With no Prometheus to ask (analytics off, said once at start) there is no task at all.
    if _SETTINGS.prometheus_url and not _ANALYTICS:
        _ANALYTICS.append(asyncio.create_task(refresh_analytics_forever(_SETTINGS.analytics_interval_s)))


async def release_heap_forever(interval_s: float) -> None:
    """What a burst (a relist, a wave of creates) freed goes back to the system within a
    minute, instead of staying in the process's resident size (stt_operator/heap.py). In a
    thread: a release walks every heap (about 20 ms at 300 MB), and ctypes lets go of the GIL."""
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(release_free_heap)


@kopf.on.startup()
async def start_housekeeping(**_: Any) -> None:
    if not _HOUSEKEEPING:
        _HOUSEKEEPING.append(asyncio.create_task(release_heap_forever(HEAP_RELEASE_INTERVAL_S)))


# --- ABTest deletion -------------------------------------------------------------------------------


@kopf.on.delete(API_GROUP, API_VERSION, "abtests")
def abtest_deleted(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    # Give the endpoint back (route to its stable revision, release the hold) before the
    # ABTest's owned variants are garbage-collected.
    meta = body["metadata"]
    with _lock(("ABTest", meta["namespace"], meta["name"])):
        abtest.reconcile(body, patch, context.current(), deleting=True)
