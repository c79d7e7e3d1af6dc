"""The A/B test's running p-values: read from typed status; a test an older operator started,
with them in the legacy annotation, resumes from it (and status takes over)."""

from __future__ import annotations

import json
from typing import Any

from stt_operator.api.abtest import ABTest
from stt_operator.controllers.looks import LEGACY_P_STATE, running_p_values


def body(status: dict[str, Any] | None = None, annotation: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "t", "namespace": "ns"}
    if annotation is not None:
        meta["annotations"] = {LEGACY_P_STATE: annotation}
    return {
        "metadata": meta,
        "spec": {
            "endpoint": {"modelDeploymentRef": {"name": "asr"}},
            "variants": [
                {"name": "a", "model": {"name": "m1"}, "weight": 50},
                {"name": "b", "model": {"name": "m2"}, "weight": 50},
            ],
            "primaryMetric": {"name": "wer", "preset": "wer"},
        },
        "status": status or {},
    }


def test_status_wins_and_the_legacy_annotation_is_read_once() -> None:
    legacy = json.dumps({"b": {"wer/maxRelativeIncrease 0.05": [1.0, 1e-3]}})
    typed = {
        "sequential": [{"variant": "b", "rule": "wer/maxRelativeIncrease 0.05", "pFail": 0.4, "pPass": 0.2}]
    }
    both = body(typed, legacy)
    assert running_p_values(ABTest.from_body(both), both) == {
        "b": {"wer/maxRelativeIncrease 0.05": (0.4, 0.2)}
    }
    old = body(annotation=legacy)
    assert running_p_values(ABTest.from_body(old), old) == {
        "b": {"wer/maxRelativeIncrease 0.05": (1.0, 1e-3)}
    }
    broken = body(annotation="{not json")
    assert running_p_values(ABTest.from_body(broken), broken) == {}
    assert running_p_values(ABTest.from_body(body()), body()) == {}
