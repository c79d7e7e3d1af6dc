"""services/kube.py: the guarded patch and the list across the namespaces the operator may read,
with the apiserver's refusals under the facade's names."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from stt_operator.services import kube as facade
from stt_operator.services.kube import Kube

API = "stt.dev/v1alpha1"


def _refusal(status: int) -> facade.KubeError:
    classes = {403: facade.Forbidden, 404: facade.NotFound, 409: facade.Conflict}
    return classes[status](ApiException(status=status, reason="refused"))


class _Resource:
    """Answers lists by namespace; a cluster-wide list is refused when `forbidden`."""

    kind = "ABTest"

    def __init__(self, items: dict[str, list[str]], forbidden: bool) -> None:
        self.items, self.forbidden = items, forbidden
        self.asked: list[str | None] = []

    def get(self, namespace: str | None = None, **_: Any) -> dict[str, Any]:
        self.asked.append(namespace)
        if namespace is None and self.forbidden:
            raise _refusal(403)
        wanted = self.items if namespace is None else {namespace: self.items.get(namespace, [])}
        items = [{"metadata": {"name": n, "namespace": ns}} for ns, names in wanted.items() for n in names]
        return {"items": items}


class _Dynamic:
    """Records merge patches; refuses them with `refusal` when set."""

    def __init__(self, refusal: int | None = None) -> None:
        self.patches: list[dict[str, Any]] = []
        self.refusal = refusal

    def patch(self, resource: Any, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        if self.refusal is not None:
            raise _refusal(self.refusal)
        self.patches.append(body)
        return body


def _kube(resource: Any = None, dynamic: _Dynamic | None = None) -> Kube:
    kube = Kube(api_client=None)  # type: ignore[arg-type]
    kube._dynamic = dynamic or _Dynamic()  # type: ignore[assignment]
    kube._resources[(API, "ABTest")] = resource or _Resource({}, forbidden=False)
    kube._resources[(API, "ModelDeployment")] = _Resource({}, forbidden=False)
    return kube


def test_the_facade_names_are_the_client_errors() -> None:
    # A caller catching the facade's name catches what the client raises, and the reverse.
    assert issubclass(facade.Conflict, facade.KubeError) and issubclass(facade.Forbidden, facade.KubeError)
    assert isinstance(_refusal(409), ApiException) and isinstance(_refusal(404), facade.NotFound)


def test_a_guarded_patch_carries_the_version_it_read_and_leaves_the_body_alone() -> None:
    dynamic = _Dynamic()
    kube = _kube(dynamic=dynamic)
    body = {"metadata": {"annotations": {"hold": "t"}}, "spec": {"x": 1}}
    kube.patch_if_unchanged(API, "ModelDeployment", "asr", "ns", body, "42")
    assert dynamic.patches == [
        {"metadata": {"annotations": {"hold": "t"}, "resourceVersion": "42"}, "spec": {"x": 1}}
    ]
    assert body == {"metadata": {"annotations": {"hold": "t"}}, "spec": {"x": 1}}
    kube.patch_if_unchanged(API, "ModelDeployment", "asr", "ns", {"spec": {"x": 2}}, "43")
    assert dynamic.patches[-1] == {"spec": {"x": 2}, "metadata": {"resourceVersion": "43"}}


def test_a_guarded_patch_that_lost_the_race_raises_conflict() -> None:
    kube = _kube(dynamic=_Dynamic(refusal=409))
    with pytest.raises(facade.Conflict):
        kube.patch_if_unchanged(API, "ModelDeployment", "asr", "ns", {"spec": {}}, "42")


def test_list_visible_is_one_cluster_wide_list_when_rbac_allows_it() -> None:
    resource = _Resource({"a": ["t1"], "b": ["t2"]}, forbidden=False)
    found = _kube(resource).list_visible(API, "ABTest", ["a"])
    assert [o["metadata"]["name"] for o in found] == ["t1", "t2"]
    assert resource.asked == [None]


def test_list_visible_falls_back_to_each_namespace_once_in_name_order() -> None:
    resource = _Resource({"a": ["t1"], "b": ["t2"], "c": ["t3"]}, forbidden=True)
    found = _kube(resource).list_visible(API, "ABTest", ["b", "a", "b"])
    assert [o["metadata"]["name"] for o in found] == ["t1", "t2"]
    assert resource.asked == [None, "a", "b"]


def test_list_visible_passes_other_refusals_on() -> None:
    class Broken(_Resource):
        def get(self, namespace: str | None = None, **_: Any) -> dict[str, Any]:
            raise _refusal(404)

    with pytest.raises(facade.NotFound):
        _kube(Broken({}, forbidden=False)).list_visible(API, "ABTest", ["a"])


class _Applies:
    """Server-side applies that each wait at a barrier of `together` parties (so they pass only
    if that many are in flight at once; a lone apply times out); the names in `refuse` are
    refused (403). Records which names were applied."""

    def __init__(self, together: int = 1, refuse: frozenset[str] = frozenset()) -> None:
        self.barrier = threading.Barrier(together, timeout=10)
        self.refuse = refuse
        self.applied: list[str] = []
        self._lock = threading.Lock()

    def server_side_apply(self, resource: Any, body: dict[str, Any], name: str, **_: Any) -> dict[str, Any]:
        self.barrier.wait()
        if name in self.refuse:
            raise _refusal(403)
        with self._lock:
            self.applied.append(name)
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "7"}}


def _applying(dynamic: _Applies) -> Kube:
    kube = Kube(api_client=None)  # type: ignore[arg-type]
    kube._dynamic = dynamic  # type: ignore[assignment]
    kube._resources[("v1", "ConfigMap")] = object()
    return kube


def _manifests(*names: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "namespace": "ns"}} for n in names
    ]


def test_apply_all_applies_independent_objects_at_once() -> None:
    dynamic = _Applies(together=3)  # in a row, the first would wait at the barrier alone
    kube = _applying(dynamic)
    kube.apply_all(_manifests("a", "b", "c"))
    kube.close()
    assert sorted(dynamic.applied) == ["a", "b", "c"]


def test_apply_all_finishes_every_apply_then_raises_the_refusal() -> None:
    dynamic = _Applies(refuse=frozenset({"a"}))
    kube = _applying(dynamic)
    with pytest.raises(facade.Forbidden):
        kube.apply_all(_manifests("a", "b", "c"))
    assert sorted(dynamic.applied) == ["b", "c"]  # the others were not abandoned half-way
    with pytest.raises(facade.Forbidden):
        kube.apply_all(_manifests("b", "a"))  # a refusal in a pool thread is raised too
    kube.close()
