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

from stt_operator.api.common import set_condition
from stt_operator.rollout.plan import ConditionUpdate, EventUpdate
from stt_operator.services import notify

log = logging.getLogger(__name__)


class StatusWriter:
    def __init__(self, body: Mapping[str, Any], now: datetime | None = None) -> None:
        self.body = body
        self.now = now or datetime.now(UTC)
        self.old: Mapping[str, Any] = body.get("status") or {}
        self.generation: int = int(body["metadata"].get("generation") or 0)
        self.conditions: list[dict[str, Any]] = [dict(c) for c in self.old.get("conditions") or []]
        self.fields: dict[str, Any] = {}
        self.events: list[EventUpdate] = []

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
        before = self.old_condition(type_)
        after = next((c for c in self.conditions if c.get("type") == type_), None)
        if after is None:
            return False
        return before is None or (before.get("status"), before.get("reason")) != (
            after.get("status"),
            after.get("reason"),
        )

    def commit(self, patch: kopf.Patch) -> None:
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
