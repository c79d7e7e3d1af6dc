"""The CRD generator: committed YAML in sync, structural schemas, CEL rules, printer columns."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stt_operator.api import crdgen
from stt_operator.api.modeldeployment import RollbackSpec, StrategySpec

ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = ROOT / "crds"
REJECTED_CORPUS = ROOT / "tests" / "data" / "rejected_specs.yaml"


@functools.cache
def docs() -> dict[str, dict[str, Any]]:
    return {d["spec"]["names"]["kind"]: d for d in crdgen.crd_documents()}


def schema_of(kind: str) -> dict[str, Any]:
    return docs()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """The structural-schema rules the apiserver enforces that a generator could get wrong."""
    problems = []
    for path, node in walk(schema):
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        if "type" not in node and not int_or_string:
            problems.append(f"{path}: no type")
        if int_or_string and node.get("anyOf") != [{"type": "integer"}, {"type": "string"}]:
            problems.append(f"{path}: int-or-string without the integer|string anyOf")
        if "anyOf" in node and not int_or_string:
            problems.append(f"{path}: anyOf")
        for key in ("$ref", "title", "allOf", "oneOf", "const", "nullable", "$defs"):
            if key in node:
                problems.append(f"{path}: {key}")
        addl = node.get("additionalProperties")
        if addl is not None and (not isinstance(addl, dict) or "properties" in node):
            problems.append(f"{path}: additionalProperties must be a schema and only on maps")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if "default" in node and node["default"] is None:
            problems.append(f"{path}: default null")
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            if bound in node and not isinstance(node[bound], bool):
                problems.append(f"{path}: {bound} must be a boolean in OpenAPI v3.0")
        if node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: preserve-unknown-fields (nothing in this API is free-form)")
        if node.get("type") == "array" and "x-kubernetes-validations" in node and "maxItems" not in node:
            problems.append(f"{path}: CEL on a list without maxItems (unbounded cost)")
        bounded = "maxLength" in node or "enum" in node or path in (".apiVersion", ".kind")
        if node.get("type") == "string" and not bounded:
            problems.append(f"{path}: string without maxLength")
    return problems


def test_committed_crds_match_the_models() -> None:
    diffs = crdgen.drift(CRD_DIR)
    assert not diffs, "crds/ drifted from the models; run `stt-operator crds --output-dir crds`\n" + "".join(
        diffs
    )


def test_committed_files_are_the_three_kinds() -> None:
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == [
        "stt.dev_abtests.yaml",
        "stt.dev_modeldeployments.yaml",
        "stt.dev_sttmodels.yaml",
    ]


def test_check_mode_reports_drift_and_write_mode_fixes_it(tmp_path: Path, capsys: Any) -> None:
    parser = argparse.ArgumentParser()
    crdgen.add_arguments(parser)
    assert crdgen.main(parser.parse_args(["--check", "--output-dir", str(tmp_path)])) == 1
    assert crdgen.main(parser.parse_args(["--output-dir", str(tmp_path)])) == 0
    assert crdgen.main(parser.parse_args(["--check", "--output-dir", str(tmp_path)])) == 0
    path = tmp_path / "stt.dev_abtests.yaml"
    path.write_text(path.read_text().replace("maxItems: 10", "maxItems: 11"))
    capsys.readouterr()
    assert crdgen.main(parser.parse_args(["--check", "--output-dir", str(tmp_path)])) == 1
    out = capsys.readouterr().out
    assert "-                maxItems: 11" in out and "+                maxItems: 10" in out


def test_stdout_mode_prints_three_documents(capsys: Any) -> None:
    parser = argparse.ArgumentParser()
    crdgen.add_arguments(parser)
    assert crdgen.main(parser.parse_args([])) == 0
    loaded = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [d["metadata"]["name"] for d in loaded] == [
        "sttmodels.stt.dev",
        "modeldeployments.stt.dev",
        "abtests.stt.dev",
    ]


@pytest.mark.parametrize("kind", ["STTModel", "ModelDeployment", "ABTest"])
def test_schema_is_structural(kind: str) -> None:
    assert structural_problems(schema_of(kind)) == []


def test_structural_checker_catches_problems() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"$ref": "#/x"},
            "b": {"type": "array"},
            "c": {"type": "string", "maxLength": 3, "default": None},
            "d": {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": False},
            "e": {"type": "number", "exclusiveMaximum": 1},
        },
    }
    problems = "\n".join(structural_problems(bad))
    for fragment in (
        ".a: no type",
        ".a: $ref",
        ".b: array without items",
        ".c: default null",
        ".d: addit",
        ".e",
    ):
        assert fragment in problems


def test_generator_refuses_unions() -> None:
    with pytest.raises(crdgen.SchemaError, match=r"spec\.x: unions"):
        crdgen.structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {}, "spec.x")


@pytest.mark.parametrize(
    ("kind", "short", "plural"),
    [
        ("STTModel", "sttm", "sttmodels"),
        ("ModelDeployment", "mdep", "modeldeployments"),
        ("ABTest", "abt", "abtests"),
    ],
)
def test_names_scope_and_subresources(kind: str, short: str, plural: str) -> None:
    doc = docs()[kind]
    assert doc["metadata"]["name"] == f"{plural}.stt.dev"
    names = doc["spec"]["names"]
    assert names["shortNames"] == [short] and names["categories"] == ["stt"] and names["plural"] == plural
    assert doc["spec"]["scope"] == "Namespaced"
    version = doc["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("STTModel", ["Format", "Language", "Phase", "WER", "Age"]),
        ("ModelDeployment", ["Model", "Strategy", "Weight", "Step", "Phase", "Desired", "Canary", "Age"]),
        ("ABTest", ["Endpoint", "Variants", "Phase", "Winner", "Age"]),
    ],
)
def test_printer_columns_point_at_real_fields(kind: str, columns: list[str]) -> None:
    version = docs()[kind]["spec"]["versions"][0]
    cols = version["additionalPrinterColumns"]
    assert [c["name"] for c in cols] == columns
    schema = version["schema"]["openAPIV3Schema"]
    for col in cols:
        if col["jsonPath"].startswith(".metadata"):
            continue
        node = schema
        for part in col["jsonPath"].strip(".").split("."):
            node = node["properties"][part]
        expected = {"string": "string", "integer": "integer", "number": "number"}[col["type"]]
        assert node["type"] == expected, col


@pytest.mark.parametrize("kind", ["STTModel", "ModelDeployment", "ABTest"])
def test_conditions_are_a_map_keyed_by_type(kind: str) -> None:
    conds = schema_of(kind)["properties"]["status"]["properties"]["conditions"]
    assert conds["x-kubernetes-list-type"] == "map"
    assert conds["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conds["items"]["required"]
    assert set(conds["items"]["properties"]) >= {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }


def cel_rules(kind: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path, node in walk(schema_of(kind)):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message"), f"{kind}{path}: every CEL rule needs a message"
            out.setdefault(path, []).append(rule["rule"])
    return out


def test_cel_rules_present() -> None:
    abt = cel_rules("ABTest")
    assert "self.map(v, v.weight).sum() == 100" in abt[".spec.variants"]
    assert any("exists_one(y, y.name == x.name)" in r for r in abt[".spec.variants"])
    assert any("duration(self.minDuration)" in r for r in abt[".spec"])
    for immutable in (".spec.endpoint", ".spec.variants", ".spec.primaryMetric"):
        assert "self == oldSelf" in abt[immutable], immutable
    mdep = cel_rules("ModelDeployment")
    assert (
        "self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()"
        in mdep[".spec.strategy.canary.steps"]
    )
    assert "has(self.model) != has(self.selector)" in mdep[".spec"]
    assert len(mdep[".spec.strategy"]) == 3  # each strategy block matches its type
    assert "has(self.preset) != has(self.query)" in mdep[".spec.analysis.metrics[]"]
    assert any("self.min <= self.max" in r for r in mdep[".spec.analysis.metrics[].thresholdRange"])
    sttm = cel_rules("STTModel")
    assert any("self.triton.backend" in r for r in sttm[".spec"])
    assert any("exists_one(t, t.role == 'audio')" in r for r in sttm[".spec.io"])
    total = sum(len(v) for k in ("STTModel", "ModelDeployment", "ABTest") for v in cel_rules(k).values())
    assert total >= 35


def test_object_defaults_match_the_models() -> None:
    spec = schema_of("ModelDeployment")["properties"]["spec"]["properties"]
    assert StrategySpec.model_validate(spec["strategy"]["default"]) == StrategySpec()
    assert RollbackSpec.model_validate(spec["rollback"]["default"]) == RollbackSpec()


def test_scalar_defaults_are_in_the_schema() -> None:
    spec = schema_of("ModelDeployment")["properties"]["spec"]["properties"]
    assert spec["replicas"]["default"] == 1
    assert spec["scaleDownDelay"]["default"] == "30s"
    analysis = spec["analysis"]["properties"]
    assert analysis["interval"]["default"] == "1m" and analysis["noDataPolicy"]["default"] == "Pause"
    assert {k: v for k, v in analysis["confidence"].items() if k != "description"} == {
        "type": "number",
        "default": 0.95,
        "minimum": 0.5,
        "maximum": 1.0,
        "exclusiveMaximum": True,
        # the apiserver checks an integer against a truncated fractional minimum: CEL catches 0
        "x-kubernetes-validations": [{"rule": "self >= 0.5", "message": "confidence must be >= 0.5"}],
    }
    sttm = schema_of("STTModel")["properties"]["spec"]["properties"]
    assert sttm["quantization"]["properties"]["excludeOpTypes"]["default"] == ["Conv"]
    assert sttm["source"]["properties"]["sha256"]["pattern"] == "^[a-f0-9]{64}$"
    assert sttm["format"]["enum"] == [
        "onnx",
        "torchscript",
        "pytorch",
        "tensorflow-savedmodel",
        "tensorrt-plan",
        "python",
    ]


def test_every_cel_rule_has_an_invalid_manifest() -> None:
    """Each admission rule is exercised by at least one manifest of the invalid corpora (the
    integration test then proves the apiserver rejects it with that message). Transition
    rules (`oldSelf`) need an update, so the integration test covers them separately."""
    corpus = ROOT / "tests" / "data" / "invalid_manifests"
    expected = [
        line.split(":", 1)[1].strip()
        for path in corpus.glob("*.yaml")
        for line in path.read_text().splitlines()
        if line.startswith("# expect:")
    ]
    expected += [f for case in yaml.safe_load(REJECTED_CORPUS.read_text()) for f in case["expect"]]
    messages = [fragment for fragment in expected if not fragment.startswith("spec") and len(fragment) > 12]
    uncovered = []
    for kind in ("STTModel", "ModelDeployment", "ABTest"):
        for path, node in walk(schema_of(kind)):
            for rule in node.get("x-kubernetes-validations", []):
                if "oldSelf" in rule["rule"]:
                    continue
                if not any(fragment in rule["message"] for fragment in messages):
                    uncovered.append(f"{kind}{path}: {rule['message']}")
    assert uncovered == []
