"""`kubectl stt` verbs against the real control plane and the session's operator: the tree shows
what the apiserver holds, every write verb changes what the operator then does, and bad input gets
a clear message and a non-zero exit."""

from __future__ import annotations

from typing import Any

import pytest

from stt_harness.kubewait import condition, wait_for
from stt_harness.resources import API, model_deployment, stt_model
from stt_operator.kubectl_plugin import main as kubectl_stt
from stt_operator.services.kube import Kube

pytestmark = pytest.mark.integration

NAME = "asr"


def run(capsys: pytest.CaptureFixture[str], cluster: Any, namespace: str, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = kubectl_stt([*argv, "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def md_of(kube: Kube, namespace: str) -> dict[str, Any]:
    return kube.get(API, "ModelDeployment", NAME, namespace)


def test_verbs_drive_a_real_rollout(operator, kube, operator_namespace, cluster, capsys):
    ns = operator_namespace
    kube.apply(stt_model("model-a", ns))
    kube.apply(stt_model("model-b", ns))
    steps = [{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]
    md = model_deployment(NAME, ns, "model-a", {"type": "Canary", "canary": {"steps": steps}})
    kube.apply(md)
    wait_for(lambda: (md_of(kube, ns).get("status") or {}).get("phase") == "Healthy", 90, "model-a stable")

    rc, out, _ = run(capsys, cluster, ns, "get", NAME)
    assert rc == 0
    assert out.splitlines()[0].startswith(f"ModelDeployment {ns}/{NAME}  Healthy  strategy Canary")
    assert "HTTPRoute asr" in out and "weight 100" in out
    assert "model model-a  [stable]" in out
    assert "Deployment " in out and "1/1 ready" in out and "Pod " in out

    md["spec"]["model"]["name"] = "model-b"
    kube.apply(md)
    wait_for(
        lambda: (
            condition(md_of(kube, ns), "Paused").get("reason") == "PausedAtStep"
            and md_of(kube, ns)["status"].get("currentWeight") == 30
        ),
        90,
        "canary paused at 30 %",
    )
    rc, out, _ = run(capsys, cluster, ns, "get", f"mdep/{NAME}")
    assert "canary weight 30%" in out and "[canary]" in out and "weight 30" in out

    # pause / resume write spec.paused; promote skips the indefinite pause.
    assert run(capsys, cluster, ns, "pause", NAME)[0] == 0
    assert md_of(kube, ns)["spec"]["paused"] is True
    assert run(capsys, cluster, ns, "resume", NAME)[0] == 0
    assert md_of(kube, ns)["spec"]["paused"] is False
    rc, out, _ = run(capsys, cluster, ns, "promote", NAME)
    assert (rc, out.strip()) == (0, f"modeldeployment/{NAME} promote requested")
    wait_for(lambda: md_of(kube, ns)["status"].get("currentWeight") == 60, 60, "promoted to the next step")

    # abort rolls the canary back to stable.
    assert run(capsys, cluster, ns, "abort", NAME)[0] == 0
    got = wait_for(
        lambda: (
            (s := md_of(kube, ns)["status"]).get("lastRollback") and s.get("currentWeight") in (0, None) and s
        ),
        60,
        "aborted rollout rolled back",
    )
    assert got["stableModel"] == "model-a"

    # undo / retry validate against the recorded history before writing anything.
    revisions = [r["revision"] for r in got.get("revisions") or []]
    rc, _, err = run(capsys, cluster, ns, "undo", NAME, "--to-revision", "99")
    assert rc == 2 and "no revision 99" in err and str(revisions[0]) in err
    rc, _, err = run(capsys, cluster, ns, "undo", NAME)
    assert rc == 2 and "--to-revision" in err
    rc, out, _ = run(capsys, cluster, ns, "undo", NAME, "--to-revision", str(revisions[0]))
    assert rc == 0
    # The operator acts on it (rollout/history.py): spec.model back on that revision's model.
    wait_for(
        lambda: (
            (m := md_of(kube, ns))["spec"]["model"]["name"] == "model-a"
            and "stt.dev/undo-to-revision" not in (m["metadata"].get("annotations") or {})
        ),
        30,
        "undo acted on",
    )
    assert run(capsys, cluster, ns, "retry", NAME)[0] == 0


def test_bad_input_gets_a_message_and_a_non_zero_exit(operator, kube, operator_namespace, cluster, capsys):
    ns = operator_namespace
    rc, _, err = run(capsys, cluster, ns, "get", "missing")
    assert rc == 1 and "ModelDeployment missing not found" in err
    rc, _, err = run(capsys, cluster, ns, "get", "pods/x")
    assert rc == 2 and "unknown kind" in err
    rc, _, err = run(capsys, cluster, ns, "promote", "abt/x")
    assert rc == 2 and "promote applies to ModelDeployment" in err
    rc, _, err = run(capsys, cluster, ns, "results", "nope")
    assert rc == 1 and "ABTest nope not found" in err
    rc, _, err = run(
        capsys, cluster, ns, "report", "abt/x", "--prometheus", "http://127.0.0.1:9", "--alpha", "2"
    )
    assert rc == 2 and "--alpha" in err
    kube.apply(stt_model("model-a", ns))
    kube.apply(model_deployment(NAME, ns, "model-a"))
    rc, _, err = run(capsys, cluster, ns, "retry", NAME)
    assert rc == 2 and "no rolled-back revision" in err
    with pytest.raises(SystemExit) as exc:
        kubectl_stt(["frobnicate", NAME])
    assert exc.value.code == 2
