"""Smoke transcription before traffic, on the real node: real Triton pods (the locally built
CPU Triton image, the built-in pocketsphinx recogniser fetched by the jobs image's init
container) and the operator's own tritonclient call through each new revision's Service.

- A canary of the deliberately degraded recogniser answers the built-in utterance wrongly:
  it never gets weight, `SmokeTest=False` (SmokeTestFailed) carries its transcript, and it
  is rolled back while the stable keeps 100 % of the route.
- A canary of a sound recogniser transcribes it right (`SmokeTest=True`) and then gets its
  first weight.

The operator runs on the host (as in the other operator tests) with its serving placement on
the real node; the host reaches the pods' addresses (the revision Services are headless)
through the node's routes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from stt_harness.cluster import LocalCluster
from stt_harness.images import BuiltImage, build_images
from stt_harness.kubewait import condition, wait_for
from stt_harness.node import REAL_NODE_SELECTOR, REAL_NODE_TOLERATION
from stt_harness.operator import OperatorProcess
from stt_harness.routewatch import RouteWatch
from stt_harness.samples import sphinx_spec
from stt_operator.builders.metadata import LABEL_DEPLOYMENT
from stt_operator.services.kube import Kube
from stt_operator.services.smoke import builtin_utterance

pytestmark = pytest.mark.integration

API = "stt.dev/v1alpha1"
NAME = "asr"


@pytest.fixture(scope="module")
def node_images(cluster: LocalCluster) -> dict[str, BuiltImage]:
    """The jobs image (fetch-model init container) and the CPU Triton image, in the node's containerd."""
    assert cluster.real_node is not None, "the session cluster starts a real node"
    built = build_images(("jobs", "triton"))
    present = set(cluster.real_node.images())
    for image in built.values():
        if image.ref not in present:
            cluster.real_node.import_image(image.archive)
    assert {i.ref for i in built.values()} <= set(cluster.real_node.images())
    return built


@pytest.fixture(scope="module")
def smoke_ns(cluster: LocalCluster, node_images: dict[str, BuiltImage]) -> Iterator[str]:
    """A namespace watched by an operator of its own, whose Triton pods go to the real node."""
    ns = f"stt-smoke-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    on_node = {"nodeSelector": dict(REAL_NODE_SELECTOR), "tolerations": [dict(REAL_NODE_TOLERATION)]}
    env = {
        "STT_OPERATOR_SERVING_PLACEMENT": yaml.safe_dump(on_node),
        "STT_OPERATOR_TRITON_IMAGE": node_images["triton"].ref,
        "STT_OPERATOR_FETCH_IMAGE": node_images["jobs"].ref,
    }
    proc = OperatorProcess(cluster.kubeconfig, reconcile_interval_s=1.0, namespaces=[ns])
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        proc.start()
    alive = False
    try:
        yield ns
        alive = proc.process is not None and proc.process.poll() is None
    finally:
        try:  # the operator runs while the namespace goes, so its finalizers are released
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
            kube = Kube(cluster.api_client())
            wait_for(lambda: kube.get("v1", "Namespace", ns, None) is None, 120, f"namespace {ns} gone")
        except Exception as exc:  # cleanup is best-effort; the operator is stopped regardless
            print(f"namespace {ns} cleanup: {exc}")
        finally:
            proc.stop()
    assert alive, f"the operator died during the test:\n{proc.log_tail()}"


def sphinx_model(name: str, ns: str, degraded: bool = False) -> dict[str, Any]:
    spec = sphinx_spec(degraded=degraded)
    return {"apiVersion": API, "kind": "STTModel", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def test_smoke_transcription_gates_each_new_revision(cluster: LocalCluster, kube_api, smoke_ns: str) -> None:
    ns = smoke_ns
    kube = Kube(kube_api)
    expected, _ = builtin_utterance()
    kube.apply(sphinx_model("sphinx-a", ns))
    kube.apply(sphinx_model("sphinx-b", ns, degraded=True))
    kube.apply(sphinx_model("sphinx-c", ns))  # the same recogniser as sphinx-a: a new revision
    manifest = {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": ns},
        "spec": {
            "model": {"name": "sphinx-a"},
            "replicas": 1,
            "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
            "scaleDownDelay": "0s",
            "progressDeadline": "15m",
            "smokeTest": {"enabled": True, "timeout": "60s"},
        },
    }
    watch = RouteWatch(kube, ns, NAME, (API, "ModelDeployment", NAME), {LABEL_DEPLOYMENT: NAME})
    kube.apply(manifest)
    watch.until(
        lambda md: (
            (md.get("status") or {}).get("phase") == "Healthy"
            and md["status"].get("stableModel") == "sphinx-a"
        ),
        timeout=600,
        what="sphinx-a serving on the real node",
    )
    (pod,) = [
        p
        for p in kube.list("v1", "Pod", ns)
        if any(c["name"] == "triton" for c in p["spec"]["containers"])
        and not p["metadata"].get("deletionTimestamp")
    ]
    assert pod["spec"]["nodeName"] == cluster.real_node.name  # type: ignore[union-attr]

    # The degraded recogniser: a wrong transcript, no weight, rolled back.
    manifest["spec"]["model"]["name"] = "sphinx-b"
    kube.apply(manifest)
    md = watch.until(
        lambda md: (
            condition(md, "SmokeTest").get("reason") == "SmokeTestFailed"
            and condition(md, "Progressing").get("reason") == "SmokeTestFailed"
            and md
        ),
        timeout=600,
        what="the degraded canary's smoke test to fail",
    )
    smoke = md["status"]["smokeTest"]
    assert smoke["outcome"] == "Failed" and smoke["expected"] == expected, smoke
    assert smoke["transcript"] and smoke["transcript"] != expected, smoke
    assert f'"{smoke["transcript"]}"' in condition(md, "SmokeTest")["message"]
    assert md["status"]["lastRollback"]["code"] == "SmokeTestFailed"
    assert smoke["transcript"] in md["status"]["lastRollback"]["reason"]
    assert all(len(w) == 1 and "sphinx-a" in w[0][0] for w in watch.seen), watch.seen

    # A sound recogniser: the right transcript, then its first weight.
    manifest["spec"]["model"]["name"] = "sphinx-c"
    kube.apply(manifest)
    md = watch.until(
        lambda md: (
            (md["status"].get("currentWeight") or 0) == 50
            and md["status"].get("canaryModel") == "sphinx-c"
            and md
        ),
        timeout=600,
        what="sphinx-c smoke-tested and at 50 %",
    )
    smoke = md["status"]["smokeTest"]
    assert smoke["outcome"] == "Passed" and smoke["transcript"] == expected, smoke
    assert condition(md, "SmokeTest")["status"] == "True"
    assert md["status"]["stableModel"] == "sphinx-a"
    weights = dict(watch.seen[-1])
    assert any("sphinx-c" in n and w == 50 for n, w in weights.items()), watch.seen
    assert not any("sphinx-b" in n for w in watch.seen for n, _ in w), watch.seen
    # Kept for the report: what each revision answered.
    print(f"smoke: expected {expected!r}; sphinx-c answered {smoke['transcript']!r}")
