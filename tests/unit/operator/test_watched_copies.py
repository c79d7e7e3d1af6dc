"""Reading from watched copies instead of the apiserver: which copy is newest, and when an
unchanged apply may be skipped (bench/scale/RESULTS.md)."""

from __future__ import annotations

from typing import Any

from stt_operator.controllers.triggers import newest_copy
from stt_operator.services.kube import Kube


def _obj(rv: Any, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "e1", "resourceVersion": rv}, "status": status}


def test_newest_copy_prefers_the_higher_resource_version() -> None:
    live, written = _obj("120", phase="Progressing"), _obj("125", phase="Healthy")
    assert newest_copy(live, written) is written  # the watch has not delivered our write yet
    later = _obj("130", phase="Healthy")
    assert newest_copy(later, written) is later  # someone wrote after us
    assert newest_copy(None, written) is written
    assert newest_copy(None, None) is None


def test_newest_copy_gives_up_on_versions_it_cannot_order() -> None:
    assert newest_copy(_obj("abc"), _obj("5")) is None
    assert newest_copy({"metadata": {}}) is None


class _Dynamic:
    """Records server-side applies; answers with the generation the apiserver would give."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []

    def server_side_apply(self, resource: Any, body: dict[str, Any], **_: Any) -> Any:
        self.applied.append(body)
        generation = len(self.applied) if body["kind"] != "Service" else None
        # The object as the apiserver answers it (Kube asks for plain decoded JSON).
        return {"metadata": {"generation": generation, "resourceVersion": str(100 + len(self.applied))}}


def _kube() -> tuple[Kube, _Dynamic]:
    kube = Kube(api_client=None)  # type: ignore[arg-type]
    fake = _Dynamic()
    kube._dynamic = fake  # type: ignore[assignment]
    kube._resources[("apps/v1", "Deployment")] = object()
    kube._resources[("v1", "Service")] = object()
    kube.watched_kinds = frozenset({"Deployment", "Service"})
    return kube, fake


def _deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns"},
        "spec": {"replicas": replicas},
    }


def test_unchanged_apply_of_a_watched_kind_is_skipped_until_the_watch_says_otherwise() -> None:
    kube, fake = _kube()
    kube.apply(_deployment(1))
    kube.apply(_deployment(1))
    assert len(fake.applied) == 1
    kube.apply(_deployment(2))  # a different manifest always goes out
    assert len(fake.applied) == 2
    # An event at the generation we left changes nothing; a newer one (someone edited the
    # spec) or a deletion makes the next apply go out again.
    kube.observed("Deployment", {"metadata": {"name": "d", "namespace": "ns", "generation": 2}})
    kube.apply(_deployment(2))
    assert len(fake.applied) == 2
    kube.observed("Deployment", {"metadata": {"name": "d", "namespace": "ns", "generation": 3}})
    kube.apply(_deployment(2))
    assert len(fake.applied) == 3
    kube.observed("Deployment", {"metadata": {"name": "d", "namespace": "ns", "generation": 3}}, deleted=True)
    kube.apply(_deployment(2))
    assert len(fake.applied) == 4


def test_kinds_without_a_generation_are_compared_by_resource_version() -> None:
    kube, fake = _kube()
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ns"}}
    kube.apply(service)  # left resourceVersion 101
    kube.observed("Service", {"metadata": {"name": "s", "namespace": "ns", "resourceVersion": "101"}})
    kube.apply(service)
    assert len(fake.applied) == 1
    kube.observed("Service", {"metadata": {"name": "s", "namespace": "ns", "resourceVersion": "140"}})
    kube.apply(service)
    assert len(fake.applied) == 2


def test_kinds_without_a_watch_are_always_applied() -> None:
    kube, fake = _kube()
    kube.watched_kinds = frozenset()
    kube.apply(_deployment(1))
    kube.apply(_deployment(1))
    assert len(fake.applied) == 2
