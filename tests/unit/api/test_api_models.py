"""The pydantic API models: samples parse, defaults, helpers, and the invalid corpus is rejected."""

from __future__ import annotations

import copy
import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from stt_operator.api import (
    ABTest,
    ModelDeployment,
    SpecError,
    STTModel,
    format_duration,
    get_condition,
    is_condition_true,
    parse_duration,
    set_condition,
)
from stt_operator.api.abtest import variant_summary
from stt_operator.api.common import Condition, condition_moved, conditions_equal, iso
from stt_operator.api.modeldeployment import GradualStrategy, ModelDeploymentStatus
from stt_operator.api.sttmodel import STTModelStatus

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "data" / "invalid_manifests").glob("*.yaml"))
KINDS = {"STTModel": STTModel, "ModelDeployment": ModelDeployment, "ABTest": ABTest}


@functools.cache
def _load_text(text: str) -> dict[str, Any]:
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load(path: Path) -> dict[str, Any]:
    """A fresh copy each call (tests mutate what they load)."""
    return copy.deepcopy(_load_text(path.read_text()))


def sample(name: str) -> dict[str, Any]:
    return load(ROOT / "manifests" / "samples" / name)


def expectations(path: Path) -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect:")
    ]


# --- samples ----------------------------------------------------------------------------------


def test_samples_cover_every_kind_and_strategy() -> None:
    docs = [load(p) for p in SAMPLES]
    kinds = {d["kind"] for d in docs}
    assert kinds == set(KINDS)
    strategies = {
        (d["spec"].get("strategy") or {}).get("type", "Canary")
        for d in docs
        if d["kind"] == "ModelDeployment"
    }
    assert strategies == {"Immediate", "Gradual", "Canary", "BlueGreen"}
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "STTModel"}
    assert {"pocketsphinx-en", "pocketsphinx-en-degraded", "conformer-ctc-en"} <= names


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_parses_and_round_trips(path: Path) -> None:
    doc = load(path)
    obj = KINDS[doc["kind"]].from_body(doc)
    assert obj.name == doc["metadata"]["name"]
    again = KINDS[doc["kind"]].from_body(obj.to_dict())
    assert again.spec == obj.spec


def test_sttmodel_defaults_and_derived_values() -> None:
    m = STTModel.from_body(sample("sttmodel-pocketsphinx-en.yaml"))
    assert m.spec.effective_backend() == "python"
    assert m.spec.io.sample_rate == 16000
    assert m.spec.io.tensor("audio").name == "AUDIO"  # type: ignore[union-attr]
    assert m.spec.validation is not None and m.spec.validation.enabled is True
    assert m.spec.validation.timeout_seconds() == 15 * 60
    onnx = STTModel.from_body(sample("sttmodel-onnx-conformer-ctc.yaml"))
    assert onnx.spec.quantization is not None and onnx.spec.quantization.exclude_op_types == ["Conv"]
    assert onnx.spec.resources is not None and onnx.spec.resources.gpu == 1
    # A format without an explicit backend gets Triton's natural one.
    spec = onnx.spec.model_copy(update={"triton": None})
    assert spec.effective_backend() == "onnxruntime"
    assert spec.effective_triton().max_batch_size == 8


def test_quantity_accepts_numbers_as_kubernetes_does() -> None:
    doc = sample("sttmodel-pocketsphinx-en.yaml")
    doc["spec"]["resources"] = {"gpu": 0, "cpu": 2, "memory": "512Mi", "limits": {"cpu": 4}}
    m = STTModel.from_body(doc)
    assert m.spec.resources is not None
    assert m.spec.resources.cpu == "2" and m.spec.resources.limits == {"cpu": "4"}


def test_modeldeployment_defaults() -> None:
    d = ModelDeployment.from_body({"metadata": {"name": "x"}, "spec": {"model": {"name": "m"}}})
    assert d.spec.strategy.type == "Canary"
    assert d.spec.replicas == 1 and d.spec.routing == "gateway-api"
    assert d.spec.rollback.automatic is True and d.spec.rollback.revision_history_limit == 10
    assert d.spec.scale_down_delay_seconds() == 30
    assert d.spec.effective_endpoint().port == 8000 and d.spec.effective_endpoint().path == "/"
    # No metrics: the default canary pauses instead of running an analysis it could not run.
    steps = d.spec.canary_steps()
    assert [s.kind for s in steps] == ["setWeight", "pause", "setWeight", "pause"]
    assert [s.set_weight for s in steps if s.set_weight is not None] == [10, 50]


def test_modeldeployment_default_canary_with_metrics_runs_analysis() -> None:
    d = ModelDeployment.from_body(sample("modeldeployment-selector.yaml"))
    assert [s.kind for s in d.spec.canary_steps()] == ["setWeight", "analysis", "setWeight", "analysis"]
    assert d.spec.analysis is not None
    assert d.spec.analysis.interval_seconds() == 60 and d.spec.analysis.no_data_policy == "Pause"
    assert d.spec.analysis.confidence == 0.95
    assert d.spec.analysis.metrics[0].min_samples == 200


def test_gradual_weights_reach_max() -> None:
    assert GradualStrategy(step_weight=20).weights() == [20, 40, 60, 80, 100]
    assert GradualStrategy(step_weight=30, max_weight=80).weights() == [30, 60, 80]
    assert GradualStrategy(step_weight=100).weights() == [100]


def test_metric_direction_follows_preset() -> None:
    d = ModelDeployment.from_body(sample("modeldeployment-bluegreen.yaml"))
    assert d.spec.analysis is not None
    wer, conf = d.spec.analysis.metrics
    assert wer.effective_direction() == "lower-is-better"
    assert conf.effective_direction() == "higher-is-better"


def test_abtest_defaults_and_helpers() -> None:
    t = ABTest.from_body(sample("abtest-pocketsphinx.yaml"))
    assert t.spec.control().name == "baseline"
    assert t.spec.weights() == {"baseline": 50, "candidate": 50}
    assert t.spec.duration_seconds() == 7200 and t.spec.min_duration_seconds() == 300
    assert variant_summary(t.spec.variants) == "baseline=50% candidate=50%"
    minimal = sample("abtest-pocketsphinx.yaml")
    for key in ("controlVariant", "duration", "minDuration", "significanceLevel", "srmThreshold"):
        minimal["spec"].pop(key)
    t2 = ABTest.from_body(minimal)
    assert t2.spec.control().name == "baseline"  # the first variant
    assert t2.spec.duration == "24h" and t2.spec.significance_level == 0.05
    assert t2.spec.srm_threshold == 0.001 and t2.spec.min_duration_seconds() == 0


def test_status_parses_what_controllers_write() -> None:
    status = {
        "phase": "Progressing",
        "stableRevision": "a1b2c3d4",
        "currentWeight": 10,
        "revisions": [{"revision": 1, "revisionId": "a1b2c3d4", "model": "m", "outcome": "Serving"}],
        "analysisRuns": [{"step": 1, "metric": "wer", "outcome": "NoData", "message": "no samples"}],
        "someFutureField": 1,  # tolerated: written by a newer operator
    }
    s = ModelDeploymentStatus.model_validate(status)
    assert s.revisions[0].revision_id == "a1b2c3d4"
    assert s.analysis_runs[0].outcome == "NoData"
    assert (
        STTModelStatus.model_validate({"validation": {"peakMemoryMiB": 12.5}}).validation.peak_memory_mi_b
        == 12.5
    )  # type: ignore[union-attr]


# --- errors -----------------------------------------------------------------------------------


def test_spec_error_names_the_field_path() -> None:
    doc = sample("modeldeployment-canary.yaml")
    doc["spec"]["strategy"]["canary"]["steps"][3]["setWeight"] = 500
    with pytest.raises(SpecError) as info:
        ModelDeployment.from_body(doc)
    err = info.value
    assert err.path == "spec.strategy.canary.steps[3].setWeight"
    assert "commands-en" in str(err) and "less than or equal to 100" in str(err)


def test_spec_from_parses_a_bare_spec() -> None:
    spec = ModelDeployment.spec_from({"model": {"name": "m"}, "replicas": 3})
    assert spec.replicas == 3
    with pytest.raises(SpecError) as info:
        ModelDeployment.spec_from({"model": {"name": "m"}, "replicas": "many"}, name="x")
    assert info.value.path == "spec.replicas"


def test_unknown_fields_are_rejected_in_specs() -> None:
    doc = sample("sttmodel-pocketsphinx-en.yaml")
    doc["spec"]["modelPath"] = "/x"
    with pytest.raises(SpecError) as info:
        STTModel.from_body(doc)
    assert info.value.path == "spec.modelPath"


def test_invalid_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 40
    for kind in KINDS:
        assert sum(load(p)["kind"] == kind for p in INVALID) >= 10, kind


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_is_rejected_by_the_models(path: Path) -> None:
    expect = expectations(path)
    assert expect, f"{path.name}: needs '# expect:' lines naming the field and message"
    assert expect[0].startswith("spec") or expect[0].isidentifier(), f"{path.name}: first expect is the field"
    doc = load(path)
    with pytest.raises(SpecError) as info:
        KINDS[doc["kind"]].from_body(doc)
    # pydantic reports model-level rules at the object holding them, so compare the top field.
    top = expect[0].split(".")[1].split("[")[0] if expect[0].startswith("spec.") else expect[0]
    assert top in str(info.value), f"{path.name}: {info.value}"


# --- durations and conditions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1h0m5s", 3605), ("0s", 0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "5", "1d", "-5s", "1.5h", "5 m", "m5"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_set_condition_keeps_transition_time_when_status_is_unchanged() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    conds = set_condition([], "Ready", "False", "Starting", "starting", generation=1, now=t0)
    assert conds == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Starting",
            "message": "starting",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 1,
        }
    ]
    t1 = t0 + timedelta(minutes=5)
    same = set_condition(conds, "Ready", "False", "StillStarting", "still", generation=2, now=t1)
    assert same[0]["lastTransitionTime"] == iso(t0)
    assert same[0]["reason"] == "StillStarting" and same[0]["observedGeneration"] == 2
    flipped = set_condition(same, "Ready", "True", "Serving", "ok", generation=2, now=t1)
    assert flipped[0]["lastTransitionTime"] == iso(t1)
    assert conds[0]["status"] == "False"  # the input list is not modified


def test_set_condition_appends_and_keeps_order() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    conds = set_condition(None, "Ready", "True", "Serving", "", now=t)
    conds = set_condition(conds, "Progressing", "True", "RolloutStarted", "", now=t)
    conds = set_condition(conds, "Ready", "False", "Degraded", "", now=t)
    assert [c["type"] for c in conds] == ["Ready", "Progressing"]
    assert get_condition(conds, "Progressing") is not None
    assert get_condition(conds, "Degraded") is None
    assert is_condition_true(conds, "Progressing") and not is_condition_true(conds, "Ready")
    assert conditions_equal(conds, list(reversed(conds)))
    assert not conditions_equal(conds, conds[:1])
    with pytest.raises(ValueError, match="status must be"):
        set_condition(conds, "Ready", "yes", "X", "")


def test_unknown_status_fields_are_reported_with_their_path() -> None:
    assert ModelDeploymentStatus.unknown_fields({"phase": "Healthy", "revisions": [{"revision": 1}]}) == []
    assert ModelDeploymentStatus.unknown_fields(
        {"phaze": "Healthy", "revisions": [{"revision": 1, "colour": "red"}], "analysis": {"x": 1}}
    ) == ["status.phaze", "status.revisions[0].colour", "status.analysis.x"]


def test_immediate_planner_writes_only_schema_fields() -> None:
    """The rollout planner's status must survive the apiserver's pruning."""
    from stt_operator.builders.serving import Revision
    from stt_operator.controllers.status import status_changes
    from stt_operator.rollout.immediate import plan_immediate
    from stt_operator.rollout.plan import ObservedRevision

    revision = Revision(model="pocketsphinx-en", model_digest="sha256:" + "0" * 64)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    observed = {revision.id: ObservedRevision(revision.id, "pocketsphinx-en", True)}
    before = ModelDeploymentStatus()
    plan = plan_immediate(revision, before, observed, now)
    written = status_changes(before, plan.status)
    status = {k: v for k, v in written.items() if v is not None}
    assert status["phase"] == "Healthy"
    assert ModelDeploymentStatus.unknown_fields(status) == []
    ModelDeploymentStatus.model_validate(status)


def test_a_condition_moves_when_its_status_or_reason_changes() -> None:
    before = {"type": "Ready", "status": "False", "reason": "Waiting", "message": "a"}
    assert condition_moved(None, "False", "Waiting")
    assert not condition_moved(before, "False", "Waiting")  # a new message alone is no transition
    assert condition_moved(before, "True", "Waiting") and condition_moved(before, "False", "Other")
    typed = Condition.model_validate(before)
    assert not condition_moved(typed, "False", "Waiting") and condition_moved(typed, "True", "Waiting")
