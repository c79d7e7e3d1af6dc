"""spec.selector: the endpoint's model picked from what the STTModels measured."""

from __future__ import annotations

from typing import Any

import pytest

from stt_operator.api.modeldeployment import ModelSelector
from stt_operator.rollout.selection import select_model, summary


def model(
    name: str,
    *,
    language: str = "en-US",
    wer: float | None = None,
    latency: float | None = None,
    confidence: float | None = None,
    ready: bool = True,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    validation = {k: v for k, v in (("wer", wer), ("latencyP95Ms", latency)) if v is not None}
    if validation:
        status["validation"] = validation
    if confidence is not None:
        status["analytics"] = [{"language": language, "confidence": confidence, "wer": 0.9}]
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"language": language},
        "status": status,
    }


def selector(**kw: Any) -> ModelSelector:
    return ModelSelector.model_validate(kw)


MODELS = [
    model("small", wer=0.12, latency=40),
    model("large", wer=0.07, latency=180, confidence=0.8),
    model("german", language="de-DE", wer=0.05, latency=50),
    model("broken", wer=0.01, latency=10, ready=False),
    model("unmeasured"),
]


@pytest.mark.parametrize(
    ("sel", "best"),
    [
        ({"language": "en-US"}, "large"),
        ({"language": "en-US", "criteria": {"optimize": "latency"}}, "small"),
        ({"language": "en-US", "criteria": {"maxLatencyP95Ms": 100}}, "small"),
        ({"language": "de-DE"}, "german"),
        ({"language": "en-US", "criteria": {"minConfidence": 0.9}}, None),
        ({"matchLabels": {"tier": "gold"}}, None),
    ],
)
def test_selection_table(sel: dict[str, Any], best: str | None) -> None:
    assert select_model(selector(**sel), MODELS).best == best


def test_labels_filter_and_reasons_for_the_dropped() -> None:
    models = [*MODELS, model("gold", wer=0.2, latency=30, labels={"tier": "gold"})]
    assert select_model(selector(matchLabels={"tier": "gold"}), models).best == "gold"
    none = select_model(selector(language="en-US", criteria={"maxWer": 0.05}), MODELS)
    assert none.best is None
    assert "wer 0.07 violates <= 0.05" in none.explanation and "not Ready" in none.explanation
    assert "wer unknown" in none.explanation  # never guessed


def test_summary_prefers_validation_and_takes_confidence_from_live_analytics() -> None:
    s = summary(MODELS[1])
    assert (s.wer, s.latency_p95_ms, s.confidence, s.ready) == (0.07, 180, 0.8, True)
