"""Types shared by every rollout strategy's planner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stt_operator.api.modeldeployment import ModelDeploymentStatus
from stt_operator.builders.metadata import LABEL_MODEL, LABEL_REVISION
from stt_operator.builders.serving import Revision, deployment_available

if TYPE_CHECKING:  # rollout/monitoring.py imports this module
    from stt_operator.rollout.monitoring import MonitoringRequest


# Waiting on the cluster (a revision to become Available, to scale): the owned Deployment's
# watch wakes the endpoint the moment it changes, so this is only a safety net (and the
# runner caps it at reconcile_interval_s). At 2 s, 1,000 endpoints waiting on a slow
# controller-manager made 95,000 reconciles in four minutes (bench/scale/RESULTS.md).
WAIT_REQUEUE_S = 10.0


@dataclass(frozen=True)
class ObservedRevision:
    """A revision's serving objects as found in the cluster."""

    revision_id: str
    model: str
    available: bool
    replicas: int | None = None  # the Deployment's spec.replicas as found (None: unknown)
    ready_replicas: int = 0  # status.availableReplicas


@dataclass(frozen=True)
class ConditionUpdate:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


@dataclass(frozen=True)
class EventUpdate:
    type: str  # "Normal" | "Warning"
    reason: str
    message: str


@dataclass(frozen=True)
class AnalysisRequest:
    """A look the controller must take (query Prometheus) before the planner can go on.

    The controller runs the analysis engine and plans again with the result."""

    step: int
    metrics: tuple[str, ...]  # names in spec.analysis.metrics
    candidate: str  # revision id under test
    candidate_variant: str  # the evaluator's variant label: canary | preview
    baseline: str | None  # stable revision id
    start: datetime  # counts are cumulative since then


@dataclass(frozen=True)
class SmokeRequest:
    """A smoke transcription the controller must run through the revision's own Service
    before the planner can go on (the controller plans again with the `SmokeResult`)."""

    revision: str
    model: str
    timeout_s: float


@dataclass(frozen=True)
class SmokeResult:
    revision: str
    outcome: str  # Passed | Failed (a wrong transcript) | Error (no answer)
    expected: str
    transcript: str | None
    message: str


@dataclass
class EndpointPlan:
    """What the controller should do in this reconcile, in order.

    `ensure` objects first, then the `route` (only ever naming available revisions), then
    `delete`. `status` is the endpoint's whole status after this plan: a copy of the planner's
    input that the planner edits; the controller writes the fields that differ from the input."""

    status: ModelDeploymentStatus
    ensure: list[tuple[Revision, str]] = field(default_factory=list)  # (revision, role)
    route: dict[str, int] | None = None  # revision id -> weight; None = leave the route alone
    delete: list[str] = field(default_factory=list)  # revision ids
    conditions: list[ConditionUpdate] = field(default_factory=list)
    events: list[EventUpdate] = field(default_factory=list)
    requeue_after: float | None = None
    replicas: dict[str, int] = field(default_factory=dict)  # revision id -> replicas (else spec.replicas)
    analysis_request: AnalysisRequest | None = None  # set: nothing else in this plan is meant to apply
    smoke_request: SmokeRequest | None = None  # set: likewise, the controller runs it and plans again
    consumed: list[str] = field(default_factory=list)  # annotations the plan acted on: clear them
    # Monitoring after promotion (rollout/monitoring.py): a look to take (the controller takes it
    # and plans again, like analysis_request) and a revision to go back to (the controller sets
    # the stt.dev/undo-to-revision annotation; rollout/history.py plans it on the next reconcile).
    monitoring_request: MonitoringRequest | None = None
    undo_to_revision: int | None = None

    @classmethod
    def from_status(cls, status: ModelDeploymentStatus) -> EndpointPlan:
        """An empty plan whose status starts as a copy of `status` (the input stays untouched)."""
        return cls(status=status.model_copy(deep=True))

    def set_status(self, **fields: Any) -> None:
        """Set status fields by their Python names; assignment (unlike `model_copy(update=...)`)
        raises on a misspelt name and marks each field as set, so the controller writes it."""
        for name, value in fields.items():
            setattr(self.status, name, value)


def observed_revisions(deployments: list[dict[str, Any]]) -> dict[str, ObservedRevision]:
    """Each revision's Triton Deployment as found (by its revision label), keyed by revision id."""
    observed: dict[str, ObservedRevision] = {}
    for deployment in deployments:
        labels = deployment["metadata"].get("labels") or {}
        revision_id = labels.get(LABEL_REVISION)
        if revision_id:
            observed[revision_id] = ObservedRevision(
                revision_id,
                labels.get(LABEL_MODEL, ""),
                deployment_available(deployment),
                replicas=(deployment.get("spec") or {}).get("replicas"),
                ready_replicas=int((deployment.get("status") or {}).get("availableReplicas") or 0),
            )
    return observed


def settle(plan: EndpointPlan, weight: int) -> None:
    """The status of an endpoint with no revision in flight, all traffic where `weight` says
    (100 after a promotion, 0 back on stable): no canary, no step, no step clock."""
    plan.set_status(
        canary_revision=None,
        canary_model=None,
        current_weight=weight,
        current_step_index=None,
        step_started_at=None,
    )


def revision_models(
    observed: Mapping[str, ObservedRevision], desired: Revision, status: ModelDeploymentStatus
) -> dict[str, str]:
    """The model each revision the route may name serves (the route's labels): those found,
    the desired one, and the stable one even when its Deployment is gone."""
    models = {rid: o.model for rid, o in observed.items()} | {desired.id: desired.model}
    if status.stable_revision:
        models.setdefault(status.stable_revision, status.stable_model or "")
    return models
