"""The generated CRDs on a real kube-apiserver: valid samples are accepted (with the models'
defaults), every manifest of the invalid corpus is rejected with a message naming the field,
status round-trips through the status subresource, and `kubectl get` shows the columns."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stt_harness.specs import RejectedCase, rejected_cases
from stt_operator.api import ABTest, ModelDeployment, STTModel
from stt_operator.api.abtest import ABTestStatus
from stt_operator.api.common import CustomResource
from stt_operator.api.modeldeployment import ModelDeploymentStatus
from stt_operator.api.sttmodel import STTModelStatus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "data" / "invalid_manifests").glob("*.yaml"))
KINDS: dict[str, type[CustomResource]] = {
    "STTModel": STTModel,
    "ModelDeployment": ModelDeployment,
    "ABTest": ABTest,
}
GROUP, VERSION = "stt.dev", "v1alpha1"


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def plural(kind: str) -> str:
    return KINDS[kind].PLURAL


@pytest.fixture(scope="module")
def crd_namespace(kube_api: Any) -> Iterator[str]:
    """One namespace for the whole module: rejected objects never land, samples are unique."""
    from kubernetes.client import CoreV1Api

    core = CoreV1Api(kube_api)
    name = f"crd-admission-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def objects(kube_api: Any) -> Any:
    from kubernetes.client import CustomObjectsApi

    return CustomObjectsApi(kube_api)


@pytest.fixture(scope="module")
def created_samples(objects: Any, crd_namespace: str) -> dict[str, dict[str, Any]]:
    """Every sample created through the real apiserver (strict field validation), as stored."""
    stored: dict[str, dict[str, Any]] = {}
    for path in SAMPLES:
        doc = load(path)
        stored[path.stem] = objects.create_namespaced_custom_object(
            GROUP, VERSION, crd_namespace, plural(doc["kind"]), doc, field_validation="Strict"
        )
    return stored


def test_samples_are_accepted(created_samples: dict[str, dict[str, Any]]) -> None:
    assert set(created_samples) == {p.stem for p in SAMPLES}
    for name, obj in created_samples.items():
        assert obj["metadata"]["uid"], name
        assert "status" not in obj or not obj["status"], name


def _prune_empty_lists(value: Any) -> Any:
    """pydantic dumps `[]` / `{}` for default-factory collections the apiserver leaves absent."""
    if isinstance(value, dict):
        return {
            k: _prune_empty_lists(v)
            for k, v in value.items()
            if v != [] and not (k == "parameters" and v == {})
        }
    if isinstance(value, list):
        return [_prune_empty_lists(v) for v in value]
    return value


def test_apiserver_defaults_equal_the_model_defaults(created_samples: dict[str, dict[str, Any]]) -> None:
    """The schema defaults and pydantic's defaults are the same values: what the operator
    parses from a stored object is what the user's manifest meant."""
    for name, obj in created_samples.items():
        model = KINDS[obj["kind"]].from_body(obj)
        assert obj["spec"] == _prune_empty_lists(model.to_dict()["spec"]), name
    # Spot checks of defaulting that only the apiserver does (the manifests omit these).
    selector = created_samples["modeldeployment-selector"]["spec"]
    assert selector["strategy"] == {"type": "Canary"}
    assert selector["analysis"]["interval"] == "1m" and selector["analysis"]["noDataPolicy"] == "Pause"
    assert selector["rollback"] == {"automatic": True, "revisionHistoryLimit": 10}
    onnx = created_samples["sttmodel-onnx-conformer-ctc"]["spec"]
    assert onnx["triton"]["dynamicBatching"]["enabled"] is True
    assert onnx["validation"]["enabled"] is True


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_is_rejected_naming_the_field(objects: Any, crd_namespace: str, path: Path) -> None:
    from kubernetes.client.exceptions import ApiException

    expect = [
        line.split(":", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect:")
    ]
    assert expect, f"{path.name}: no '# expect:' lines"
    doc = load(path)
    try:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, crd_namespace, plural(doc["kind"]), doc, field_validation="Strict"
        )
    except ApiException as exc:
        assert exc.status in (400, 422), f"{path.name}: HTTP {exc.status}: {exc.body}"
        message = json.loads(exc.body).get("message", "")
    else:
        objects.delete_namespaced_custom_object(
            GROUP, VERSION, crd_namespace, plural(doc["kind"]), doc["metadata"]["name"]
        )
        pytest.fail(f"{path.name}: the apiserver accepted it")
    missing = [fragment for fragment in expect if fragment not in message]
    assert not missing, f"{path.name}: {missing} not in the apiserver's message: {message}"


def test_kubectl_apply_names_the_field(cluster: Any, crd_namespace: str) -> None:
    """What a person sees: `kubectl apply` of a bad manifest fails with the field and the reason."""
    path = ROOT / "tests" / "data" / "invalid_manifests" / "abt-weights-not-100.yaml"
    proc = subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "apply", "--server-side", "-n", crd_namespace, "-f", str(path)],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "spec.variants" in proc.stderr and "weights must sum to 100" in proc.stderr


STATUSES: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "sttmodel-onnx-conformer-ctc": (
        STTModelStatus,
        {
            "phase": "Ready",
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Validated",
                    "status": "True",
                    "reason": "ValidationPassed",
                    "message": "6/6 checks passed",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                    "observedGeneration": 1,
                },
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "ModelReady",
                    "message": "",
                    "observedGeneration": 1,
                },
            ],
            "artifact": {
                "digest": "sha256:" + "a" * 64,
                "sizeBytes": 1234,
                "files": [{"path": "model.onnx", "sha256": "b" * 64}],
            },
            "validation": {
                "steps": [{"name": "format", "result": "passed", "message": "ONNX opset 17"}],
                "wer": 0.061,
                "cer": 0.02,
                "latencyP95Ms": 120.5,
                "realTimeFactor": 0.05,
                "peakMemoryMiB": 2048.0,
                "samples": 200,
            },
            "quantization": {
                "mode": "dynamic-int8",
                "baselineWer": 0.061,
                "quantizedWer": 0.064,
                "result": "passed",
            },
            "tritonConfigMap": "conformer-ctc-en-triton",
            "quantizedModel": "conformer-ctc-en-int8",
            "analytics": [
                {"language": "en-US", "wer": 0.07, "throughputRps": 12.5, "updatedAt": "2026-01-01T00:00:00Z"}
            ],
        },
    ),
    "modeldeployment-canary": (
        ModelDeploymentStatus,
        {
            "phase": "Progressing",
            "observedGeneration": 2,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "StepAdvanced", "message": "step 2"}
            ],
            "stableRevision": "5f3a9c1e",
            "canaryRevision": "7d2b4e60",
            "currentStepIndex": 2,
            "currentWeight": 10,
            "stableModel": "pocketsphinx-en",
            "canaryModel": "pocketsphinx-en-degraded",
            "stepStartedAt": "2026-01-01T00:01:00Z",
            "analysis": {"failures": 0, "inconclusive": 1, "consecutiveSuccesses": 0, "noData": 0},
            "analysisRuns": [
                {
                    "step": 1,
                    "metric": "wer",
                    "outcome": "Inconclusive",
                    "value": 0.3,
                    "baseline": 0.2,
                    "message": "n=40",
                }
            ],
            "revisions": [
                {
                    "revision": 1,
                    "revisionId": "5f3a9c1e",
                    "model": "pocketsphinx-en",
                    "modelDigest": "sha256:" + "c" * 64,
                    "createdAt": "2026-01-01T00:00:00Z",
                    "promotedAt": "2026-01-01T00:00:30Z",
                    "outcome": "Serving",
                }
            ],
            "lastRollback": {
                "at": "2026-01-01T00:00:00Z",
                "fromModel": "a",
                "toModel": "b",
                "reason": "WER up",
            },
            "heldBy": "commands-en-degraded-vs-baseline",
            "endpoint": "commands-en",
        },
    ),
    "abtest-pocketsphinx": (
        ABTestStatus,
        {
            "phase": "Concluded",
            "conditions": [
                {"type": "Concluded", "status": "True", "reason": "WinnerFound", "message": "baseline"}
            ],
            "startedAt": "2026-01-01T00:00:00Z",
            "endedAt": "2026-01-01T01:00:00Z",
            "variants": [
                {"name": "baseline", "model": "pocketsphinx-en", "weight": 50, "samples": 600, "wer": 0.12},
                {
                    "name": "candidate",
                    "model": "pocketsphinx-en-degraded",
                    "weight": 50,
                    "samples": 610,
                    "wer": 0.31,
                },
            ],
            "variantSummary": "baseline=50% candidate=50%",
            "winner": "baseline",
            "decision": {
                "outcome": "Winner",
                "metric": "wer",
                "pValue": 0.0001,
                "effect": 0.19,
                "confidenceInterval": {"lower": 0.15, "upper": 0.23, "level": 0.95},
                "reason": "candidate WER higher by 0.19",
            },
            "sampleRatio": {"pValue": 0.77, "detected": False},
            "guardrails": [{"metric": "latency", "outcome": "Passed", "pValue": 0.4, "adjustedPValue": 0.8}],
        },
    ),
}


@pytest.mark.parametrize("sample", sorted(STATUSES))
def test_status_subresource_keeps_every_field_the_models_define(
    objects: Any, crd_namespace: str, created_samples: dict[str, dict[str, Any]], sample: str
) -> None:
    """Nothing the controllers write is pruned (a field missing from the schema would vanish)."""
    status_type, raw = STATUSES[sample]
    status = status_type.model_validate(raw).to_dict()
    obj = created_samples[sample]
    kind, name = obj["kind"], obj["metadata"]["name"]
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, crd_namespace, plural(kind), name, {"status": status}
    )
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, crd_namespace, plural(kind), name)
    assert stored["status"] == status
    # The main resource endpoint ignores status (the subresource is the only way to write it).
    body = copy.deepcopy(stored)
    body["status"] = {"phase": "Failed"}
    after = objects.replace_namespaced_custom_object(GROUP, VERSION, crd_namespace, plural(kind), name, body)
    assert after["status"] == status
    assert KINDS[kind].from_body(after).status.phase == status["phase"]  # type: ignore[attr-defined]


def test_bad_status_is_rejected(
    objects: Any, crd_namespace: str, created_samples: dict[str, dict[str, Any]]
) -> None:
    from kubernetes.client.exceptions import ApiException

    name = created_samples["modeldeployment-immediate"]["metadata"]["name"]
    with pytest.raises(ApiException) as info:
        objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, crd_namespace, "modeldeployments", name, {"status": {"phase": "Sleeping"}}
        )
    assert "status.phase" in json.loads(info.value.body)["message"]


def test_kubectl_get_shows_printer_columns(
    cluster: Any, crd_namespace: str, created_samples: dict[str, dict[str, Any]], objects: Any
) -> None:
    objects.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        crd_namespace,
        "sttmodels",
        "pocketsphinx-en",
        {"status": {"phase": "Ready", "validation": {"wer": 0.118}}},
    )
    out = cluster.kubectl("get", "sttm", "-n", crd_namespace)
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "FORMAT", "LANGUAGE", "PHASE", "WER", "AGE"]
    row = next(r.split() for r in rows if r.startswith("pocketsphinx-en "))
    assert row[1:5] == ["python", "en-US", "Ready", "0.118"]
    mdep = cluster.kubectl("get", "mdep", "-n", crd_namespace)
    assert mdep.splitlines()[0].split() == ["NAME", "MODEL", "STRATEGY", "WEIGHT", "STEP", "PHASE", "AGE"]
    assert any(line.split()[:2] == ["transcribe-en", "Gradual"] for line in mdep.splitlines()[1:])
    abt = cluster.kubectl("get", "abt", "-n", crd_namespace)
    assert abt.splitlines()[0].split() == ["NAME", "ENDPOINT", "VARIANTS", "PHASE", "WINNER", "AGE"]
    everything = cluster.kubectl("get", "stt", "-n", crd_namespace, "-o", "name")
    assert len(everything.split()) == len(SAMPLES)


def test_abtest_variants_cannot_change_but_duration_can(
    objects: Any, crd_namespace: str, created_samples: dict[str, dict[str, Any]]
) -> None:
    """Transition rules: what a running test compares is fixed; how long it runs is not."""
    from kubernetes.client.exceptions import ApiException

    name = created_samples["abtest-pocketsphinx"]["metadata"]["name"]
    variants = copy.deepcopy(created_samples["abtest-pocketsphinx"]["spec"]["variants"])
    variants[0]["weight"], variants[1]["weight"] = 60, 40
    with pytest.raises(ApiException) as info:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, crd_namespace, "abtests", name, {"spec": {"variants": variants}}
        )
    message = json.loads(info.value.body)["message"]
    assert "spec.variants" in message and "cannot change once the test exists" in message
    patched = objects.patch_namespaced_custom_object(
        GROUP, VERSION, crd_namespace, "abtests", name, {"spec": {"duration": "3h"}}
    )
    assert patched["spec"]["duration"] == "3h"


def test_kubectl_explain_documents_fields(cluster: Any) -> None:
    out = cluster.kubectl("explain", "sttmodels.spec.source")
    assert "Where the artifact comes from" in out and "sha256" in out
    out = cluster.kubectl("explain", "mdep.spec.strategy.canary.steps")
    assert "setWeight" in out and "Send this percentage of traffic to the new model" in out


# --- the models and the apiserver agree ---------------------------------------------------------


@st.composite
def _variants(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A valid variant list, then (usually) broken in one way: weights, names, models, count."""
    n = draw(st.integers(2, 4))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    weights = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, 100], strict=True)]
    variants = [{"name": f"v{i}", "model": {"name": f"m{i}"}, "weight": w} for i, w in enumerate(weights)]
    i = draw(st.integers(0, n - 1))
    breakage = draw(st.sampled_from(["none", "weight", "range", "name", "model", "bad-name", "single"]))
    if breakage == "weight":
        variants[i]["weight"] += draw(st.sampled_from([-3, -1, 1, 7]))
    elif breakage == "range":
        variants[i]["weight"] = draw(st.sampled_from([-1, 101]))
    elif breakage == "name":
        variants[i]["name"] = variants[(i + 1) % n]["name"]
    elif breakage == "model":
        variants[i]["model"] = dict(variants[(i + 1) % n]["model"])
    elif breakage == "bad-name":
        variants[i]["name"] = "Bad_Name"
    elif breakage == "single":
        variants = [{**variants[0], "weight": 100}]
    return variants


@st.composite
def _steps(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Canary steps: weights often non-decreasing, sometimes out of range or a step with two actions."""
    n = draw(st.integers(0, 6))
    weights = draw(st.lists(st.integers(-5, 105), min_size=n, max_size=n))
    if draw(st.booleans()):
        weights = sorted(min(max(w, 0), 100) for w in weights)
    steps: list[dict[str, Any]] = []
    for w in weights:
        kind = draw(st.sampled_from(["setWeight", "setWeight", "pause", "analysis", "both"]))
        if kind == "setWeight":
            steps.append({"setWeight": w})
        elif kind == "pause":
            steps.append({"pause": {"duration": "1m"}})
        elif kind == "analysis":
            steps.append({"analysis": {}})
        else:
            steps.append({"setWeight": w, "pause": {}})
    return steps


def _admitted(objects: Any, namespace: str, doc: dict[str, Any]) -> tuple[bool, str]:
    from kubernetes.client.exceptions import ApiException

    try:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural(doc["kind"]), doc, dry_run="All", field_validation="Strict"
        )
    except ApiException as exc:
        if exc.status not in (400, 422):
            raise
        return False, json.loads(exc.body).get("message", "")
    return True, ""


def _model_accepts(doc: dict[str, Any]) -> bool:
    from stt_operator.api import SpecError

    try:
        KINDS[doc["kind"]].from_body(doc)
    except SpecError:
        return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variants=_variants())
def test_abtest_variant_rules_agree(objects: Any, crd_namespace: str, variants: list[dict[str, Any]]) -> None:
    doc = load(ROOT / "manifests" / "samples" / "abtest-pocketsphinx.yaml")
    doc["metadata"] = {"name": "property-abtest"}  # not a sample's name: dry-run checks existence
    doc["spec"]["variants"] = variants
    doc["spec"].pop("controlVariant")
    admitted, message = _admitted(objects, crd_namespace, doc)
    event("admitted" if admitted else "rejected")
    assert admitted == _model_accepts(doc), f"apiserver: {admitted} ({message}); variants={variants}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_steps())
def test_canary_step_rules_agree(objects: Any, crd_namespace: str, steps: list[dict[str, Any]]) -> None:
    doc = load(ROOT / "manifests" / "samples" / "modeldeployment-canary.yaml")
    doc["metadata"] = {"name": "property-canary"}
    doc["spec"]["strategy"]["canary"]["steps"] = steps
    admitted, message = _admitted(objects, crd_namespace, doc)
    event("admitted" if admitted else "rejected")
    assert admitted == _model_accepts(doc), f"apiserver: {admitted} ({message}); steps={steps}"


# --- the corpus of rejected specs (tests/data/rejected_specs.yaml) ------------------------------

REJECTED = rejected_cases()


@pytest.mark.parametrize("case", REJECTED, ids=lambda c: c.id)
def test_rejected_spec_names_the_field(objects: Any, crd_namespace: str, case: RejectedCase) -> None:
    """Each spec an attacker or a careless user could write that the operator cannot honour is
    refused at admission, with a message naming the field."""
    admitted, message = _admitted(objects, crd_namespace, case.doc)
    assert not admitted, f"{case.id}: the apiserver admitted it"
    missing = [fragment for fragment in case.expect if fragment not in message]
    assert not missing, f"{case.id}: {missing} not in the apiserver's message: {message}"
