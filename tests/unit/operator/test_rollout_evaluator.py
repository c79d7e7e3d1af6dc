"""The evaluator a rollout runs: when, against what, with which labelled set."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from stt_operator.api.modeldeployment import ModelDeployment, ModelDeploymentStatus
from stt_operator.builders.serving import revision_object_name
from stt_operator.rollout.evaluation import needs_evaluator, rollout_evaluator

IO = {
    "inputs": [{"name": "audio", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}],
    "outputs": [{"name": "transcript", "dataType": "TYPE_STRING", "dims": [1], "role": "transcript"}],
}


def model(name: str, evalset: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"io": IO, "validation": {"enabled": False}}
    if evalset:
        spec["validation"]["evaluationSet"] = {"uri": evalset}
    return {"metadata": {"name": name}, "spec": spec}


def body(strategy: str = "Canary", preset: str = "wer") -> dict[str, Any]:
    return {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "asr", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "model": {"name": "model-b"},
            "strategy": {"type": strategy},
            "analysis": {"metrics": [{"name": "m", "preset": preset, "thresholdRange": {"max": 1}}]},
        },
    }


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("wer", True), ("cer", True), ("latency-p95", True), ("confidence", True), ("error-rate", False)],
)
def test_needs_evaluator_only_for_presets_on_its_series(preset: str, expected: bool) -> None:
    assert needs_evaluator(ModelDeployment.from_body(body(preset=preset)).spec) is expected


@pytest.mark.parametrize(("strategy", "variant"), [("Canary", "canary"), ("BlueGreen", "preview")])
def test_evaluator_replays_to_stable_and_candidate(strategy: str, variant: str) -> None:
    b = body(strategy)
    spec = ModelDeployment.from_body(b).spec
    objects = rollout_evaluator(
        b,
        spec,
        stable=("rev-a", model("model-a", "pvc://sets/en")),
        candidate=("rev-b", model("model-b", "file:///sets/new")),
        operator_image="op:1",
    )
    assert objects is not None
    config_map, deployment, service = objects
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["endpoint"] == "asr" and config["baseline"] == "stable"
    assert config["evalset"] == "file:///sets/new"  # the new model's set wins
    assert [(t["variant"], t["model"]) for t in config["targets"]] == [
        ("stable", "model-a"),
        (variant, "model-b"),
    ]
    assert config["targets"][1]["url"].startswith(
        revision_object_name("asr", "model-b", "rev-b") + ".ns.svc:"
    )
    assert deployment["metadata"]["labels"]["stt.dev/model-deployment"] == "asr"
    assert "stt.dev/revision" not in deployment["metadata"]["labels"]  # never mistaken for a revision
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert service["spec"]["ports"][0]["name"] == "metrics"


def test_no_evaluation_set_no_evaluator() -> None:
    b = body()
    spec = ModelDeployment.from_body(b).spec
    assert (
        rollout_evaluator(
            b, spec, stable=("a", model("model-a")), candidate=("b", model("model-b")), operator_image="x"
        )
        is None
    )


def test_evaluator_change_waits_for_the_new_revision_then_runs_then_goes() -> None:
    from stt_operator.builders.placement import Images, Placement
    from stt_operator.rollout.evaluation import evaluator_change

    b = body()
    spec = ModelDeployment.from_body(b).spec
    in_flight = ModelDeploymentStatus(canary_revision="rev-b", stable_revision="rev-a")
    common: dict[str, Any] = {
        "candidate_model": model("model-b", "pvc://sets/en"),
        "stable_model": model("model-a"),
        "images": Images(
            "triton:1", "fetch:1", "op:1", Placement(), Placement(node_selector={"pool": "cpu"})
        ),
    }
    loading = evaluator_change(b, spec, in_flight, found=False, candidate_serves=False, **common)
    assert (loading.apply, loading.remove) == ([], False)  # no replay against a loading model
    serving = evaluator_change(b, spec, in_flight, found=False, candidate_serves=True, **common)
    kinds = sorted(o["kind"] for o in serving.apply)
    assert kinds == ["ConfigMap", "Deployment", "Service"] and not serving.remove
    deployment = next(o for o in serving.apply if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["nodeSelector"]["pool"] == "cpu"
    promoted = ModelDeploymentStatus(stable_revision="rev-b")
    done = evaluator_change(b, spec, promoted, found=True, candidate_serves=False, **common)
    assert (done.apply, done.remove) == ([], True)
    nothing = evaluator_change(b, spec, promoted, found=False, candidate_serves=False, **common)
    assert (nothing.apply, nothing.remove) == ([], False)
    # No labelled set on either model: nothing to replay, an old evaluator goes.
    bare = {**common, "candidate_model": model("model-b")}
    assert evaluator_change(b, spec, in_flight, found=True, candidate_serves=True, **bare).remove


def test_plan_evaluator_reads_the_stable_model_only_when_the_evaluator_may_run() -> None:
    from stt_operator.builders.placement import Images, Placement
    from stt_operator.rollout.evaluation import plan_evaluator
    from stt_operator.rollout.objects import Endpoint
    from stt_operator.rollout.plan import ObservedRevision

    b = body()
    spec = ModelDeployment.from_body(b).spec
    images = Images("triton:1", "fetch:1", "op:1", Placement(), Placement())
    endpoint = Endpoint("asr", "ns", {}, spec, images)
    candidate = model("model-b", "pvc://sets/en")
    in_flight = ModelDeploymentStatus(
        canary_revision="rev-b", stable_revision="rev-a", stable_model="model-a"
    )
    evaluator = [{"metadata": {"name": "asr-evaluator"}}]
    reads: list[str] = []

    def get_model(name: str) -> dict[str, Any] | None:
        reads.append(name)
        return model(name)

    def plan(status: ModelDeploymentStatus, deployments: list[Any], available: bool) -> Any:
        observed = {"rev-b": ObservedRevision("rev-b", "model-b", available)}
        return plan_evaluator(b, endpoint, status, deployments, observed, candidate, get_model)

    loading = plan(in_flight, [], available=False)
    assert (loading.apply, loading.remove, reads) == ([], False, [])  # nothing read, nothing done
    serving = plan(in_flight, [], available=True)
    assert sorted(o["kind"] for o in serving.apply) == ["ConfigMap", "Deployment", "Service"]
    assert reads == ["model-a"]
    assert plan(in_flight, evaluator, available=False).apply  # found running: it keeps running
    reads.clear()
    promoted = ModelDeploymentStatus(stable_revision="rev-b", stable_model="model-b")
    done = plan(promoted, evaluator, available=True)
    assert (done.apply, done.remove, reads) == ([], True, [])  # not wanted: removed, nothing read
    settled = plan(promoted, [], available=True)
    assert (settled.apply, settled.remove) == ([], False)
