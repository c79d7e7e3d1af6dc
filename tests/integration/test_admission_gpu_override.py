"""`resources.gpu: 0` on a ModelDeployment over an STTModel whose instances are KIND_GPU.

Admission checks each object alone, so the real apiserver admits the pair. The operator (its
own process, against the real apiserver) serves such a model on CPU instances: the pod asks for
no GPU and its init container rewrites the served config.pbtxt to KIND_CPU. The init container's
own command, run here on the ConfigMap the operator rendered, gives a repository that a real
tritonserver without GPUs loads, where the unrewritten one fails. A model that runs only on a
GPU (a TensorRT plan) gets no Deployment, and a GPURequired condition and Event naming the field.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import tritonclient.http as httpclient

from stt_harness.kubewait import condition, event_reasons, wait_for
from stt_harness.resources import API, model_deployment
from stt_harness.triton import start_triton
from stt_operator.api.sttmodel import IOSpec, TritonSpec
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.models import catalog
from stt_operator.triton.materialize import main as materialize_main
from stt_operator.triton.repository import write_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


@pytest.fixture
def namespace(operator_namespace: str) -> str:
    return operator_namespace


def _api(model: type, value: Any) -> dict[str, Any]:
    fields = {k: v for k, v in asdict(value).items() if v is not None}
    return model.model_validate(fields).to_dict()


def _gpu_model(name: str, namespace: str, uri: str, fmt: str = "python") -> dict[str, Any]:
    """The pocketsphinx recogniser declared with KIND_GPU instances and one GPU per pod."""
    triton = _api(TritonSpec, catalog.sphinx_triton(kind="KIND_GPU"))
    if fmt == "tensorrt-plan":
        triton["backend"] = "tensorrt"
        triton.pop("parameters")
    return {
        "apiVersion": API,
        "kind": "STTModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "language": "en-US",
            "format": fmt,
            "source": {"uri": uri},
            "io": _api(IOSpec, catalog.sphinx_io()),
            "triton": triton,
            "resources": {"gpu": 1},
            "validation": {"enabled": False},
        },
    }


def _ready(kube, name: str, namespace: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (m := kube.get(API, "STTModel", name, namespace))
            and condition(m, "Ready").get("status") == "True"
            and m
        ),
        timeout=120,
        what=f"STTModel {name} Ready",
    )


def test_gpu_zero_override_serves_a_gpu_model_on_cpu_instances(operator, kube, namespace, tmp_path):
    source = tmp_path / "sphinx"
    source.mkdir()
    for rel, content in catalog.sphinx_version_files().items():
        target = source / rel
        if isinstance(content, Path):
            target.write_bytes(content.read_bytes())
        else:
            target.write_text(str(content))
    kube.apply(_gpu_model("sphinx-gpu", namespace, f"file://{source}"))
    model = _ready(kube, "sphinx-gpu", namespace)
    kube.apply(model_deployment("cpu-asr", namespace, "sphinx-gpu", resources={"gpu": 0, "cpu": "1"}))

    deployment = wait_for(
        lambda: next(
            iter(kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: "cpu-asr"})), None
        ),
        timeout=120,
        what="the revision Deployment",
    )
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in container["resources"].get("requests", {})
    assert "nodeSelector" not in pod
    init_args = pod["initContainers"][0]["args"]
    assert "--instance-kind=KIND_CPU" in init_args

    # The served config: the operator's ConfigMap still says KIND_GPU (the STTModel's own).
    config_map = kube.get("v1", "ConfigMap", model["status"]["tritonConfigMap"], namespace)
    config_text = config_map["data"]["config.pbtxt"]
    assert "KIND_GPU" in config_text
    # Without the rewrite a GPU-less tritonserver refuses the model.
    plain = tmp_path / "plain"
    write_model(plain / "models", "sphinx-gpu", config_text, catalog.sphinx_version_files())
    with pytest.raises(RuntimeError, match="failed to load"):
        start_triton(plain / "models", plain, models=["sphinx-gpu"], timeout=90)

    # The init container's own arguments, with this machine's paths for its two volumes.
    config_file = tmp_path / "config.pbtxt"
    config_file.write_text(config_text)
    served = tmp_path / "served"
    args = [
        f"--config={config_file}"
        if a.startswith("--config=")
        else f"--repository={served / 'models'}"
        if a.startswith("--repository=")
        else a
        for a in init_args
    ]
    assert materialize_main(args) == 0
    assert "KIND_CPU" in (served / "models" / "sphinx-gpu" / "config.pbtxt").read_text()
    server = start_triton(served / "models", served, models=["sphinx-gpu"], timeout=120)
    try:
        assert httpclient.InferenceServerClient(server.http_url).is_model_ready("sphinx-gpu")
    finally:
        server.stop()


def test_gpu_zero_override_over_a_gpu_only_model_creates_nothing(operator, kube, namespace):
    kube.apply(_gpu_model("plan", namespace, "file:///models/plan", fmt="tensorrt-plan"))
    _ready(kube, "plan", namespace)
    kube.apply(model_deployment("plan-asr", namespace, "plan", resources={"gpu": 0}))

    md = wait_for(
        lambda: (
            (m := kube.get(API, "ModelDeployment", "plan-asr", namespace))
            and condition(m, "Ready").get("reason") == "GPURequired"
            and m
        ),
        timeout=120,
        what="GPURequired on the ModelDeployment",
    )
    ready = condition(md, "Ready")
    assert ready["status"] == "False"
    assert ready["message"].startswith("spec.resources.gpu is 0") and "tensorrt-plan" in ready["message"]
    assert md["status"]["phase"] == "Failed"
    wait_for(lambda: "GPURequired" in event_reasons(kube, namespace, "plan-asr"), what="GPURequired Event")
    warnings = [
        e
        for e in kube.list("v1", "Event", namespace)
        if e.get("reason") == "GPURequired" and e["involvedObject"]["name"] == "plan-asr"
    ]
    assert warnings and all(e["type"] == "Warning" for e in warnings)
    time.sleep(3)  # several reconcile intervals: still nothing created
    assert kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: "plan-asr"}) == []
    assert kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "plan-asr", namespace) is None

    # Giving the endpoint a GPU again clears the condition and serves it.
    kube.apply(model_deployment("plan-asr", namespace, "plan", resources={"gpu": 1}))
    wait_for(
        lambda: kube.list("apps/v1", "Deployment", namespace, {LABEL_DEPLOYMENT: "plan-asr"}),
        timeout=120,
        what="the revision Deployment once the endpoint has a GPU",
    )
