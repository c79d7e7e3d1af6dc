"""Collect a reconcile's status changes and Events, then write them once.

Conditions follow the Kubernetes API conventions (keyed by type, lastTransitionTime moves
only when `status` changes). Events are emitted only on a transition, so a reconcile that
changes nothing emits nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import BaseModel

from stt_operator.api.common import condition_moved, set_condition
from stt_operator.rollout.plan import ConditionUpdate, EventUpdate
from stt_operator.services import notify

log = logging.getLogger(__name__)


def status_changes(old: BaseModel, new: BaseModel) -> dict[str, Any]:
    """The status fields (camelCase, JSON values) to merge so that `old` becomes `new`.

    Only fields whose value differs are named. Both are dumped as set (`exclude_unset`: what
    was read from the apiserver or assigned, never a default the model fills in), so an absent
    `analysisRuns` is not written as `[]`. A field that became None is named with None, which
    the merge patch turns into a removal; inside an object, so is every key that `new` no
    longer has, since a merge patch keeps what it does not name."""
    before = old.model_dump(by_alias=True, mode="json", exclude_unset=True)
    after = new.model_dump(by_alias=True, mode="json", exclude_unset=True)
    return {key: _merged(before.get(key), value) for key, value in after.items() if value != before.get(key)}


def _merged(before: Any, after: Any) -> Any:
    if isinstance(before, dict) and isinstance(after, dict):
        cleared = {key: None for key in before if key not in after}
        return {**cleared, **{key: _merged(before.get(key), value) for key, value in after.items()}}
    return after


class StatusWriter:
    def __init__(self, body: Mapping[str, Any], now: datetime | None = None) -> None:
        self.body = body
        self.now = now or datetime.now(UTC)
        self.old: Mapping[str, Any] = body.get("status") or {}
        self.generation: int = int(body["metadata"].get("generation") or 0)
        self.conditions: list[dict[str, Any]] = [dict(c) for c in self.old.get("conditions") or []]
        self.fields: dict[str, Any] = {}
        self.events: list[EventUpdate] = []
        self.withheld = False

    def withhold(self) -> None:
        """Write nothing this time: no status (not even observedGeneration), no Event."""
        self.withheld = True

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions = set_condition(
            self.conditions,
            type_,
            status,
            reason,
            message,
            generation=self.generation,
            now=self.now,
        )

    def apply_conditions(self, updates: Iterable[ConditionUpdate]) -> None:
        for update in updates:
            self.condition(update.type, update.status, update.reason, update.message)

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(EventUpdate(type_, reason, message))

    def old_condition(self, type_: str) -> Mapping[str, Any] | None:
        return next((c for c in self.old.get("conditions") or [] if c.get("type") == type_), None)

    def changed(self, type_: str) -> bool:
        """Did this reconcile change the condition's status or reason?"""
        after = next((c for c in self.conditions if c.get("type") == type_), None)
        if after is None:
            return False
        return condition_moved(self.old_condition(type_), after.get("status", ""), after.get("reason", ""))

    def commit(self, patch: kopf.Patch) -> None:
        if self.withheld:
            return
        for key, value in self.fields.items():
            if self.old.get(key) != value:
                patch.status[key] = value
        if self.conditions != list(self.old.get("conditions") or []):
            patch.status["conditions"] = self.conditions
        if self.old.get("observedGeneration") != self.generation:
            patch.status["observedGeneration"] = self.generation
        for event in self.events:
            try:
                kopf.event(self.body, type=event.type, reason=event.reason, message=event.message)
            except Exception:  # an Event is best-effort; never fail a reconcile for it
                log.exception("could not post event %s", event.reason)
            notify.publish(self.body, event.type, event.reason, event.message)
