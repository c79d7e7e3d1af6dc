"""A small, typed facade over the Kubernetes API for the controllers.

Server-side apply (one field manager) makes every write idempotent: applying the same
manifest twice changes nothing, which is what lets every handler run twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import (
    ConflictError,
    DynamicApiError,
    ForbiddenError,
    NotFoundError,
    ResourceNotFoundError,
    UnprocessibleEntityError,
)

from stt_operator.builders.metadata import FIELD_MANAGER
from stt_operator.heap import collector_paused
from stt_operator.observability import api_call
from stt_operator.services.informers import Informers

log = logging.getLogger(__name__)

Summary = TypeVar("Summary")

# The apiserver's refusals a controller handles, under the facade's names (so no controller
# imports the client library's module). The same classes: `except Conflict` catches the client's 409.
KubeError = DynamicApiError  # any refusal
Conflict = ConflictError  # 409: a guarded write lost to another writer (`patch_if_unchanged`)
Forbidden = ForbiddenError  # 403: RBAC does not grant it
NotFound = NotFoundError  # 404


def load_api_client(kubeconfig: str | None = None, pool_size: int | None = None) -> k8s.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or the given path).

    `pool_size`: keep-alive connections to the apiserver; one per concurrent reconcile, or
    each call past the pool opens (and TLS-handshakes) a fresh connection."""
    configuration = k8s.Configuration()
    if pool_size:
        configuration.connection_pool_maxsize = pool_size
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return k8s.ApiClient(configuration)


def _version(body: Mapping[str, Any]) -> int | None:
    """What tells an edit of an object apart from our apply: its generation (bumped by spec
    changes, not by status updates) or, for kinds without one (Service), its resourceVersion."""
    meta = body.get("metadata") or {}
    value = meta.get("generation")
    if value is None:
        value = meta.get("resourceVersion")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _plain(_client: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The response as decoded JSON. The dynamic client's default wraps it in attribute
    objects, which every caller here turned back into dicts: two walks of every response, and
    most of the reconcilers' allocations in a burst (bench/scale/RESULTS.md). List items get
    the apiVersion and kind the apiserver leaves out of them, as that wrapper gives them."""
    kind = body.get("kind") or ""
    if kind.endswith("List"):
        items = body.get("items") or []
        for item in items:
            item.setdefault("apiVersion", body.get("apiVersion"))
            item.setdefault("kind", kind[: -len("List")])
        body["items"] = items
    return body


# (connect, read) seconds for every call: a hung apiserver must not hang a reconcile (or the
# operator's shutdown) for ever.
REQUEST_TIMEOUT = (10, 30)

# Threads that carry a reconcile's independent applies at once (`Kube.apply_all`). Shared by every
# reconcile; past them an apply waits its turn, as it did when the applies ran in a row.
APPLY_THREADS = 16


class Kube:
    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.timeout = REQUEST_TIMEOUT
        self._dynamic: DynamicClient | None = None
        self._lock = threading.Lock()
        # Discovery's search walks every group on each lookup (7 % of the operator's CPU in a
        # burst, bench/scale/RESULTS.md); the (apiVersion, kind) → resource map never changes
        # while a CRD stays installed.
        self._resources: dict[tuple[str, str], Any] = {}
        # Server-side applies this process made of kinds in `watched_kinds`, by (kind, namespace,
        # name): the manifest's digest and the version the apply left (`_version`). Applying the same
        # manifest again is a no-op round trip, skipped until a watch event shows the object
        # deleted or edited by someone else (`observed`).
        self.watched_kinds: frozenset[str] = frozenset()
        self._applied: dict[tuple[str, str, str], tuple[bytes, int]] = {}
        # Objects the process already holds a current copy of (the controllers' watches):
        # (apiVersion, kind, name, namespace) → a copy, or None to ask the apiserver.
        self.known: Callable[[str, str, str, str | None], dict[str, Any] | None] | None = None
        # Watch-fed caches of owned objects (services/informers.py), when the operator runs them.
        self.informers: Informers | None = None
        self._apply_pool: ThreadPoolExecutor | None = None

    @property
    def dynamic(self) -> DynamicClient:
        with self._lock:
            if self._dynamic is None:
                self._dynamic = DynamicClient(self.api_client)
            return self._dynamic

    def resource(self, api_version: str, kind: str) -> Any:
        return self._resource(api_version, kind)

    def merge_patch(
        self, resource: Any, name: str, namespace: str | None, body: Mapping[str, Any], status: bool = False
    ) -> dict[str, Any]:
        """A JSON merge patch of the object (or of its status subresource)."""
        target = resource.subresources["status"] if status else resource
        with api_call("patch", resource.kind):
            return self.dynamic.patch(
                target,
                body=dict(body),
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
                _request_timeout=self.timeout,
                serializer=_plain,
            )

    def patch(
        self, api_version: str, kind: str, name: str, namespace: str | None, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch of the object; with `metadata.resourceVersion` in `body` it applies
        only to that version (a ConflictError otherwise)."""
        return self.merge_patch(self._resource(api_version, kind), name, namespace, body)

    def patch_if_unchanged(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        body: Mapping[str, Any],
        resource_version: str,
    ) -> dict[str, Any]:
        """`patch`, applied only to the object at `resource_version` (optimistic locking): a
        `Conflict` when anyone wrote the object since it was read."""
        metadata = {**(body.get("metadata") or {}), "resourceVersion": resource_version}
        return self.patch(api_version, kind, name, namespace, {**body, "metadata": metadata})

    def _resource(self, api_version: str, kind: str) -> Any:
        found = self._resources.get((api_version, kind))
        if found is not None:
            return found
        try:
            found = self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            # A CRD installed after start-up (e.g. Gateway API): refresh discovery once.
            self.dynamic.resources.invalidate_cache()
            found = self.dynamic.resources.get(api_version=api_version, kind=kind)
        self._resources[(api_version, kind)] = found
        return found

    def apply(self, manifest: Mapping[str, Any]) -> None:
        kind = manifest["kind"]
        meta = manifest["metadata"]
        key = (kind, meta.get("namespace") or "", meta["name"])
        digest = b""
        if kind in self.watched_kinds:
            encoded = json.dumps(manifest, sort_keys=True, default=str).encode()
            digest = hashlib.blake2b(encoded, digest_size=16).digest()  # one held per applied object
            known = self._applied.get(key)
            if known is not None and known[0] == digest:
                return  # unchanged since our last apply: no API call
        resource = self._resource(manifest["apiVersion"], kind)
        try:
            result = self._server_side_apply(resource, manifest)
        except UnprocessibleEntityError:
            kept = self._keeping_cluster_ip(manifest)
            if kept is None:
                raise
            result = self._server_side_apply(resource, kept)
        namespace = meta.get("namespace") or ""
        if self.informers is not None and self.informers.holds(manifest["apiVersion"], kind, namespace):
            self.informers.written(result)
        if digest:
            version = _version(result)
            if version is not None:
                self._applied[key] = (digest, version)

    def apply_all(self, manifests: Sequence[Mapping[str, Any]]) -> None:
        """Apply manifests that do not depend on one another at once. Under load an apply is a
        round trip of a few hundred milliseconds, most of a reconcile's time, and one revision's
        Deployment and Service wait for nothing from each other. Every apply runs to its end
        (each is idempotent); the first refusal is raised after, so the reconcile retries."""
        if len(manifests) < 2:
            for manifest in manifests:
                self.apply(manifest)
            return
        with self._lock:
            if self._apply_pool is None:
                self._apply_pool = ThreadPoolExecutor(APPLY_THREADS, thread_name_prefix="apply")
            pool = self._apply_pool
        others = [pool.submit(self.apply, manifest) for manifest in manifests[1:]]
        errors: list[BaseException] = []
        try:
            self.apply(manifests[0])  # this thread's share, rather than idling while the pool works
        except Exception as exc:  # raised below, once the others have finished
            errors.append(exc)
        errors += [exc for exc in (future.exception() for future in others) if exc is not None]
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Shutdown: applies not started yet are dropped (their reconcile is being dropped too)."""
        with self._lock:
            if self._apply_pool is not None:
                self._apply_pool.shutdown(wait=False, cancel_futures=True)

    def _server_side_apply(self, resource: Any, manifest: Mapping[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        with api_call("apply", manifest["kind"]):
            return self.dynamic.server_side_apply(
                resource,
                body=dict(manifest),
                name=meta["name"],
                namespace=meta.get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                _request_timeout=self.timeout,
                serializer=_plain,
            )

    def _keeping_cluster_ip(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """A headless Service manifest for a Service that already has a ClusterIP (made by an
        operator before revision Services were headless): the apiserver never lets an address
        change, so the manifest without `clusterIP`, and the Service keeps its address. None
        when that is not why the apply was refused."""
        spec = manifest.get("spec") or {}
        if manifest["kind"] != "Service" or spec.get("clusterIP") != "None":
            return None
        meta = manifest["metadata"]
        live = self.get("v1", "Service", meta["name"], meta.get("namespace"))
        if live is None or (live.get("spec") or {}).get("clusterIP") in (None, "", "None"):
            return None
        return {**manifest, "spec": {k: v for k, v in spec.items() if k != "clusterIP"}}

    def observed(self, kind: str, body: Mapping[str, Any], deleted: bool = False) -> None:
        """A watch event of an object we may have applied: forget the apply when the object is
        gone or changed since (a newer version), so the next reconcile applies it."""
        meta = body.get("metadata") or {}
        key = (kind, meta.get("namespace") or "", meta.get("name") or "")
        known = self._applied.get(key)
        if known is None:
            return
        version = _version(body)
        if deleted or meta.get("deletionTimestamp") or version is None or version > known[1]:
            self._applied.pop(key, None)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        if self.known is not None:
            found = self.known(api_version, kind, name, namespace)
            if found is not None:
                return found
        resource = self._resource(api_version, kind)
        try:
            with api_call("get", kind):
                return resource.get(
                    name=name, namespace=namespace, _request_timeout=self.timeout, serializer=_plain
                )
        except NotFoundError:
            return None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: Mapping[str, str] | None = None,
        field_selector: str | None = None,
        cached: bool = False,
    ) -> list[dict[str, Any]]:
        """`cached`: the caller reads only metadata, replicas and status, so the informer's
        trimmed copies do (`informers.trimmed`): no API call once the kind's watch is synced."""
        if cached and namespace and not field_selector and self.informers is not None:
            held = self.informers.items(api_version, kind, namespace, label_selector)
            if held is not None:
                return held
        resource = self._resource(api_version, kind)
        selector = ",".join(f"{k}={v}" for k, v in (label_selector or {}).items()) or None
        extra = {"field_selector": field_selector} if field_selector else {}
        with api_call("list", kind):
            found = resource.get(
                namespace=namespace,
                label_selector=selector,
                _request_timeout=self.timeout,
                serializer=_plain,
                **extra,
            )
        return found.get("items", [])

    def list_summary(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        summarize: Callable[[list[dict[str, Any]]], Summary],
        field_selector: str | None = None,
    ) -> Summary:
        """A list too large to keep: only what `summarize` makes of its items stays. The response
        is decoded with the cyclic collector paused and dropped before it resumes, so its
        objects are never promoted to the oldest generation (heap.py says why that matters);
        the collector runs as usual while the apiserver answers."""
        resource = self._resource(api_version, kind)
        extra = {"field_selector": field_selector} if field_selector else {}
        with api_call("list", kind):
            response = resource.get(
                namespace=namespace, _request_timeout=self.timeout, serialize=False, **extra
            )
            data = response.data
        with collector_paused():
            items = _plain(None, json.loads(data)).get("items", [])
            del data
            summary = summarize(items)
            del items
        return summary

    def list_visible(self, api_version: str, kind: str, namespaces: Iterable[str]) -> list[dict[str, Any]]:
        """Every object of the kind this process may list: cluster-wide, or, where RBAC is bound
        per namespace (the cluster-wide list is Forbidden), those of `namespaces` in name order."""
        try:
            return self.list(api_version, kind, None)
        except ForbiddenError:
            return [item for ns in sorted(set(namespaces)) for item in self.list(api_version, kind, ns)]

    def scale(self, name: str, namespace: str, replicas: int) -> None:
        """Set a Deployment's replicas through its scale subresource (leaves the rest alone)."""
        self._applied.pop(("Deployment", namespace, name), None)  # replicas differ from the apply
        with api_call("patch", "Deployment/scale"):
            k8s.AppsV1Api(self.api_client).patch_namespaced_deployment_scale(
                name, namespace, {"spec": {"replicas": replicas}}, _request_timeout=self.timeout
            )

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None) -> bool:
        """Delete with background propagation; False when it was already gone."""
        resource = self._resource(api_version, kind)
        self._applied.pop((kind, namespace or "", name), None)
        if self.informers is not None:
            self.informers.deleted(api_version, kind, namespace or "", name)
        try:
            with api_call("delete", kind):
                resource.delete(
                    name=name,
                    namespace=namespace,
                    body={"propagationPolicy": "Background"},
                    _request_timeout=self.timeout,
                    serializer=_plain,
                )
        except NotFoundError:
            return False
        return True
