"""The project's images on the real node (kubelet + containerd): nothing here runs on the host.

- `helm install` of the chart runs the operator pod from the built operator image; `/healthz`
  and `/metrics` answer through its Service; it works with only the chart's RBAC.
- An STTModel's validation Job runs in the jobs image; its verdict and, for a tampered
  artifact, the termination message naming the failed check reach the STTModel's status.
- An Immediate ModelDeployment of the built-in pocketsphinx recogniser brings up a real Triton
  pod (CPU Triton image, fetch-model init container in the jobs image, the operator's rendered
  config for the Python backend) that turns Ready only once its model is loaded (readiness on
  `/v2/models/<m>/ready`); a request through the Traefik Gateway, on the HTTPRoute the operator
  wrote, is transcribed. Killing the Triton container drops readiness; the operator's status
  turns Degraded / not Ready and the route's weight on the dead backend drops to 0; all of it
  comes back once the restarted server has loaded the model.

The chart is installed with the operator's pod placement pointing Jobs and Triton pods at the
real node (`config.jobsPlacement`, `config.servingPlacement`), as a cluster with a dedicated
pool would be set up.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
import yaml

from stt_harness.cluster import LocalCluster
from stt_harness.gateway import GATEWAY_NAME, TraefikGateway
from stt_harness.images import BuiltImage, build_images
from stt_harness.kubewait import condition, wait_for
from stt_harness.node import REAL_NODE_SELECTOR, REAL_NODE_TOLERATION, RealNode
from stt_harness.samples import sphinx_spec
from stt_operator.services.kube import Kube
from stt_operator.speech.evalset import synthesise

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "stt-operator"
API = "stt.dev/v1alpha1"
ONNX_MODEL = ROOT / "operator" / "stt_operator" / "speech" / "assets" / "model.onnx"


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


@dataclass
class Install:
    namespace: str
    release: str
    images: dict[str, BuiltImage]
    node: RealNode


@pytest.fixture(scope="module")
def node_images(cluster: LocalCluster) -> dict[str, BuiltImage]:
    """Build (or reuse) the images and import them into the real node's containerd."""
    assert cluster.real_node is not None, "the session cluster starts a real node"
    built = build_images()
    present = set(cluster.real_node.images())
    for image in built.values():
        if image.ref not in present:
            cluster.real_node.import_image(image.archive)
    present = set(cluster.real_node.images())
    assert {i.ref for i in built.values()} <= present, present
    return built


def _helm(cluster: LocalCluster, *args: str, timeout: float = 600) -> str:
    res = subprocess.run(
        [str(cluster.bin_dir / "helm"), *args],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, f"helm {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def installed(
    cluster: LocalCluster, node_images: dict[str, BuiltImage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Install]:
    ns = f"stt-images-{uuid.uuid4().hex[:6]}"
    release = f"stt-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    on_node = {"nodeSelector": dict(REAL_NODE_SELECTOR), "tolerations": [dict(REAL_NODE_TOLERATION)]}

    def repo_tag(image: BuiltImage) -> dict[str, str]:
        repository, tag = image.ref.rsplit(":", 1)
        return {"repository": repository, "tag": tag}

    values = {
        "image": {**repo_tag(node_images["operator"]), "pullPolicy": "Never"},
        "jobsImage": repo_tag(node_images["jobs"]),
        "watchNamespaces": [ns],
        "peering": {"enabled": False},
        **on_node,
        "config": {
            "tritonImage": node_images["triton"].ref,
            "logFormat": "text",
            # The real node has this machine's 2 cores; the default 2-CPU Job would not fit.
            "jobResources": {"cpu": "1", "memory": "2Gi"},
            "jobsPlacement": on_node,
            "servingPlacement": on_node,
        },
    }
    values_file = tmp_path_factory.mktemp("helm") / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    t0 = time.monotonic()
    _helm(
        cluster,
        "install",
        release,
        str(CHART),
        "-n",
        ns,
        "-f",
        str(values_file),
        "--wait",
        "--timeout",
        "300s",
    )
    print(f"helm install with the built images: {time.monotonic() - t0:.1f}s")
    try:
        yield Install(ns, release, node_images, cluster.real_node)  # type: ignore[arg-type]
    finally:
        subprocess.run(
            [str(cluster.bin_dir / "helm"), "uninstall", release, "-n", ns, "--wait", "--timeout", "120s"],
            env=cluster.env(),
            capture_output=True,
            timeout=180,
            check=False,
        )
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def kube(kube_api) -> Kube:
    return Kube(kube_api)


def _pods(kube: Kube, ns: str, selector: dict[str, str]) -> list[dict[str, Any]]:
    return kube.list("v1", "Pod", ns, selector)


def _ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready").get("status") == "True"


def test_chart_runs_the_operator_image_on_the_real_node(installed: Install, kube: Kube) -> None:
    ns = installed.namespace
    deployment = kube.list("apps/v1", "Deployment", ns)[0]
    selector = deployment["spec"]["selector"]["matchLabels"]
    (pod,) = _pods(kube, ns, selector)
    assert pod["spec"]["nodeName"] == installed.node.name
    assert _ready(pod), pod["status"]
    (status,) = pod["status"]["containerStatuses"]
    assert status["image"].endswith(installed.images["operator"].ref), status["image"]
    assert pod["spec"]["securityContext"]["runAsUser"] == 65532
    service = next(s for s in kube.list("v1", "Service", ns) if s["spec"]["selector"] == selector)
    ip = service["spec"]["clusterIP"]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    wait_for(
        lambda: (r := http_get(f"http://{ip}:{ports['healthz']}/healthz"))[0] == 200 and r,
        60,
        "/healthz through the Service",
    )
    code, metrics = http_get(f"http://{ip}:{ports['metrics']}/metrics")
    assert code == 200 and "stt_operator_" in metrics, metrics[:500]


def _onnx_model(name: str, ns: str, sha256: str) -> dict[str, Any]:
    vocabulary = json.loads(ONNX_MODEL.with_name("vocab.json").read_text())["tokens"]
    return {
        "apiVersion": API,
        "kind": "STTModel",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "language": "en-US",
            "format": "onnx",
            # The built-in model that the jobs image carries (stt_operator.models.builtin).
            "source": {"uri": "file:///opt/stt-models/onnx_ctc/model.onnx", "sha256": sha256},
            "io": {
                "inputs": [{"name": "audio", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}],
                "outputs": [
                    {
                        "name": "logits",
                        "dataType": "TYPE_FP32",
                        "dims": [-1, len(vocabulary)],
                        "role": "logits",
                    }
                ],
                "vocabulary": vocabulary,
            },
            "triton": {"maxBatchSize": 8, "instanceGroup": {"kind": "KIND_CPU", "count": 1}},
            "resources": {"gpu": 0},  # gpu 0 needs KIND_CPU instances (admission rule)
        },
    }


def _verdict(kube: Kube, ns: str, name: str, timeout: float = 420) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (m := kube.get(API, "STTModel", name, ns))
            and condition(m, "Validated").get("status") in ("True", "False")
            and m
        ),
        timeout,
        f"STTModel {name} validation verdict",
    )


def test_validation_job_runs_in_the_jobs_image(installed: Install, kube: Kube) -> None:
    import hashlib

    ns = installed.namespace
    digest = hashlib.sha256(ONNX_MODEL.read_bytes()).hexdigest()
    kube.apply(_onnx_model("ctc", ns, digest))
    kube.apply(_onnx_model("tampered", ns, "0" * 64))
    good = _verdict(kube, ns, "ctc")
    assert condition(good, "Validated")["status"] == "True", condition(good, "Validated")
    steps = {s["name"]: s["result"] for s in good["status"]["validation"]["steps"]}
    assert steps["integrity"] == "passed" and steps["security"] == "passed", steps
    job_name = good["status"]["validation"]["jobName"]
    pods = _pods(kube, ns, {"job-name": job_name})
    assert pods and all(p["spec"]["nodeName"] == installed.node.name for p in pods)
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert pods[0]["status"]["containerStatuses"][0]["image"].endswith(installed.images["jobs"].ref)

    bad = _verdict(kube, ns, "tampered")
    verdict = condition(bad, "Validated")
    assert verdict["status"] == "False"
    # The container's termination message names the failed check and the pinned digest.
    assert "integrity" in verdict["message"] and "0000000000" in verdict["message"], verdict
    bad_pods = _pods(kube, ns, {"job-name": bad["status"]["validation"]["jobName"]})
    messages = [
        (cs["state"].get("terminated") or {}).get("message", "")
        for p in bad_pods
        for cs in p["status"].get("containerStatuses", [])
    ]
    assert any("integrity" in m for m in messages), messages


def _sphinx_model(name: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "STTModel",
        "metadata": {"name": name, "namespace": ns},
        "spec": sphinx_spec(),
    }


HOST = "asr.images.test"  # the endpoint's hostname on the shared Traefik (routes of other tests differ)
COMMAND = "turn off the kitchen lights"


def _transcribe_through(gateway: TraefikGateway, model: str, speech: np.ndarray) -> tuple[int, str]:
    """One Triton HTTP/JSON inference request sent to the Gateway's listener: (status, text).

    The text is "" when the answer carries no TRANSCRIPT data (what the image did before its
    models' numpy was pinned below 2, see docs/images.md)."""
    body = {
        "inputs": [
            {
                "name": "AUDIO",
                "shape": list(speech.shape),
                "datatype": "INT16",
                "data": speech.ravel().tolist(),
            }
        ],
        "outputs": [{"name": "TRANSCRIPT"}],
    }
    req = urllib.request.Request(
        f"{gateway.url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Host": HOST, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.load(resp)
            data = [o.get("data") or [] for o in answer["outputs"] if o["name"] == "TRANSCRIPT"]
            return resp.status, str(data[0][0]) if data and data[0] else ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def _understood(text: str) -> bool:
    """The recogniser's answer is the spoken command, up to a word error or two."""
    return bool(text) and jiwer.wer(COMMAND, text) <= 0.4


def _route_weights(gateway: TraefikGateway, ns: str) -> dict[str, int]:
    route = gateway.http_route(ns, "asr") or {}
    return {
        b["name"]: b.get("weight", 1)
        for r in route.get("spec", {}).get("rules", [])
        for b in r["backendRefs"]
    }


def test_triton_pod_serves_through_the_gateway_and_the_operator_reacts_to_its_loss(
    installed: Install, kube: Kube, traefik: TraefikGateway, tmp_path: Path
) -> None:
    ns = installed.namespace
    traefik.create_gateway(ns)
    speech = synthesise(COMMAND, "en-us", 160, 50, tmp_path).reshape(1, -1)
    kube.apply(_sphinx_model("sphinx", ns))
    kube.apply(
        {
            "apiVersion": API,
            "kind": "ModelDeployment",
            "metadata": {"name": "asr", "namespace": ns},
            "spec": {
                "model": {"name": "sphinx"},
                "replicas": 1,
                "strategy": {"type": "Immediate"},
                "endpoint": {"gatewayRef": {"name": GATEWAY_NAME}, "hostnames": [HOST]},
            },
        }
    )

    def triton_pod() -> dict[str, Any] | None:
        pods = [
            p
            for p in kube.list("v1", "Pod", ns)
            if any(c["name"] == "triton" for c in p["spec"]["containers"])
            and not p["metadata"].get("deletionTimestamp")
        ]
        return pods[0] if pods else None

    pod = wait_for(lambda: (p := triton_pod()) and _ready(p) and p, 600, "a Ready Triton pod")
    assert pod["spec"]["nodeName"] == installed.node.name
    triton = next(c for c in pod["spec"]["containers"] if c["name"] == "triton")
    assert triton["image"] == installed.images["triton"].ref
    model_name = next(a for a in triton["args"] if a.startswith("--load-model=")).split("=", 1)[1]
    assert triton["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{model_name}/ready"
    (init,) = pod["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 0
    assert init["image"].endswith(installed.images["jobs"].ref)
    ip = pod["status"]["podIP"]
    code, _ = http_get(f"http://{ip}:8000/v2/models/{model_name}/ready")
    assert code == 200
    code, body = http_get(f"http://{ip}:8000/v2/models/{model_name}/config")
    served = json.loads(body)
    # Triton loaded the operator's rendering of the STTModel (ConfigMap -> init container).
    spec = sphinx_spec()["triton"]
    assert served["backend"] == "python" and served["max_batch_size"] == spec["maxBatchSize"], served
    assert {k: v["string_value"] for k, v in served["parameters"].items()}.items() >= spec[
        "parameters"
    ].items()
    assert [(g["kind"], g["count"]) for g in served["instance_group"]] == [("KIND_CPU", 1)]
    assert [o["name"] for o in served["output"]] == ["TRANSCRIPT", "CONFIDENCE"]
    # The operator sees the real pod's availability in its own status.
    md = wait_for(
        lambda: (
            (m := kube.get(API, "ModelDeployment", "asr", ns))
            and condition(m, "Available").get("status") == "True"
            and m
        ),
        120,
        "the ModelDeployment Available",
    )
    assert md["status"].get("stableModel") == "sphinx", md["status"]
    assert md["status"]["phase"] == "Healthy"

    # The operator's HTTPRoute (the test writes none) carries a real request to the pod.
    wait_for(lambda: _route_weights(traefik, ns), 60, "the operator's HTTPRoute")
    (service,) = _route_weights(traefik, ns)
    assert _route_weights(traefik, ns) == {service: 100}
    replies: list[tuple[int, str]] = []
    try:
        reply = wait_for(
            lambda: (
                (r := _transcribe_through(traefik, model_name, speech))
                and replies.append(r) is None
                and r[0] == 200
                and r
            ),
            120,
            "a transcription through the Gateway",
        )
    except AssertionError as exc:
        route = traefik.http_route(ns, "asr") or {}
        raise AssertionError(
            f"{exc}\nlast replies {replies[-2:]}\nroute {json.dumps(route)[-3000:]}"
        ) from None
    # The request went through the Gateway to the pod's model, which recognised the command.
    assert _understood(reply[1]), reply

    # Kill the Triton container: the pod leaves Ready until the restarted server has loaded
    # the model again; meanwhile the operator says the endpoint is not serving and takes the
    # backend's weight to 0 (it stays named, so recovery is a weight edit).
    (status,) = [c for c in pod["status"]["containerStatuses"] if c["name"] == "triton"]
    container_id = status["containerID"].split("://", 1)[1]
    restarts = status["restartCount"]
    installed.node.ctr("tasks", "kill", "--signal", "SIGKILL", container_id)
    t_kill = time.monotonic()
    wait_for(
        lambda: (p := kube.get("v1", "Pod", pod["metadata"]["name"], ns)) and not _ready(p),
        60,
        "readiness to drop after the kill",
        every=0.2,
    )
    lost = wait_for(
        lambda: (
            (m := kube.get(API, "ModelDeployment", "asr", ns))
            and m["status"].get("phase") == "Degraded"
            and condition(m, "Ready").get("status") == "False"
            and m
        ),
        60,
        "the ModelDeployment to say it is not serving",
        every=0.2,
    )
    assert condition(lost, "Available")["reason"] == "NoReadyReplicas", lost["status"]
    assert lost["status"]["stableModel"] == "sphinx" and not lost["status"].get("canaryRevision")
    wait_for(lambda: _route_weights(traefik, ns) == {service: 0}, 30, "the route's weight to drop to 0")
    if not _ready(kube.get("v1", "Pod", pod["metadata"]["name"], ns)):
        code, text = _transcribe_through(traefik, model_name, speech)
        assert code >= 500, (code, text)  # the Gateway answers; no request reaches a dead backend
    print(f"killed Triton: operator reported NotServing within {time.monotonic() - t_kill:.1f}s")

    back = wait_for(
        lambda: (p := kube.get("v1", "Pod", pod["metadata"]["name"], ns)) and _ready(p) and p,
        600,
        "the restarted Triton to load its model",
    )
    (status,) = [c for c in back["status"]["containerStatuses"] if c["name"] == "triton"]
    assert status["restartCount"] == restarts + 1
    healed = wait_for(
        lambda: (
            (m := kube.get(API, "ModelDeployment", "asr", ns))
            and m["status"].get("phase") == "Healthy"
            and condition(m, "Ready").get("status") == "True"
            and m
        ),
        120,
        "the ModelDeployment Healthy again",
    )
    assert len(healed["status"]["revisions"]) == 1, healed["status"]["revisions"]  # no new rollout
    wait_for(lambda: _route_weights(traefik, ns) == {service: 100}, 60, "the route's weight back to 100")
    reply = wait_for(
        lambda: (r := _transcribe_through(traefik, model_name, speech))[0] == 200 and r,
        120,
        "a transcription through the Gateway after the restart",
    )
    # The request went through the Gateway to the pod's model, which recognised the command.
    assert _understood(reply[1]), reply
