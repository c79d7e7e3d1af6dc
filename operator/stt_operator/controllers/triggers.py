"""When to reconcile: wake-ups instead of polling.

Each STTModel, ModelDeployment and ABTest has one waiting loop (see `handlers.py`) that sleeps
until it is woken or its planner's `requeue_after` is due. Wake-ups come from watch events,
filtered by a fingerprint so that an event which changes nothing the reconciler reads (our own
status patch, a resync) wakes nobody:

- the object's own spec generation or control annotations (hold, promote, abort, retry, undo);
- an owned Deployment, Job, HTTPRoute, EndpointSlice or Service changing what matters
  (availability, replicas, completion, deletion);
- a referenced object: an STTModel's readiness or digest wakes the ModelDeployments and
  ABTests that name it, a ModelDeployment's stable revision wakes the ABTests on it.

Pure bookkeeping, no API calls: the only state is in memory and is rebuilt from watch events
after a restart (every loop reconciles once when it starts).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from stt_operator import API_GROUP
from stt_operator.builders.serving import deployment_available
from stt_operator.rollout.history import ANNOTATION_RETRY, ANNOTATION_UNDO
from stt_operator.rollout.transitions import ANNOTATION_ABORT, ANNOTATION_HELD_BY, ANNOTATION_PROMOTE
from stt_operator.services.informers import resource_version

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kind, namespace, name)

STT_KINDS = ("STTModel", "ModelDeployment", "ABTest")
# Annotations a person or an ABTest sets to steer a ModelDeployment (rollout/transitions.py); the
# others (Kopf's bookkeeping, the ABTest's p-value state) are written by us and wake nobody.
CONTROL_ANNOTATIONS = (
    ANNOTATION_PROMOTE,
    ANNOTATION_ABORT,
    ANNOTATION_HELD_BY,
    ANNOTATION_RETRY,
    ANNOTATION_UNDO,
)


Fingerprint = int


def _digest(value: Any) -> Fingerprint:
    """64 bits of a hash of `value`: only compared with the same object's previous one, and a
    small int costs a third of a hex digest's memory (one per watched object)."""
    encoded = json.dumps(value, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "big")


def _control_annotations(meta: Mapping[str, Any]) -> dict[str, str]:
    annotations = meta.get("annotations") or {}
    return {k: annotations[k] for k in CONTROL_ANNOTATIONS if k in annotations}


def own_fingerprint(body: Mapping[str, Any]) -> Fingerprint:
    """What of an stt.dev object's own metadata/spec makes its reconciler act differently."""
    meta = body.get("metadata") or {}
    return _digest([meta.get("generation"), _control_annotations(meta), bool(meta.get("deletionTimestamp"))])


def dependency_fingerprint(kind: str, body: Mapping[str, Any]) -> Fingerprint | None:
    """What other objects' reconcilers read of this one (None: nobody depends on it)."""
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    if kind == "STTModel":
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        return _digest(
            [
                meta.get("generation"),
                conditions.get("Ready"),
                conditions.get("Validated"),
                (status.get("artifact") or {}).get("digest"),
                status.get("validation"),  # measured WER/latency: what selectors rank by
                meta.get("labels"),
            ]
        )
    if kind == "ModelDeployment":
        return _digest(
            [
                status.get("stableRevision"),
                status.get("stableModel"),
                status.get("canaryRevision"),
                status.get("phase"),
                (meta.get("annotations") or {}).get(ANNOTATION_HELD_BY),
            ]
        )
    return None


def child_fingerprint(kind: str, body: Mapping[str, Any]) -> Fingerprint:
    """What of an owned object the owner's reconciler reads. Deployments and Jobs: readiness
    and completion; everything else only matters when it disappears.

    A Deployment's reconcilers read its wanted replicas, its available replicas and whether its
    current generation is rolled out and Available (rollout/plan.py: observed_revisions,
    builders/serving.py: deployment_available), so that is all that wakes them: the controller
    manager's intermediate writes (observedGeneration caught up, updated or ready replicas
    moving while still unavailable) wake nobody: up to two reconciles fewer per new endpoint
    when those writes arrive one by one (bench/scale/RESULTS.md)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    deleting = bool(meta.get("deletionTimestamp"))
    if kind == "Deployment":
        return _digest(
            [
                (body.get("spec") or {}).get("replicas"),
                int(status.get("availableReplicas") or 0),
                deployment_available(body),
                deleting,
            ]
        )
    if kind == "Job":
        conditions = sorted(
            (c.get("type"), c.get("status")) for c in status.get("conditions") or [] if c.get("type")
        )
        return _digest([status.get("succeeded"), status.get("failed"), conditions, deleting])
    return _digest([deleting])


def stt_owner(body: Mapping[str, Any]) -> Key | None:
    """The stt.dev object that controls this one, if any."""
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if str(ref.get("apiVersion", "")).startswith(f"{API_GROUP}/") and ref.get("kind") in STT_KINDS:
            return (ref["kind"], meta.get("namespace") or "", ref["name"])
    return None


def newest_copy(*bodies: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Of several copies of one object (the watch's, the response to our last write), the one
    with the highest resourceVersion; None if there is none or a version is not a number (the
    apiserver's resourceVersions are etcd revisions; anything else is left to a fresh read)."""
    candidates = [b for b in bodies if b]
    versions = [resource_version(b) for b in candidates]
    if not candidates or any(v is None for v in versions):
        return None
    return max(zip(versions, range(len(candidates)), candidates, strict=True))[2]


def without_field_managers(body: Any) -> Any:
    """`body` with `metadata.managedFields` removed in place (and returned): server-side apply's
    bookkeeping, which no reconciler reads, is close to half of an object's JSON."""
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        body["metadata"].pop("managedFields", None)
    return body


Reference = tuple[str, str, str]  # (kind, namespace, name) of a referenced object; name "*": any
ANY_NAME = "*"


def references(key: Key, body: Mapping[str, Any]) -> frozenset[Reference]:
    """The objects whose changes the reconcile of `key` (its body as given) reads."""
    kind, namespace, _ = key
    spec = body.get("spec") or {}
    names: set[tuple[str, str]] = set()
    if kind == "ModelDeployment":
        # The stable model of an endpoint is read too (evaluator, selection history); a
        # selector reads every model of the namespace.
        names.add(("STTModel", (spec.get("model") or {}).get("name") or ""))
        names.add(("STTModel", (body.get("status") or {}).get("stableModel") or ""))
        if spec.get("selector"):
            names.add(("STTModel", ANY_NAME))
    elif kind == "ABTest":
        for variant in spec.get("variants") or []:
            names.add(("STTModel", ((variant or {}).get("model") or {}).get("name") or ""))
        ref = (spec.get("endpoint") or {}).get("modelDeploymentRef") or {}
        names.add(("ModelDeployment", ref.get("name") or ""))
    return frozenset((k, namespace, n) for k, n in names if n)


class Waker:
    """One object's schedule: whether it is woken, stopped or being reconciled now, its requeue
    timer, and the object as its last watch event carried it.

    A waker holds no task while it waits: `wake()` (from any thread) or its requeue timer hands
    it to its `runner` (handlers.py starts a reconcile task then, unless one runs; that task
    looks again when it is done), and the task ends once the object is settled. Thousands of
    settled objects cost a waker each, not a task, an event and a coroutine frame.

    `packed`: the body is held as compact JSON and decoded on each read of `body` (a fresh
    copy each time). A decoded object takes about four times the memory of its JSON, and a
    settled object's body is read only when it is reconciled; thousands wait between reads.
    Unpacked, `body` is the very mapping given (Kopf's live body, for ABTests)."""

    __slots__ = (
        "_body",
        "_packed",
        "_version",
        "busy",
        "ended",
        "failures",
        "key",
        "loop",
        "on_end",
        "runner",
        "stopped",
        "timer",
        "uid",
        "woken",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        body: Mapping[str, Any] | None = None,
        *,
        packed: bool = False,
        key: Key = ("", "", ""),
    ) -> None:
        self.loop = loop
        self.key = key
        meta = (body or {}).get("metadata") or {}
        self.uid: str | None = str(meta.get("uid") or "") or None
        self.runner: Callable[[Waker], None] | None = None  # starts its reconciles
        self.on_end: Callable[[Waker], None] | None = None  # its loop is over (once)
        self.stopped = False
        self.woken = False  # a wake-up not yet taken by a reconcile
        self.busy = False  # a reconcile task runs for it now
        self.ended = False
        self.failures = 0  # reconciles failed in a row (backoff)
        self.timer: asyncio.TimerHandle | None = None  # its requeue
        self._packed = packed
        self._body: Mapping[str, Any] | str = {}
        self._version: int | None = None
        self.body = body if body is not None else {}

    @property
    def body(self) -> Mapping[str, Any]:
        held = self._body
        return json.loads(held) if isinstance(held, str) else held

    @body.setter
    def body(self, value: Mapping[str, Any]) -> None:
        if self._packed:
            self._body = json.dumps(value, separators=(",", ":"))
            self._version = resource_version(value)
        else:
            self._body = value

    @property
    def version(self) -> int | None:
        """The body's resourceVersion, without decoding a packed body (an unpacked one is
        Kopf's live body, which changes in place)."""
        return self._version if self._packed else resource_version(self.body)

    def private_copy(self) -> dict[str, Any]:
        """The body, the caller's to change."""
        return self.body if self._packed else copy.deepcopy(dict(self.body))  # type: ignore[return-value]

    def wake(self) -> None:
        """Reconcile soon; from any thread."""
        self.loop.call_soon_threadsafe(self.fire)

    def fire(self) -> None:
        """Woken (on the event loop's thread): the runner starts a reconcile unless one runs."""
        if self.stopped:
            return
        self.woken = True
        if self.runner is not None and not self.busy:
            self.runner(self)

    def requeue(self, delay: float) -> None:
        """Wake after `delay` seconds unless woken before (event loop's thread)."""
        self.cancel_timer()
        self.timer = self.loop.call_later(delay, self._due)

    def _due(self) -> None:
        self.timer = None
        self.fire()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def stop(self) -> None:
        """End the loop (from the event loop's thread): at once when no reconcile runs, else
        when the running one returns (its result is then dropped)."""
        self.stopped = True
        self.cancel_timer()
        if not self.busy:
            self.end()

    def end(self) -> None:
        """The loop is over: `on_end` runs once."""
        if self.ended:
            return
        self.ended = True
        if self.on_end is not None:
            self.on_end(self)


# What a fingerprint is of: an stt.dev object's own spec and control annotations, what its
# dependents read of it, what its owner reads of an owned object.
PURPOSES = ("own", "dependency", "child")


class Triggers:
    """Registry of the waiting loops and the last fingerprints seen, per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The running loops, by (kind, namespace): `dependents` runs on every watch event that
        # changes a model or an endpoint, and must not scan every loop of the process.
        self._by_scope: dict[tuple[str, str], dict[Key, Waker]] = {}
        # uid -> the last fingerprint of each purpose (`PURPOSES`' order): a tuple per object,
        # not a dict (a quarter of the memory; every owned object has one).
        self._seen: dict[str, tuple[Hashable | None, ...]] = {}
        # Who reads whom, for the running loops: a model's change finds its endpoints without
        # looking at every endpoint of its namespace (thousands can share one).
        self._refs: dict[Key, frozenset[Reference]] = {}
        self._referrers: dict[Reference, set[Key]] = {}
        self.wakeups = 0  # for the operator's metrics and tests

    # -- loops --------------------------------------------------------------------------------

    def register(self, key: Key, waker: Waker) -> None:
        with self._lock:
            self._by_scope.setdefault(key[:2], {})[key] = waker
            self._index(key, references(key, waker.body))

    def unregister(self, key: Key, waker: Waker) -> bool:
        """False when another loop holds the key now (the name was reused): it stays."""
        with self._lock:
            scope = self._by_scope.get(key[:2], {})
            if scope.get(key) is not waker:
                return False
            del scope[key]
            if not scope:
                del self._by_scope[key[:2]]
            self._index(key, frozenset())
            return True

    def refer(self, key: Key, body: Mapping[str, Any]) -> None:
        """A watch event of a running loop's object: what it references may have changed."""
        with self._lock:
            if key in self._by_scope.get(key[:2], {}):
                self._index(key, references(key, body))

    def _index(self, key: Key, refs: frozenset[Reference]) -> None:
        before = self._refs.pop(key, frozenset())
        for ref in before - refs:
            referrers = self._referrers.get(ref)
            if referrers is not None:
                referrers.discard(key)
                if not referrers:
                    del self._referrers[ref]
        for ref in refs - before:
            self._referrers.setdefault(ref, set()).add(key)
        if refs:
            self._refs[key] = refs

    def wakers(self, namespace: str) -> list[Waker]:
        """The running loops of `namespace`, every kind."""
        with self._lock:
            scopes = [held for (_, scoped), held in self._by_scope.items() if scoped == namespace]
            return [waker for held in scopes for waker in held.values()]

    def _waker(self, key: Key) -> Waker | None:
        with self._lock:
            return self._by_scope.get(key[:2], {}).get(key)

    def wake(self, key: Key) -> bool:
        waker = self._waker(key)
        if waker is None:
            return False  # not running here (another replica, or not started yet): it starts awake
        self.wakeups += 1
        waker.wake()
        return True

    def body(self, key: Key) -> dict[str, Any] | None:
        """A private copy of a running loop's object as last seen (None: no loop here)."""
        waker = self._waker(key)
        return waker.private_copy() if waker is not None else None

    def version(self, key: Key) -> int | None:
        """The resourceVersion of a running loop's object as last seen, read cheaply."""
        waker = self._waker(key)
        return waker.version if waker is not None else None

    # -- fingerprints ---------------------------------------------------------------------------

    def observe(self, uid: str, purpose: str, fingerprint: Hashable | None) -> str:
        """Record `fingerprint` for (uid, purpose): "new" (first sighting), "changed" or "same"."""
        slot = PURPOSES.index(purpose)
        with self._lock:
            if fingerprint is None:
                return "same"
            seen = self._seen.get(uid) or (None,) * len(PURPOSES)
            before = seen[slot]
            self._seen[uid] = (*seen[:slot], fingerprint, *seen[slot + 1 :])
            if before is None:
                return "new"
            return "same" if before == fingerprint else "changed"

    def forget(self, uid: str) -> None:
        with self._lock:
            self._seen.pop(uid, None)

    # -- who depends on whom ---------------------------------------------------------------------

    def dependents(self, kind: str, namespace: str, name: str) -> list[Key]:
        """The running loops whose reconcile reads `kind/name` in `namespace`."""
        with self._lock:
            found = self._referrers.get((kind, namespace, name), set()) | self._referrers.get(
                (kind, namespace, ANY_NAME), set()
            )
        return sorted(found)


TRIGGERS = Triggers()
