"""Watch-fed caches of the objects the operator owns: list once, then watch from there.

One thread per kind (per namespace too, when the operator serves named namespaces) lists the
objects labelled as the operator's, then watches them from that list's resourceVersion, with
the label selector applied by the apiserver: other workloads' Deployments never reach the
process, and the operator's own children carry none of Kopf's per-object bookkeeping (a Kopf
watch keeps state for every object it sees; bench/scale/RESULTS.md measured what that costs).
Every change goes to a callback (the controllers' wake-ups); kinds marked `keep` are also held,
trimmed to what the reconcilers read, so a reconcile finds its revisions without a LIST.

After a watch ends or breaks, the watch resumes from the last resourceVersion seen; when the
apiserver no longer has it (410 Gone, e.g. after etcd compaction or a restart), the kind is
listed again and objects missing from the new list are reported deleted, so the cache never
keeps an object the apiserver no longer has.

Like Kopf's watches, these are not counted in `stt_operator_api_calls_total` (the reconcilers'
own calls).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from stt_operator.observability import WriteEchoes

log = logging.getLogger(__name__)

EventCallback = Callable[[str, str, Mapping[str, Any]], None]  # (kind, ADDED|MODIFIED|DELETED, body)
_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
_PAGE = 500
# The client gives up this long after the server should have ended a watch.
_CLIENT_MARGIN_S = 30


@dataclass(frozen=True)
class WatchedKind:
    api_version: str
    kind: str
    plural: str
    keep: bool = False  # hold the objects (trimmed) for `Informer.items`
    # Labels `Informer.items` looks objects up by, indexed: a reconcile asks for its own few
    # objects, which must not cost a scan of every object in the namespace (thousands can share one).
    indexed: tuple[str, ...] = ()

    def path(self, namespace: str | None) -> str:
        root = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"{root}{scope}/{self.plural}"


def trimmed(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the reconcilers read of an owned object: metadata without managedFields, the
    replica count, the status. Not the pod template (the largest part, and never read back:
    the reconcilers compare what they would apply, not what they find)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    spec = body.get("spec") or {}
    out: dict[str, Any] = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": meta}
    if "replicas" in spec:
        out["spec"] = {"replicas": spec["replicas"]}
    if "status" in body:
        out["status"] = body["status"]
    return out


_IDENTITY = ("name", "namespace", "uid", "resourceVersion", "ownerReferences")


def identity(body: Mapping[str, Any]) -> dict[str, Any]:
    """What is held of a kind not kept: what a relist needs to report the object deleted and
    the deletion handler needs to find its owner."""
    meta = body.get("metadata") or {}
    return {"metadata": {k: meta.get(k) for k in _IDENTITY}}


def resource_version(body: Mapping[str, Any] | None) -> int | None:
    """The object's resourceVersion as a number (the apiserver's are etcd revisions); None when
    absent or not a number."""
    try:
        return int(((body or {}).get("metadata") or {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None


def _version(body: Mapping[str, Any]) -> int:
    return resource_version(body) or 0


def _key(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


class _Held(NamedTuple):
    """One held object: its resourceVersion and indexed label values read without decoding,
    the body itself as compact JSON (a fifth of the decoded dict's memory; a reconcile decodes
    only the few objects it asks for)."""

    version: int
    indexed: tuple[tuple[str, str], ...]
    packed: str


class Store:
    """The held objects by namespace and name (every read is for one namespace, and a
    cluster-wide informer holds them all), with an index of the `indexed` labels' values.
    Bodies are held packed (`_Held`); every read returns a fresh decoded copy."""

    def __init__(self, indexed: tuple[str, ...] = ()) -> None:
        self.indexed = indexed
        self._objects: dict[str, dict[str, _Held]] = {}
        self._by_label: dict[tuple[str, str, str], set[str]] = {}  # (namespace, label, value) -> names

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        held = self._objects.get(namespace, {}).get(name)
        return json.loads(held.packed) if held is not None else None

    def version(self, namespace: str, name: str) -> int | None:
        """The held object's resourceVersion (0 when it has none); None when none is held."""
        held = self._objects.get(namespace, {}).get(name)
        return held.version if held is not None else None

    def put(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        self._unindex(namespace, name)
        held = _Held(_version(body), self._indexed_labels(body), json.dumps(body, separators=(",", ":")))
        self._objects.setdefault(namespace, {})[name] = held
        for label, value in held.indexed:
            self._by_label.setdefault((namespace, label, value), set()).add(name)

    def pop(self, namespace: str, name: str) -> None:
        self._unindex(namespace, name)
        held = self._objects.get(namespace, {})
        held.pop(name, None)
        if not held:
            self._objects.pop(namespace, None)

    def versions(self) -> dict[tuple[str, str], int]:
        return {(ns, name): h.version for ns, held in self._objects.items() for name, h in held.items()}

    def matching(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """The objects in `namespace` carrying every label in `labels`."""
        held = self._objects.get(namespace, {})
        names: Any = held.keys()
        for label, value in labels.items():
            if label in self.indexed:  # the few objects with that value, not all of them
                names = self._by_label.get((namespace, label, value), set())
                break
        wanted = labels.items()
        found = [json.loads(held[name].packed) for name in names if name in held]
        return [b for b in found if wanted <= ((b.get("metadata") or {}).get("labels") or {}).items()]

    def _indexed_labels(self, body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        labels = (body.get("metadata") or {}).get("labels") or {}
        return tuple((label, str(labels[label])) for label in self.indexed if label in labels)

    def _unindex(self, namespace: str, name: str) -> None:
        held = self._objects.get(namespace, {}).get(name)
        if held is None:
            return
        for label, value in held.indexed:
            names = self._by_label.get((namespace, label, value))
            if names is not None:
                names.discard(name)
                if not names:
                    del self._by_label[(namespace, label, value)]


class _Gone(Exception):
    """The resourceVersion to resume from is no longer available: list again."""


class Informer:
    """List + watch of one kind, in one namespace or all, filtered by a label selector."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        watched: WatchedKind,
        namespace: str | None,
        label_selector: str,
        on_event: EventCallback,
        timeout_s: int,
    ) -> None:
        self.api_client = api_client
        self.watched = watched
        self.namespace = namespace
        self.label_selector = label_selector
        self.on_event = on_event
        self.timeout_s = max(1, int(timeout_s))
        self.synced = threading.Event()  # set once the first list is in
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # The object (trimmed) when `keep`, else its metadata only: what a relist needs to
        # report the objects that disappeared meanwhile.
        self._store = Store(watched.indexed)
        self._thread = threading.Thread(
            target=self._run, name=f"watch-{watched.plural}-{namespace or 'all'}", daemon=True
        )
        self._error: str | None = None
        self.echoes = WriteEchoes(watched.kind)  # our writes' way back through this watch

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # The thread may be blocked reading a stream; it is a daemon and ends with the process.
        self._stop.set()

    # -- reads and our own writes ---------------------------------------------------------------

    def items(self, namespace: str, labels: Mapping[str, str] | None) -> list[dict[str, Any]] | None:
        """Held objects in `namespace` carrying every label in `labels`; None before the first
        list is in (the caller asks the apiserver then)."""
        if not self.synced.is_set():
            return None
        with self._lock:
            return self._store.matching(namespace, dict(labels or {}))  # fresh copies

    def written(self, body: Mapping[str, Any]) -> None:
        """The object as our own write left it: held at once, so the next reconcile sees what
        it just made even if the watch has not delivered it yet (older copies never win)."""
        key = _key(body)
        with self._lock:
            before = self._store.version(*key)
        if self._put(body):
            self.echoes.wrote(key, before or None, resource_version(body))

    def deleted(self, namespace: str, name: str) -> None:
        with self._lock:
            self._store.pop(namespace, name)

    def _held(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return trimmed(body) if self.watched.keep else identity(body)

    def _put(self, body: Mapping[str, Any]) -> bool:
        """Hold `body` unless a newer copy is held; True when it was taken."""
        namespace, name = _key(body)
        with self._lock:
            held = self._store.version(namespace, name)
            if held is not None and held > _version(body):
                return False
            self._store.put(namespace, name, self._held(body))
        return True

    # -- the list/watch loop --------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist()
                    self.synced.set()
                version = self._watch(version)
                failures = 0
                self._report(None)
            except _Gone:
                version = None  # list again at once
            except Exception as exc:  # an outage or a bug: logged once per change, retried
                self._report(f"{type(exc).__name__}: {str(exc)[:300]}")
                self._stop.wait(_BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)])
                failures += 1

    def _report(self, error: str | None) -> None:
        if error == self._error:
            return
        what = f"watch of {self.watched.plural} in {self.namespace or 'all namespaces'}"
        if error is None:
            log.info("%s: resumed", what)
        elif self._error is None or error.split(":")[0] != self._error.split(":")[0]:
            log.warning("%s failed, retrying with backoff: %s", what, error)
        self._error = error

    def _get(self, query: list[tuple[str, Any]], read_timeout: float) -> Any:
        return self.api_client.call_api(
            self.watched.path(self.namespace),
            "GET",
            query_params=[*([("labelSelector", self.label_selector)] if self.label_selector else []), *query],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=(10, read_timeout),
        )

    def _list(self) -> tuple[list[dict[str, Any]], str]:
        """Every object, page by page, and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", _PAGE)] + ([("continue", token)] if token else [])
            try:
                response = self._get(query, 60)
            except ApiException as exc:
                if exc.status == 410:  # the continue token expired: start over
                    items, token = [], ""
                    continue
                raise
            try:
                page = json.loads(response.data)
            finally:
                response.release_conn()
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                kind_fields = {"apiVersion": self.watched.api_version, "kind": self.watched.kind}
                version = str((page.get("metadata") or {}).get("resourceVersion") or "")
                return [{**kind_fields, **item} for item in items], version

    def _relist(self) -> str:
        """List every page, replace the store, report what changed; the list's resourceVersion."""
        started = time.monotonic()
        items, version = self._list()
        self._replace(items)
        if self.synced.is_set():  # not the first list: the watch's version had expired
            log.info(
                "listed %d %s in %s again in %.1f s (the watch had fallen too far behind)",
                len(items),
                self.watched.plural,
                self.namespace or "all namespaces",
                time.monotonic() - started,
            )
        return version

    def report_all_soon(self) -> None:
        """List the kind now, in a thread of its own, and report every object as MODIFIED,
        changed or not (a consumer that ignored events for a while, such as a paused replica,
        sees everything again). Retried with backoff until it succeeds or the informer stops."""

        def run() -> None:
            for attempt in itertools.count():
                try:
                    items, _ = self._list()
                except Exception as exc:  # an outage: the watch thread reports it too
                    log.debug("listing %s to report them all failed: %s", self.watched.plural, exc)
                    if self._stop.wait(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]):
                        return
                    continue
                for item in items:
                    self.on_event(self.watched.kind, "MODIFIED", item)
                return

        threading.Thread(target=run, name=f"report-{self.watched.plural}", daemon=True).start()

    def _replace(self, items: list[dict[str, Any]]) -> None:
        """Hold exactly `items` (a fresh list); report what vanished, appeared or changed."""
        fresh = {_key(item): item for item in items}
        for key, item in fresh.items():  # a list carries our writes as well as a watch does
            self.echoes.seen(key, resource_version(item))
        with self._lock:
            before = self._store.versions()
            gone = [self._store.get(*key) or {} for key in before if key not in fresh]
            for key in before.keys() - fresh.keys():
                self.echoes.forget(key)
            self._store = Store(self.watched.indexed)
            for (namespace, name), body in fresh.items():
                self._store.put(namespace, name, self._held(body))
        for body in gone:
            self.on_event(self.watched.kind, "DELETED", body)
        for key, body in fresh.items():
            if before.get(key) != _version(body):
                self.on_event(self.watched.kind, "MODIFIED" if key in before else "ADDED", body)

    def _watch(self, version: str) -> str:
        """Follow changes from `version` until the server ends the stream; the last version."""
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", self.timeout_s),
        ]
        try:
            response = self._get(query, self.timeout_s + _CLIENT_MARGIN_S)
        except ApiException as exc:
            if exc.status == 410:  # said before the stream starts rather than in it
                raise _Gone() from exc
            raise
        try:
            for line in iter_resp_lines(response):
                if not line:
                    continue
                if self._stop.is_set():
                    break
                event = json.loads(line)
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        raise _Gone()
                    raise RuntimeError(f"watch error {body.get('code')}: {body.get('message')}")
                version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                self.echoes.seen(_key(body), resource_version(body))
                if kind == "DELETED":
                    self.echoes.forget(_key(body))
                    self.deleted(*_key(body))
                elif not self._put(body):
                    continue  # older than what our own write left
                self.on_event(self.watched.kind, str(kind), body)
        finally:
            response.release_conn()
        return version


class Informers:
    """The informers of one operator process, by (apiVersion, kind)."""

    def __init__(self) -> None:
        self._by_kind: dict[tuple[str, str], list[Informer]] = {}

    def add(self, informer: Informer) -> None:
        self._by_kind.setdefault((informer.watched.api_version, informer.watched.kind), []).append(informer)

    def start(self) -> None:
        for informer in self.all():
            informer.start()

    def stop(self) -> None:
        for informer in self.all():
            informer.stop()

    def all(self) -> list[Informer]:
        return [i for group in self._by_kind.values() for i in group]

    def holds(self, api_version: str, kind: str, namespace: str) -> bool:
        return self._covering(api_version, kind, namespace) is not None

    def _covering(self, api_version: str, kind: str, namespace: str) -> Informer | None:
        for informer in self._by_kind.get((api_version, kind), ()):
            if informer.watched.keep and informer.namespace in (None, namespace):
                return informer
        return None

    def items(
        self, api_version: str, kind: str, namespace: str, labels: Mapping[str, str] | None
    ) -> list[dict[str, Any]] | None:
        informer = self._covering(api_version, kind, namespace)
        return informer.items(namespace, labels) if informer is not None else None

    def written(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        informer = self._covering(
            str(body.get("apiVersion")), str(body.get("kind")), meta.get("namespace") or ""
        )
        if informer is not None:
            informer.written(body)

    def deleted(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        informer = self._covering(api_version, kind, namespace)
        if informer is not None:
            informer.deleted(namespace, name)
