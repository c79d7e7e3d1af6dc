"""Operator-wide placement of the pods it creates (builders/placement.py)."""

from __future__ import annotations

from stt_operator.artifacts.jobs import validation_job
from stt_operator.builders.placement import Placement, place
from stt_operator.triton.pod import TritonPodParams, triton_pod_spec

REAL = Placement(
    nodeSelector={"stt.dev/node": "real"},
    tolerations=[{"key": "stt.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
)


def _deployment(pod_spec: dict) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": pod_spec}}}


def test_job_gets_selector_and_toleration_without_changing_the_input() -> None:
    job = validation_job("m", "ns", {"source": {"uri": "file:///m.onnx"}}, "jobs:1", {"uid": "u"})
    placed = place(job, REAL)
    pod = placed["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"stt.dev/node": "real"}
    assert pod["tolerations"] == REAL.tolerations
    assert "nodeSelector" not in job["spec"]["template"]["spec"]  # pure


def test_triton_pod_keeps_its_gpu_selector_and_toleration() -> None:
    spec = triton_pod_spec(TritonPodParams(model_name="m", config_map="c", artifact_uri="file:///x"))
    pod = place(_deployment(spec), REAL)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"stt.dev/node": "real", "nvidia.com/gpu.present": "true"}
    keys = [t["key"] for t in pod["tolerations"]]
    assert keys == ["nvidia.com/gpu", "stt.dev/real-node"]
    # Placing twice changes nothing (reconciles run again and again).
    again = place(place(_deployment(spec), REAL), REAL)["spec"]["template"]["spec"]
    assert again == pod


def test_empty_placement_and_other_kinds_pass_unchanged() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "spec": {"ports": []}}
    assert place(service, REAL) == service
    job = validation_job("m", "ns", {"source": {"uri": "file:///m.onnx"}}, "jobs:1", {"uid": "u"})
    assert place(job, Placement()) == job
