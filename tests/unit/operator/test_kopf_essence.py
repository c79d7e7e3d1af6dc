"""Kopf's essence of an object, built from less of it (controllers/kopf_tuning.py): the same
result as Kopf's own storage for any body, so the last-handled-configuration annotations it
writes and compares (ABTests have a deletion handler) do not change."""

from __future__ import annotations

from typing import Any

import kopf
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_operator import API_GROUP
from stt_operator.controllers.kopf_tuning import LeanDiffBaseStorage, tune_kopf
from stt_operator.settings import OperatorSettings

KEY = "last-handled-configuration"
names = st.text("abcdefgh-", min_size=1, max_size=8)
leaves = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), names)
values = st.recursive(
    leaves,
    lambda inner: st.dictionaries(names, inner, max_size=3) | st.lists(inner, max_size=3),
    max_leaves=8,
)
annotation_keys = st.sampled_from(
    [
        f"{API_GROUP}/{KEY}",
        f"{API_GROUP}/promote",
        "kopf.zalando.org/last-handled-configuration",
        "kubectl.kubernetes.io/last-applied-configuration",
        "other.example/note",
    ]
)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": draw(names),
        "namespace": draw(names),
        "uid": draw(names),
        "resourceVersion": str(draw(st.integers(1, 10**6))),
        "generation": draw(st.integers(1, 9)),
        "managedFields": draw(st.lists(values, max_size=2)),
        "finalizers": draw(st.lists(names, max_size=2)),
    }
    if draw(st.booleans()):
        metadata["labels"] = draw(st.dictionaries(names, names, max_size=3))
    if draw(st.booleans()):
        metadata["annotations"] = draw(st.dictionaries(annotation_keys, names, max_size=4))
    if draw(st.booleans()):
        metadata["ownerReferences"] = [
            {
                "apiVersion": "stt.dev/v1alpha1",
                "kind": draw(st.sampled_from(["ModelDeployment", "ABTest"])),
                "name": draw(names),
            }
        ]
    body: dict[str, Any] = {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": draw(st.sampled_from(["ABTest", "STTModel"])),
    }
    body["metadata"] = metadata
    body["spec"] = draw(st.dictionaries(names, values, max_size=4))
    if draw(st.booleans()):
        body["status"] = draw(st.dictionaries(names, values, max_size=4))
    return body


@settings(max_examples=300, deadline=None)
@given(bodies())
def test_the_lean_essence_is_kopfs_essence(raw: dict[str, Any]) -> None:
    ours = LeanDiffBaseStorage(prefix=API_GROUP, key=KEY)
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP, key=KEY)
    assert ours.build(body=kopf.Body(raw)) == kopfs.build(body=kopf.Body(raw))


def test_a_status_field_handler_still_gets_the_full_body() -> None:
    raw = {
        "apiVersion": "v1",
        "kind": "X",
        "metadata": {"name": "x"},
        "spec": {"a": 1},
        "status": {"phase": "Ready"},
    }
    essence = LeanDiffBaseStorage(prefix=API_GROUP, key=KEY).build(
        body=kopf.Body(raw), extra_fields=[("status", "phase")]
    )
    assert essence == {"spec": {"a": 1}, "status": {"phase": "Ready"}}


def test_the_operator_uses_it() -> None:
    settings_ = kopf.OperatorSettings()
    tune_kopf(settings_, OperatorSettings())
    assert isinstance(settings_.persistence.diffbase_storage, LeanDiffBaseStorage)
