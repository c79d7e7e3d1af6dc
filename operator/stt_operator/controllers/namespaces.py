"""A namespace being deleted takes our objects with it: release their finalizers.

Kopf puts a finalizer on every object that has a daemon or a deletion handler (here every ABTest;
STTModels and ModelDeployments carried one before their loops became the operator's own) and
removes it when it is done with the object's deletion. An operator limited to a list
or pattern of namespaces, though, stops serving a namespace as soon as it sees it marked for
deletion with status conditions, which is often before the namespace controller reports the
finalizers it waits on. Nobody then removes ours and the namespace stays Terminating, even across
restarts (Kopf skips terminating namespaces at start). Nothing is lost by releasing them: what
our objects own is garbage-collected with the namespace, and an ABTest's endpoint is a
ModelDeployment of the same namespace.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from typing import Any

from kubernetes.dynamic.exceptions import ConflictError, NotFoundError

from stt_operator import API_GROUP, API_VERSION
from stt_operator.controllers.triggers import STT_KINDS
from stt_operator.services.kube import Kube

API = f"{API_GROUP}/{API_VERSION}"
_ATTEMPTS = 3  # a finalizer list written meanwhile by someone else: read it again


def served(namespace: str, patterns: Sequence[str]) -> bool:
    """Whether an operator started with these `--namespace` patterns serves `namespace` (no
    patterns: every namespace), as Kopf decides it: each pattern is comma-separated globs; the
    first decides, `!glob` then removes, a later plain glob puts back only what the first had
    matched; a pattern that starts with `!` starts from `*`."""
    if not patterns:
        return True
    return any(_matches(namespace, pattern) for pattern in patterns)


def informer_scopes(patterns: Sequence[str] | None) -> list[str | None] | None:
    """Where the owned-object informers watch: [None] (every namespace) with no patterns, one
    scope per namespace when every pattern names a plain namespace (the chart's
    `watchNamespaces`, bound by a RoleBinding in each), None when a pattern is a glob (only
    Kopf, which discovers the matching namespaces, can follow those)."""
    if not patterns:
        return [None]
    if any(ch in pattern for pattern in patterns for ch in "*?[]!,"):
        return None
    return list(dict.fromkeys(p.strip() for p in patterns))


def _matches(namespace: str, pattern: str) -> bool:
    globs = [glob.strip() for glob in pattern.split(",")]
    if globs[0].startswith("!"):
        globs.insert(0, "*")
    first = fnmatch.fnmatchcase(namespace, globs[0])
    matched = first
    for glob in globs[1:]:
        if glob.startswith("!"):
            matched = matched and not fnmatch.fnmatchcase(namespace, glob.lstrip("!"))
        else:
            matched = matched or (first and fnmatch.fnmatchcase(namespace, glob))
    return matched


def release_finalizers(
    kube: Kube, namespace: str, finalizer: str, *, patience_s: float = 30.0, poll_s: float = 2.0
) -> list[str]:
    """Remove `finalizer` from every stt.dev object of `namespace` that is marked for deletion;
    returns "Kind/name" of those released. Objects the namespace controller has not marked yet
    are waited for (up to `patience_s`): released unmarked, Kopf would put the finalizer back,
    and the namespace may send no further event. Raises the client's error otherwise (e.g. 403
    when the operator's RoleBinding there was deleted first)."""
    released: list[str] = []
    deadline = time.monotonic() + patience_s
    while True:
        unmarked = 0
        for kind in STT_KINDS:
            resource = kube.resource(API, kind)
            for obj in kube.list(API, kind, namespace):
                if finalizer not in (obj["metadata"].get("finalizers") or []):
                    continue
                if not obj["metadata"].get("deletionTimestamp"):
                    unmarked += 1
                elif release(kube, resource, obj, finalizer):
                    released.append(f"{kind}/{obj['metadata']['name']}")
        if not unmarked or time.monotonic() > deadline:
            return released
        time.sleep(poll_s)


def release(kube: Kube, resource: Any, obj: dict[str, Any], finalizer: str) -> bool:
    """Remove `finalizer` from `obj` (as last seen; read again after a conflict). True when this
    call removed it."""
    meta = obj["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    for attempt in range(_ATTEMPTS):
        finalizers = list(meta.get("finalizers") or [])
        if finalizer not in finalizers:
            return False
        # The resourceVersion makes the list replacement safe against a concurrent writer.
        patch = {
            "metadata": {
                "finalizers": [f for f in finalizers if f != finalizer],
                "resourceVersion": meta["resourceVersion"],
            }
        }
        try:
            kube.merge_patch(resource, name, namespace, patch)
            return True
        except NotFoundError:
            return False
        except ConflictError:
            if attempt == _ATTEMPTS - 1:
                raise
            try:  # the apiserver's copy, not a watched one
                meta = resource.get(name=name, namespace=namespace).to_dict()["metadata"]
            except NotFoundError:
                return False
    return False


def forbidden(exc: BaseException) -> bool:
    """A 403 from either client (ApiException, or the dynamic client's ForbiddenError)."""
    return getattr(exc, "status", None) == 403
