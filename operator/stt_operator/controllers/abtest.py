"""ABTest reconciler. The traffic-splitting controller arrives with its own issue; until then a
valid ABTest is accepted and parked in phase Pending, and an invalid one says why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from stt_operator.api import ABTest
from stt_operator.api.common import SpecError
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.status import StatusWriter
from stt_operator.observability import track_reconcile


def reconcile(body: Mapping[str, Any], patch: kopf.Patch, ctx: OperatorContext) -> None:
    writer = StatusWriter(body)
    with track_reconcile("ABTest"):
        try:
            ABTest.from_body(body)
        except SpecError as exc:
            message = str(exc)
            writer.condition("Ready", "False", "InvalidSpec", message)
            writer.set(phase="Failed")
            if writer.changed("Ready"):
                writer.event("Warning", "InvalidSpec", message)
            writer.commit(patch)
            return
        message = (
            "accepted; the A/B test controller is not enabled in this version, so the test has not started"
        )
        writer.condition("Ready", "False", "Pending", message)
        writer.condition("Running", "False", "Pending", message)
        writer.set(phase="Pending")
        if writer.changed("Ready"):
            writer.event("Normal", "Accepted", message)
        writer.commit(patch)
