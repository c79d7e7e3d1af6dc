"""spec.monitoring: defaults, what admission allows, and that the pydantic models refuse what the
CRD's rules refuse (the rejected corpus, tests/data/rejected_specs.yaml, holds the cases)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stt_operator.api import ModelDeployment, SpecError

ROOT = Path(__file__).resolve().parents[3]


def spec(**monitoring: object) -> object:
    mon = {"metrics": [{"name": "errors", "thresholdRange": {"max": 0.01}}], **monitoring}
    return ModelDeployment.spec_from({"model": {"name": "m"}, "monitoring": mon}, name="asr")


def test_defaults() -> None:
    mon = spec().monitoring  # type: ignore[attr-defined]
    assert (mon.interval, mon.min_samples, mon.max_false_alarms_per_day, mon.rollback) == (
        "5m",
        500,
        0.01,
        False,
    )
    assert mon.metrics[0].preset == "error-rate" and mon.interval_seconds() == 300


@pytest.mark.parametrize("preset", ["wer", "cer", "latency-p95", "latency-p99", "confidence", "rtf"])
def test_presets_without_a_valid_test_on_the_served_revision_are_refused(preset: str) -> None:
    with pytest.raises(SpecError, match="preset"):
        spec(metrics=[{"name": "x", "preset": preset, "thresholdRange": {"max": 0.1}}])


def test_rollback_needs_spec_model() -> None:
    mon = {"metrics": [{"name": "errors", "thresholdRange": {"max": 0.01}}], "rollback": True}
    with pytest.raises(SpecError, match=r"monitoring\.rollback needs spec\.model"):
        ModelDeployment.spec_from({"selector": {"language": "en"}, "monitoring": mon}, name="asr")
    mon["rollback"] = False
    ModelDeployment.spec_from({"selector": {"language": "en"}, "monitoring": mon}, name="asr")


def test_the_crd_names_the_fields_and_lists_only_error_rate() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "stt.dev_modeldeployments.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {r.get("fieldPath"): r["rule"] for r in schema["x-kubernetes-validations"]}
    assert (
        rules[".monitoring.rollback"]
        == "!has(self.monitoring) || !self.monitoring.rollback || has(self.model)"
    )
    mon = schema["properties"]["monitoring"]
    metric = mon["properties"]["metrics"]["items"]
    assert metric["properties"]["preset"]["enum"] == ["error-rate"]
    threshold = metric["properties"]["thresholdRange"]
    assert threshold["required"] == ["max"]
    assert threshold["x-kubernetes-validations"][0]["fieldPath"] == ".min"
    assert mon["properties"]["maxFalseAlarmsPerDay"]["maximum"] == 1
