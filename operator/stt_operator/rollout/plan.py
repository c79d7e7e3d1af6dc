"""Types shared by every rollout strategy's planner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stt_operator.builders.serving import Revision


@dataclass(frozen=True)
class ObservedRevision:
    """A revision's serving objects as found in the cluster."""

    revision_id: str
    model: str
    available: bool


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


@dataclass
class EndpointPlan:
    """What the controller should do in this reconcile, in order.

    `ensure` objects first, then the `route` (only ever naming available revisions), then
    `delete`. `status` holds the fields to merge into `.status`."""

    ensure: list[tuple[Revision, str]] = field(default_factory=list)  # (revision, role)
    route: dict[str, int] | None = None  # revision id -> weight; None = leave the route alone
    delete: list[str] = field(default_factory=list)  # revision ids
    status: dict[str, Any] = field(default_factory=dict)
    conditions: list[ConditionUpdate] = field(default_factory=list)
    events: list[EventUpdate] = field(default_factory=list)
    requeue_after: float | None = None
