"""The owned-object cache's bookkeeping: newer copies win, reads filter by namespace and labels,
a relist reports what vanished meanwhile, held copies are trimmed (tested against a real
apiserver in tests/integration/test_informers.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client as k8s

from stt_operator.controllers.namespaces import informer_scopes
from stt_operator.observability import WATCH_LAG_SECONDS, WriteEchoes
from stt_operator.services.informers import Informer, Informers, Store, WatchedKind, trimmed

DEPLOYMENTS = WatchedKind("apps/v1", "Deployment", "deployments", keep=True, indexed=("owner",))
SERVICES = WatchedKind("v1", "Service", "services")


def deployment(
    name: str, rv: int, ns: str = "a", labels: dict[str, str] | None = None, ready: int = 0
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "resourceVersion": str(rv),
            "labels": labels or {"x": "1"},
            "managedFields": [{"manager": "m"}],
        },
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}},
        "status": {"availableReplicas": ready},
    }


def informer(watched: WatchedKind = DEPLOYMENTS) -> tuple[Informer, list[tuple[str, str]]]:
    events: list[tuple[str, str]] = []
    inf = Informer(
        k8s.ApiClient(),
        watched,
        None,
        "m=1",
        lambda kind, t, body: events.append((t, body["metadata"]["name"])),
        60,
    )
    return inf, events


def test_paths() -> None:
    assert DEPLOYMENTS.path(None) == "/apis/apps/v1/deployments"
    assert DEPLOYMENTS.path("ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert SERVICES.path("ns") == "/api/v1/namespaces/ns/services"


def test_trimmed_keeps_what_reconcilers_read() -> None:
    t = trimmed(deployment("d", 5, ready=2))
    assert "managedFields" not in t["metadata"]
    assert t["spec"] == {"replicas": 2}
    assert t["status"] == {"availableReplicas": 2}
    assert t["metadata"]["labels"] == {"x": "1"}


def test_reads_wait_for_the_first_list_then_filter() -> None:
    inf, _ = informer()
    inf.written(deployment("d1", 5, labels={"x": "1"}))
    assert inf.items("a", None) is None  # not synced: the caller asks the apiserver
    inf.synced.set()
    inf.written(deployment("d2", 6, labels={"x": "2"}))
    inf.written(deployment("d3", 7, ns="b"))
    assert sorted(d["metadata"]["name"] for d in inf.items("a", None) or []) == ["d1", "d2"]
    assert [d["metadata"]["name"] for d in inf.items("a", {"x": "2"}) or []] == ["d2"]
    assert inf.items("a", {"x": "2", "y": "1"}) == []


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    inf, _ = informer()
    inf.synced.set()
    inf.written(deployment("d", 10, ready=1))
    inf.written(deployment("d", 9, ready=0))  # a late watch event from before our write
    assert (inf.items("a", None) or [])[0]["status"]["availableReplicas"] == 1
    inf.written(deployment("d", 11, ready=2))
    assert (inf.items("a", None) or [])[0]["status"]["availableReplicas"] == 2
    inf.deleted("a", "d")
    assert inf.items("a", None) == []


def test_a_relist_reports_what_vanished_and_what_changed() -> None:
    inf, events = informer()
    inf._replace([deployment("keep", 1), deployment("gone", 2), deployment("moved", 3)])
    assert sorted(events) == [("ADDED", "gone"), ("ADDED", "keep"), ("ADDED", "moved")]
    events.clear()
    inf._replace([deployment("keep", 1), deployment("moved", 8), deployment("new", 9)])
    assert sorted(events) == [("ADDED", "new"), ("DELETED", "gone"), ("MODIFIED", "moved")]


def test_kinds_not_kept_hold_only_identity() -> None:
    inf, _ = informer(SERVICES)
    inf.synced.set()
    inf.written({**deployment("s", 1), "apiVersion": "v1", "kind": "Service"})
    held = inf._store.get("a", "s")
    assert held is not None
    assert set(held["metadata"]) == {"name", "namespace", "uid", "resourceVersion", "ownerReferences"}
    assert "status" not in held


def test_the_registry_serves_only_kept_kinds_in_scope() -> None:
    registry = Informers()
    ns_a = Informer(k8s.ApiClient(), DEPLOYMENTS, "a", "m=1", lambda *_: None, 60)
    registry.add(ns_a)
    registry.add(Informer(k8s.ApiClient(), SERVICES, None, "m=1", lambda *_: None, 60))
    ns_a.synced.set()
    assert registry.holds("apps/v1", "Deployment", "a")
    assert not registry.holds("apps/v1", "Deployment", "b")
    assert not registry.holds("v1", "Service", "a")
    registry.written(deployment("d", 1, ns="a"))
    assert [d["metadata"]["name"] for d in registry.items("apps/v1", "Deployment", "a", None) or []] == ["d"]
    assert registry.items("apps/v1", "Deployment", "b", None) is None


@pytest.mark.parametrize(
    ("patterns", "scopes"),
    [
        (None, [None]),
        ([], [None]),
        (["team-a", "team-b", "team-a"], ["team-a", "team-b"]),
        (["team-*"], None),
        (["!kube-system"], None),
        (["a,b"], None),
    ],
)
def test_informer_scopes(patterns: list[str] | None, scopes: list[str | None] | None) -> None:
    assert informer_scopes(patterns) == scopes


def test_indexed_reads_follow_relabels_deletes_and_relists() -> None:
    inf, _ = informer()
    inf.synced.set()
    inf._replace([deployment(f"d{i}", i + 1, labels={"owner": f"ep{i % 3}", "x": "1"}) for i in range(9)])
    names = lambda labels: sorted(b["metadata"]["name"] for b in inf.items("a", labels) or [])  # noqa: E731
    assert names({"owner": "ep1"}) == ["d1", "d4", "d7"]
    assert names({"owner": "ep1", "x": "2"}) == []  # every asked label must match
    inf.written(deployment("d1", 20, labels={"owner": "ep2", "x": "1"}))  # relabelled
    assert names({"owner": "ep1"}) == ["d4", "d7"]
    assert "d1" in names({"owner": "ep2"})
    inf.deleted("a", "d4")
    assert names({"owner": "ep1"}) == ["d7"]
    ep1 = {"owner": "ep1"}
    inf._replace([deployment("d7", 30, labels=ep1), deployment("n", 31, labels=ep1)])
    assert names({"owner": "ep1"}) == ["d7", "n"]
    assert names({"owner": "ep2"}) == []


_VALUES = st.sampled_from(["1", "2", "3"])
_LABELS = st.dictionaries(st.sampled_from(["owner", "x", "abtest"]), _VALUES, max_size=3)
_QUERY = st.dictionaries(st.sampled_from(["owner", "x"]), st.sampled_from(["1", "2"]), max_size=2)
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "pop"]),
        st.sampled_from(["a", "b"]),
        st.sampled_from([f"o{i}" for i in range(6)]),
        _LABELS,
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS, query=_QUERY)
def test_an_indexed_store_answers_as_a_scan_would(ops: list, query: dict[str, str]) -> None:
    indexed, plain = Store(("owner", "abtest")), Store()
    for op, namespace, name, labels in ops:
        for store in (indexed, plain):
            if op == "put":
                store.put(namespace, name, {"metadata": {"name": name, "labels": labels}})
            else:
                store.pop(namespace, name)
    for namespace in ("a", "b"):
        got = sorted(b["metadata"]["name"] for b in indexed.matching(namespace, query))
        want = sorted(b["metadata"]["name"] for b in plain.matching(namespace, query))
        assert got == want


def _lag(kind: str) -> tuple[float, float]:
    child = WATCH_LAG_SECONDS.labels(kind)
    count = sum(b.get() for b in child._buckets)
    return count, child._sum.get()


def test_a_write_is_timed_until_the_watch_brings_it_back() -> None:
    now = [100.0]
    echoes = WriteEchoes("EchoTest", clock=lambda: now[0])
    echoes.wrote(("a", "x"), before=5, after=5)  # the apiserver changed nothing: no event comes
    echoes.wrote(("a", "y"), before=5, after=7)
    assert len(echoes) == 1
    now[0] = 100.4
    echoes.seen(("a", "y"), 6)  # an older version: still waiting
    echoes.seen(("a", "x"), 9)  # nothing was waited for
    assert _lag("EchoTest") == (0, 0.0)
    now[0] = 100.75
    echoes.seen(("a", "y"), 8)  # a later version carries our write too
    count, total = _lag("EchoTest")
    assert count == 1 and abs(total - 0.75) < 1e-9
    echoes.seen(("a", "y"), 9)  # counted once
    assert _lag("EchoTest")[0] == 1
    echoes.wrote(("a", "z"), before=None, after=3)
    echoes.forget(("a", "z"))  # deleted before its echo
    assert len(echoes) == 0


def test_the_informer_waits_only_for_writes_that_changed_the_object() -> None:
    inf, _ = informer()
    inf.written(deployment("new", 4))
    assert len(inf.echoes) == 1
    inf.echoes.forget(("a", "new"))
    inf.written(deployment("new", 4))  # the same version again: an apply that changed nothing
    assert len(inf.echoes) == 0
    inf.written(deployment("new", 3))  # older than held: not taken, not waited for
    assert len(inf.echoes) == 0


def test_a_relist_brings_back_the_writes_it_carries() -> None:
    """After an expired watch the informer lists again: a write the list already shows is no
    longer waited for (it would otherwise count as lag until the object's next event), and a
    write to an object the list no longer has is forgotten."""
    inf, _ = informer()
    inf._replace([deployment("x", 1), deployment("y", 1), deployment("z", 1)])
    inf.written(deployment("x", 4))
    inf.written(deployment("y", 5))
    inf.written(deployment("z", 6))
    assert len(inf.echoes) == 3
    inf._replace([deployment("x", 4), deployment("y", 3)])  # x's write listed, y's not yet, z gone
    assert len(inf.echoes) == 1
    inf._replace([deployment("x", 4), deployment("y", 9)])
    assert len(inf.echoes) == 0


def test_reads_are_private_copies_and_writers_cannot_reach_the_cache() -> None:
    """The store holds its objects packed: changing a body after writing it, or a body a read
    returned, changes nothing held; the version and the label index are read without a decode."""
    inf, _ = informer()
    inf.synced.set()
    body = deployment("d", 5, labels={"owner": "ep"}, ready=1)
    inf.written(body)
    body["status"]["availableReplicas"] = 0  # the writer's copy, changed afterwards
    first = (inf.items("a", {"owner": "ep"}) or [None])[0]
    assert first is not None and first["status"]["availableReplicas"] == 1
    first["status"]["availableReplicas"] = 7
    first["metadata"]["labels"]["owner"] = "other"
    again = inf.items("a", {"owner": "ep"}) or []
    assert [d["status"]["availableReplicas"] for d in again] == [1]
    assert inf._store.version("a", "d") == 5 and inf._store.version("a", "missing") is None
    assert inf.items("a", {"owner": "other"}) == []
