"""The typed status end to end: the planner's new ModelDeploymentStatus becomes merge-patch
fields (controllers/status.py), and a status the API rejects is read leniently (api/common.py)."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from stt_operator.api.modeldeployment import (
    AnalysisState,
    ModelDeploymentStatus,
    MonitoringStatus,
    RevisionRecord,
)
from stt_operator.controllers.status import StatusWriter, status_changes

STORED: dict[str, Any] = {
    "phase": "Progressing",
    "stableRevision": "rev-a",
    "canaryRevision": "rev-b",
    "currentWeight": 20,
    "stepStartedAt": "2026-01-01T00:00:00Z",
    "analysis": {"startedAt": "2026-01-01T00:00:00Z", "failures": 0, "lastCheckedAt": "2026-01-01T00:01:00Z"},
    "revisions": [{"revision": 1, "revisionId": "rev-a", "model": "model-a", "outcome": "Serving"}],
    "conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "m"}],
    "observedGeneration": 3,
}


def stored() -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(STORED)


def test_unchanged_fields_are_not_written() -> None:
    old = stored()
    assert status_changes(old, old.model_copy(deep=True)) == {}
    # Assigning the value a field already has writes nothing either.
    new = old.model_copy(deep=True)
    new.current_weight = 20
    new.stable_revision = "rev-a"
    assert status_changes(old, new) == {}


def test_a_changed_field_is_written_in_camel_case_json() -> None:
    old = stored()
    new = old.model_copy(deep=True)
    new.current_weight = 50
    new.phase = "Paused"
    assert status_changes(old, new) == {"currentWeight": 50, "phase": "Paused"}


def test_a_cleared_field_is_written_as_null() -> None:
    old = stored()
    new = old.model_copy(deep=True)
    new.canary_revision = None
    new.step_started_at = None
    new.analysis = None
    assert status_changes(old, new) == {"canaryRevision": None, "stepStartedAt": None, "analysis": None}


def test_clearing_a_field_that_was_never_there_writes_nothing() -> None:
    old = stored()
    new = old.model_copy(deep=True)
    new.last_rollback = None  # absent on the apiserver: nothing to clear
    new.held_by = None
    assert status_changes(old, new) == {}


def test_defaults_the_model_fills_in_are_not_written() -> None:
    """An absent list (analysisRuns) reads as [] but is never written as []; a new nested
    object is written with the fields it was given, not with its defaults."""
    old = ModelDeploymentStatus.model_validate({"stableRevision": "rev-a"})
    new = old.model_copy(deep=True)
    new.monitoring = MonitoringStatus(revision="rev-a", window_start="2026-01-01T00:00:00Z", looks=0)
    changes = status_changes(old, new)
    assert changes == {"monitoring": {"revision": "rev-a", "windowStart": "2026-01-01T00:00:00Z", "looks": 0}}
    assert "analysisRuns" not in changes and "revisions" not in changes and "conditions" not in changes


def test_a_replaced_nested_object_clears_the_keys_it_no_longer_has() -> None:
    """A merge patch merges objects key by key: a key the new object lacks must be named with
    null, or the old value would stay (the previous step's lastCheckedAt, a judged revision's
    verdict)."""
    old = stored()
    new = old.model_copy(deep=True)
    new.analysis = AnalysisState(
        started_at="2026-01-01T00:05:00Z", failures=0, inconclusive=0, consecutive_successes=0, no_data=0
    )
    assert status_changes(old, new) == {
        "analysis": {
            "lastCheckedAt": None,
            "startedAt": "2026-01-01T00:05:00Z",
            "failures": 0,
            "inconclusive": 0,
            "consecutiveSuccesses": 0,
            "noData": 0,
        }
    }


def test_an_edited_nested_object_and_list_are_written_whole() -> None:
    old = stored()
    new = old.model_copy(deep=True)
    assert new.analysis is not None
    new.analysis = new.analysis.model_copy(update={"failures": 1})
    new.revisions = [
        *new.revisions,
        RevisionRecord(
            revision=2, revision_id="rev-b", model="model-b", model_digest=None, outcome="Serving"
        ),
    ]
    changes = status_changes(old, new)
    assert changes["analysis"] == {**STORED["analysis"], "failures": 1}
    # Explicit None inside a new record is kept (the merge patch removes that key).
    assert changes["revisions"] == [
        *STORED["revisions"],
        {"revision": 2, "revisionId": "rev-b", "model": "model-b", "modelDigest": None, "outcome": "Serving"},
    ]


def test_the_writer_patches_only_what_changed() -> None:
    body = {"metadata": {"name": "asr", "namespace": "ns", "generation": 3}, "status": STORED}
    old = stored()
    new = old.model_copy(deep=True)
    new.canary_revision = None
    new.current_weight = 100
    writer = StatusWriter(body)
    writer.set(**status_changes(old, new))
    patch = kopf.Patch()
    writer.commit(patch)
    assert patch["status"] == {"canaryRevision": None, "currentWeight": 100}


# --- reading a status the API rejects ------------------------------------------------------------


def test_a_valid_status_is_read_whole() -> None:
    status, ignored = ModelDeploymentStatus.parse_lenient(STORED)
    assert ignored == [] and status == stored()
    assert ModelDeploymentStatus.parse_lenient(None) == (ModelDeploymentStatus(), [])


def test_rejected_values_are_left_out_and_named() -> None:
    legacy = {
        **STORED,
        "phase": "Rolling",  # a phase an older operator wrote
        "currentWeight": 150,
        "legacyField": {"x": 1},  # unknown: ignored like the apiserver prunes it
        "revisions": [
            *STORED["revisions"],
            {"revisionId": "rev-old"},  # no revision number, no model
            {"revision": 3, "revisionId": "rev-c", "model": "model-c", "outcome": "RolledBack"},
        ],
        "analysis": "not an object",
    }
    status, ignored = ModelDeploymentStatus.parse_lenient(legacy)
    assert ignored == ["status.analysis", "status.currentWeight", "status.phase", "status.revisions[1]"]
    assert status.phase is None and status.current_weight is None and status.analysis is None
    # Everything else is kept, a list without only its rejected items.
    assert status.stable_revision == "rev-a" and status.canary_revision == "rev-b"
    assert [r.revision for r in status.revisions] == [1, 3]
    assert [c.type for c in status.conditions] == ["Ready"]


def test_a_rejected_list_is_left_out_whole_when_the_list_itself_is_wrong() -> None:
    status, ignored = ModelDeploymentStatus.parse_lenient({"stableRevision": "rev-a", "revisions": "none"})
    assert ignored == ["status.revisions"] and status.revisions == [] and status.stable_revision == "rev-a"


@pytest.mark.parametrize("bad", [{"phase": "Rolling"}, {"revisions": [{"revisionId": "x"}]}])
def test_the_controller_plans_from_a_status_an_older_operator_wrote(
    bad: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not InvalidSpec, not a crash: the rejected values are ignored and the endpoint is served."""
    from tests.unit.operator.test_monitoring import _Kube

    from stt_operator.builders.metadata import LABEL_DEPLOYMENT, LABEL_MODEL, LABEL_REVISION
    from stt_operator.builders.serving import Revision
    from stt_operator.controllers import modeldeployment as controller
    from stt_operator.controllers.context import OperatorContext
    from stt_operator.settings import OperatorSettings

    model = {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "STTModel",
        "metadata": {"name": "model-a", "namespace": "ns"},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    revision = Revision("model-a", controller.model_digest(model))
    deployment = {
        "kind": "Deployment",
        "metadata": {
            "name": "asr-a",
            "generation": 1,
            "labels": {LABEL_DEPLOYMENT: "asr", LABEL_REVISION: revision.id, LABEL_MODEL: "model-a"},
        },
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "availableReplicas": 1,
            "updatedReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }
    body = {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "asr", "namespace": "ns", "generation": 1, "uid": "u1", "annotations": {}},
        "spec": {"model": {"name": "model-a"}, "strategy": {"type": "Immediate"}},
        "status": {"stableRevision": revision.id, "stableModel": "model-a", **bad},
    }
    monkeypatch.setattr(kopf, "event", lambda *a, **k: None)
    ctx = OperatorContext(
        settings=OperatorSettings(capacity_preflight=False), kube=_Kube([model, deployment])
    )  # type: ignore[arg-type]
    patch = kopf.Patch()
    controller.reconcile(body, patch, ctx)
    assert patch["status"]["phase"] == "Healthy"
    ready = next(c for c in patch["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Serving")
    assert [r["revisionId"] for r in patch["status"]["revisions"]] == [revision.id]
