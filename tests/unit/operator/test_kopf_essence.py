"""Kopf's essence of an object, built from less of it (controllers/kopf_tuning.py): the same
result as Kopf's own storage for any body, so the last-handled-configuration annotations it
writes and compares (ABTests have a deletion handler) do not change."""

from __future__ import annotations

from typing import Any

import kopf
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_operator import API_GROUP
from stt_operator.controllers.kopf_tuning import KINDS_WITHOUT_CHANGE_HANDLERS, LeanDiffBaseStorage, tune_kopf
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


def test_kinds_without_change_handlers_get_an_empty_essence() -> None:
    storage = LeanDiffBaseStorage(prefix=API_GROUP, key=KEY, uncompared_kinds=KINDS_WITHOUT_CHANGE_HANDLERS)
    annotated = {f"{API_GROUP}/{KEY}": '{"spec": {"old": 1}}'}
    for kind in ("STTModel", "ModelDeployment"):
        body = kopf.Body(
            {
                "apiVersion": "stt.dev/v1alpha1",
                "kind": kind,
                "metadata": {"annotations": annotated},
                "spec": {"a": 1},
            }
        )
        assert storage.fetch(body=body) == {}  # an older operator's annotation is not even parsed
        assert storage.build(body=body) == {}
    abtest = kopf.Body(
        {"apiVersion": "stt.dev/v1alpha1", "kind": "ABTest", "metadata": {"annotations": annotated}}
    )
    assert storage.fetch(body=abtest) == {"spec": {"old": 1}}
    assert storage.build(body=kopf.Body({**abtest, "spec": {"a": 1}})) == {"spec": {"a": 1}}


def test_no_uncompared_kind_has_a_kopf_change_handler() -> None:
    # In a fresh interpreter: registering the handlers fills Kopf's process-wide registry.
    import json
    import subprocess
    import sys

    program = """
import json
from kubernetes import client
from stt_operator.controllers import context
from stt_operator.services.kube import Kube
from stt_operator.settings import OperatorSettings
context._current = context.OperatorContext(settings=OperatorSettings(), kube=Kube(client.ApiClient()))
from stt_operator.controllers import handlers  # noqa: F401
from kopf._core.intents import registries
kind_of = {plural: kind for kind, plural in handlers.PLURALS.items()}
changing = registries.get_default_registry()._changing.get_all_handlers()
plurals = {h.selector.plural or h.selector.any_name for h in changing}
print(json.dumps(sorted(kind_of[p] for p in plurals)))
"""
    run = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with_change_handlers = set(json.loads(run.stdout.strip().splitlines()[-1]))
    assert "ABTest" in with_change_handlers  # its on.delete handler: the check reads the registry
    assert not with_change_handlers & KINDS_WITHOUT_CHANGE_HANDLERS
