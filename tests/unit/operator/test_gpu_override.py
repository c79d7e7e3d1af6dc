"""A ModelDeployment's `resources.gpu: 0` over an STTModel whose Triton instances are KIND_GPU.

Admission checks each object alone, so the combination is admitted; the operator either serves
the model on CPU instances (the init container rewrites the served config.pbtxt) or, for a
model that runs only on a GPU, creates nothing and says which field is at fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc.model_config_pb2 import ModelInstanceGroup

from stt_operator.builders.revision import effective_gpus, gpu_required_reason, serving_params
from stt_operator.builders.serving import Revision, triton_deployment
from stt_operator.triton.config import (
    ConfigError,
    parse_config_pbtxt,
    render_config_pbtxt,
    with_instance_kind,
)
from stt_operator.triton.materialize import materialize
from stt_operator.triton.spec import InstanceGroup, IOSpec, TensorSpec, TritonSpec

IO = IOSpec(
    inputs=[TensorSpec("AUDIO", "TYPE_FP32", [-1], "audio")],
    outputs=[TensorSpec("TRANSCRIPT", "TYPE_STRING", [1], "transcript")],
)


def _model(fmt: str = "onnx", **triton: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "conformer"},
        "spec": {"format": fmt, "source": {"uri": "file:///m/model.onnx"}, "triton": triton},
    }


def _pod(model: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    params = serving_params(
        deployment_name="asr",
        namespace="ns",
        revision=Revision("conformer", "d"),
        role="stable",
        model=model,
        replicas=1,
        resources_override=override,
        triton_image="t:1",
        operator_image="j:1",
        owner=None,
    )
    return triton_deployment(params)["spec"]["template"]["spec"]


def test_gpu_zero_override_serves_a_gpu_model_on_cpu_instances() -> None:
    model = _model(instanceGroup={"kind": "KIND_GPU", "count": 2})
    assert effective_gpus(model, {"gpu": 0}) == 0
    assert gpu_required_reason(model, 0) is None
    pod = _pod(model, {"gpu": 0, "cpu": "2"})
    container = pod["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "--allow-gpu-metrics=false" in container["args"]
    assert "--instance-kind=KIND_CPU" in pod["initContainers"][0]["args"]


def test_default_kind_is_gpu_so_an_unset_instance_group_is_rewritten_too() -> None:
    assert "--instance-kind=KIND_CPU" in _pod(_model(), {"gpu": 0})["initContainers"][0]["args"]


@pytest.mark.parametrize(
    ("model", "override"),
    [
        (_model(instanceGroup={"kind": "KIND_GPU"}), None),  # the model's own default: one GPU
        (_model(instanceGroup={"kind": "KIND_GPU"}), {"gpu": 1}),
        (_model(instanceGroup={"kind": "KIND_CPU"}), {"gpu": 0}),  # already CPU: nothing to rewrite
        (_model(instanceGroup={"kind": "KIND_CPU"}), {"gpu": 2}),
    ],
)
def test_no_rewrite_when_the_pod_has_gpus_or_the_model_is_cpu(model: dict, override: dict | None) -> None:
    args = _pod(model, override)["initContainers"][0]["args"]
    assert not any(a.startswith("--instance-kind") for a in args)


@pytest.mark.parametrize(
    ("model", "names"),
    [
        (_model("tensorrt-plan"), "format tensorrt-plan"),
        (_model("onnx", backend="tensorrt"), "Triton backend tensorrt"),
        (_model("onnx", tensorrtFp16=True), "triton.tensorrtFp16"),
        (_model("onnx", instanceGroup={"kind": "KIND_GPU", "gpus": [0]}), "triton.instanceGroup.gpus"),
    ],
)
def test_gpu_only_models_are_refused_naming_the_field(model: dict, names: str) -> None:
    reason = gpu_required_reason(model, effective_gpus(model, {"gpu": 0}))
    assert reason is not None
    assert reason.startswith("spec.resources.gpu is 0") and names in reason and "conformer" in reason
    assert gpu_required_reason(model, 1) is None


def test_with_instance_kind_rewrites_every_group_and_keeps_the_rest() -> None:
    triton = TritonSpec(instance_group=InstanceGroup("KIND_GPU", 3))
    text = render_config_pbtxt("asr", triton, IO, model_format="onnx")
    cpu = parse_config_pbtxt(with_instance_kind(text, "KIND_CPU"))
    assert [(g.kind, g.count) for g in cpu.instance_group] == [(ModelInstanceGroup.KIND_CPU, 3)]
    original = parse_config_pbtxt(text)
    del original.instance_group[:]
    del cpu.instance_group[:]
    assert cpu == original  # inputs, outputs, batching: untouched


@pytest.mark.parametrize(
    ("triton", "fmt", "message"),
    [
        (TritonSpec(instance_group=InstanceGroup("KIND_GPU", 1, [0])), "onnx", "gpus pins GPU ids"),
        (TritonSpec(tensorrt_fp16=True), "onnx", "tensorrtFp16"),
        (TritonSpec(), "tensorrt-plan", "TensorRT backend"),
    ],
)
def test_with_instance_kind_refuses_what_cannot_run_on_cpu(
    triton: TritonSpec, fmt: str, message: str
) -> None:
    text = render_config_pbtxt("asr", triton, IO, model_format=fmt)
    with pytest.raises(ConfigError, match=message):
        with_instance_kind(text, "KIND_CPU")


def test_materialize_writes_the_rewritten_config(tmp_path: Path) -> None:
    artifact = tmp_path / "asr.onnx"
    artifact.write_bytes(b"onnx bytes")
    config = render_config_pbtxt("asr", TritonSpec(), IO, model_format="onnx")
    assert "KIND_GPU" in config
    out = materialize(f"file://{artifact}", "asr", config, tmp_path / "models", instance_kind="KIND_CPU")
    served = (out / "config.pbtxt").read_text()
    assert "KIND_CPU" in served and "KIND_GPU" not in served


def test_pinned_gpu_ids_need_as_many_gpus_in_the_pod() -> None:
    model = _model(instanceGroup={"kind": "KIND_GPU", "gpus": [0, 2]})
    assert gpu_required_reason(model, 3) is None
    reason = gpu_required_reason(model, effective_gpus(model, {"gpu": 2}))
    assert reason is not None and reason.startswith("spec.resources.gpu is 2") and "[0, 2]" in reason
    assert "at least 3" in reason
