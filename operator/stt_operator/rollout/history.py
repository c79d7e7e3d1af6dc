"""A person's requests on the recorded revision history: retry a rolled-back revision, go back
to revision N (`kubectl stt retry` / `kubectl stt undo --to-revision N`, docs/rollouts.md).

Both arrive as annotations on the ModelDeployment and are planned here, purely, from the
annotations, the spec and `status.revisions`; the controller applies the plan (a history edit
in status, at most one `spec.model` write, Events) and removes the annotation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from stt_operator.api.modeldeployment import REVISION_ROLLED_BACK, ModelDeploymentStatus, RevisionRecord
from stt_operator.rollout.plan import EventUpdate

ANNOTATION_RETRY = "stt.dev/retry"  # any value: let the last rolled-back revision roll out again
ANNOTATION_UNDO = "stt.dev/undo-to-revision"  # a revision number from status.revisions
REVISION_RETRIED = "Retried"  # history outcome of a rolled-back revision a person let go again


@dataclass
class HistoryPlan:
    revisions: list[RevisionRecord] | None = None  # the new status.revisions (None: unchanged)
    model: str | None = None  # write spec.model.name = model
    events: list[EventUpdate] = field(default_factory=list)
    consumed: list[str] = field(default_factory=list)


def trim(revisions: Sequence[RevisionRecord], limit: int) -> list[RevisionRecord]:
    """The newest `limit` entries (copies): what `revisionHistoryLimit` keeps (also after it is
    lowered)."""
    return [r.model_copy() for r in revisions][-limit:]


def _retry(history: list[RevisionRecord]) -> tuple[bool, str]:
    """Mark the newest rolled-back entry Retried, so the rollout planner tries it again."""
    for entry in reversed(history):
        if entry.outcome == REVISION_ROLLED_BACK:
            entry.outcome = REVISION_RETRIED
            return True, f"revision {entry.revision} (model {entry.model})"
    return False, ""


def plan_history_requests(
    annotations: Mapping[str, str],
    status: ModelDeploymentStatus,
    spec_model: str | None,
    limit: int,
    current_digest: Callable[[str], str | None],
) -> HistoryPlan:
    """Plan retry and undo. `current_digest(model)` is the model_digest of the STTModel as it is
    now (None when it does not exist): undo only goes back to exactly the recorded revision."""
    plan = HistoryPlan()
    stored = status.revisions
    history = trim(stored, limit)
    if history != stored:
        plan.revisions = history
    if ANNOTATION_RETRY in annotations:
        plan.consumed.append(ANNOTATION_RETRY)
        retried, what = _retry(history)
        if retried:
            plan.revisions = history
            plan.events.append(EventUpdate("Normal", "RetryRequested", f"{what} rolls out again"))
        else:
            plan.events.append(
                EventUpdate("Warning", "RetryIgnored", "no rolled-back revision in status.revisions to retry")
            )
    if ANNOTATION_UNDO in annotations:
        plan.consumed.append(ANNOTATION_UNDO)
        error = _undo(plan, history, annotations[ANNOTATION_UNDO], status, spec_model, limit, current_digest)
        if error:
            plan.events.append(EventUpdate("Warning", "UndoFailed", error))
    return plan


def _undo(
    plan: HistoryPlan,
    history: list[RevisionRecord],
    value: str,
    status: ModelDeploymentStatus,
    spec_model: str | None,
    limit: int,
    current_digest: Callable[[str], str | None],
) -> str | None:
    """Point spec.model at revision N's model; returns why not, or None."""
    try:
        number = int(value.strip())
    except ValueError:
        return f"{ANNOTATION_UNDO}={value!r} is not a revision number"
    kept = ", ".join(str(r.revision) for r in history) or "none"
    entry = next((r for r in history if r.revision == number), None)
    if entry is None:
        return (
            f"revision {number} is not in the recorded history (kept: {kept};"
            f" spec.rollback.revisionHistoryLimit {limit})"
        )
    if spec_model is None:
        return "undo needs spec.model: with spec.selector the operator chooses the model"
    model = entry.model
    digest = current_digest(model)
    if digest is None:
        return f"revision {number}'s model {model} no longer exists"
    if entry.model_digest and digest != entry.model_digest:
        return (
            f"STTModel {model} changed since revision {number} (digest {entry.model_digest}, now {digest});"
            " restore its spec to get that revision back"
        )
    if entry.revision_id == status.stable_revision and spec_model == model:
        plan.events.append(
            EventUpdate("Normal", "UndoRequested", f"revision {number} (model {model}) already serves")
        )
        return None
    if entry.outcome == REVISION_ROLLED_BACK:
        entry.outcome = REVISION_RETRIED  # going back to it on purpose is a retry
        plan.revisions = history
    plan.model = model
    plan.events.append(
        EventUpdate("Normal", "UndoRequested", f"spec.model set to {model} (revision {number}); it rolls out")
    )
    return None
