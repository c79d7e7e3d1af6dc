"""The objects an ABTest writes: variant Deployments/Services, the endpoint route, the evaluator."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from stt_harness.resources import model_deployment, stt_model
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.builders.serving import Revision, revision_object_name
from stt_operator.evaluator.manifests import evaluation_set, evaluator_name
from stt_operator.experiments.objects import (
    LABEL_ABTEST,
    VariantBackend,
    endpoint_route,
    evaluator_for,
    owned_service_name,
    variant_deployment_name,
    variant_objects,
)

AB_BODY = {
    "apiVersion": "stt.dev/v1alpha1",
    "kind": "ABTest",
    "metadata": {"name": "ab", "namespace": "ns", "uid": "u-ab"},
}


def md_body() -> dict[str, Any]:
    md = model_deployment("asr", "ns", "model-a")
    md["metadata"]["uid"] = "u-md"
    return md


def test_variant_objects_are_owned_labelled_and_apart_from_the_endpoints_revisions() -> None:
    rev = Revision("model-b", "sha256:b")
    backend = VariantBackend(
        "candidate", "model-b", rev.id, owned_service_name("ab", "model-b", rev.id), True
    )
    deployment, service = variant_objects(
        abtest_body=AB_BODY,
        backend=backend,
        model_body=stt_model("model-b", "ns"),
        model_digest="sha256:b",
        replicas=2,
        resources_override=None,
        triton_image="triton:1",
        operator_image="op:1",
    )
    for obj in (deployment, service):
        meta = obj["metadata"]
        assert meta["name"] == backend.service and meta["namespace"] == "ns"
        assert meta["labels"][LABEL_ABTEST] == "ab"
        # Not the endpoint's label value: the ModelDeployment never takes them for its revisions.
        assert meta["labels"][LABEL_DEPLOYMENT] == variant_deployment_name("ab") != "asr"
        assert meta["ownerReferences"][0]["uid"] == "u-ab" and meta["ownerReferences"][0]["kind"] == "ABTest"
    assert deployment["spec"]["replicas"] == 2
    # A digest that no longer matches the recorded revision is refused with the reason.
    with pytest.raises(ValueError, match="STTModel changed during the test"):
        variant_objects(
            abtest_body=AB_BODY,
            backend=backend,
            model_body=stt_model("model-b", "ns"),
            model_digest="sha256:other",
            replicas=1,
            resources_override=None,
            triton_image="t",
            operator_image="o",
        )


def test_endpoint_route_keeps_the_endpoints_name_parents_and_owner() -> None:
    md = md_body()
    stable = revision_object_name("asr", "model-a", "r1")
    route = endpoint_route(md, {stable: 70, "abt-ab-model-b-r2": 30})
    assert route["metadata"]["name"] == "asr"
    assert route["metadata"]["ownerReferences"][0]["uid"] == "u-md"
    spec = route["spec"]
    assert spec["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "stt-gateway"}
    ]
    assert spec["hostnames"] == ["stt.example.test"]
    refs = spec["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [(stable, 70), ("abt-ab-model-b-r2", 30)]
    assert "sessionPersistence" not in spec["rules"][0]  # not in the standard channel


def test_evaluator_replays_to_every_variant_with_the_control_as_baseline() -> None:
    a, b = stt_model("model-a", "ns"), stt_model("model-b", "ns")
    assert evaluation_set([a, b]) is None
    b["spec"]["validation"]["evaluationSet"] = {"uri": "s3://bucket/set.tar.gz"}
    b["spec"]["source"]["secretRef"] = {"name": "creds"}
    assert evaluation_set([a, b]) == ("s3://bucket/set.tar.gz", "creds")
    backends = [
        VariantBackend("control", "model-a", "r1", revision_object_name("asr", "model-a", "r1"), False),
        VariantBackend("candidate", "model-b", "r2", owned_service_name("ab", "model-b", "r2"), True),
    ]
    cm, deployment, service = evaluator_for(
        abtest_body=AB_BODY,
        endpoint="asr",
        backends=backends,
        models={"model-a": a, "model-b": b},
        control="control",
        evalset=("s3://bucket/set.tar.gz", "creds"),
        operator_image="op:1",
    )
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert config["endpoint"] == "asr" and config["baseline"] == "control"
    assert [(t["variant"], t["url"].split(".")[0]) for t in config["targets"]] == [
        ("control", backends[0].service),
        ("candidate", backends[1].service),
    ]
    # Named apart from the endpoint's own rollout evaluator, even for an ABTest named like it.
    assert deployment["metadata"]["name"] == "abt-ab-evaluator" != evaluator_name("asr")
    for obj in (cm, deployment, service):
        assert obj["metadata"]["labels"][LABEL_ABTEST] == "ab"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "u-ab"
