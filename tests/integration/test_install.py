"""Installing stt-operator the ways users do, into a real kube-apiserver (+ kwok nodes).

- `helm install` of charts/stt-operator: the operator Deployment, its ServiceAccount and RBAC,
  admitted under the restricted Pod Security Standard, and what the RBAC allows and denies
  (`kubectl auth can-i --as=<the operator's ServiceAccount>`).
- The real operator process, authenticated as the chart's ServiceAccount with a token from
  the TokenRequest API, started with the arguments the chart renders: it must start, join its
  peering and reconcile resources without a single authorization error.
- `kubectl apply --server-side -f manifests/install/` and the monitoring objects.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stt_harness.cluster import LocalCluster, free_port
from stt_harness.resources import model_deployment, stt_model

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "stt-operator"
INSTALL = ROOT / "manifests" / "install"
MONITORING = ROOT / "manifests" / "monitoring"


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def run(cluster: LocalCluster, *argv: str, check: bool = True, timeout: float = 180) -> str:
    res = subprocess.run(argv, env=cluster.env(), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


def helm(cluster: LocalCluster, *args: str, check: bool = True) -> str:
    return run(cluster, str(cluster.bin_dir / "helm"), *args, check=check)


def get(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *args, "-o", "json"))


def can_i(cluster: LocalCluster, sa: str, verb: str, resource: str, namespace: str | None) -> bool:
    """`resource` may name a subresource (`pods/exec`); can-i reads `TYPE/NAME`, so pass it apart."""
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    kind, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    out = cluster.kubectl("auth", "can-i", verb, kind, *extra, f"--as={sa}", *scope, check=False)
    return out.strip() == "yes"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def other_namespace(cluster: LocalCluster) -> Iterator[str]:
    name = unique("not-watched")
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def release(cluster: LocalCluster, namespace: str) -> Iterator[str]:
    """A Helm release name in the test namespace, uninstalled afterwards (its cluster-scoped RBAC too)."""
    # The restricted Pod Security Standard is enforced on the operator's own namespace.
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    name = unique("stt")
    yield name
    helm(cluster, "uninstall", name, "-n", namespace, "--wait", "--timeout", "60s", check=False)


def install(cluster: LocalCluster, release: str, namespace: str, *values: str) -> None:
    helm(
        cluster, "install", release, str(CHART), "-n", namespace,
        # Cluster-scoped names must not collide with other installs in the shared test cluster.
        "--set", f"peering.name={release}",
        *values,
        "--wait", "--timeout", "120s",
    )  # fmt: skip


def test_helm_install_creates_the_operator_with_least_privilege(
    cluster: LocalCluster, namespace: str, release: str, other_namespace: str
) -> None:
    install(cluster, release, namespace)
    status = json.loads(helm(cluster, "status", release, "-n", namespace, "-o", "json"))
    assert status["info"]["status"] == "deployed"

    fullname = f"{release}-stt-operator"
    deployment = get(cluster, "deployment", fullname, "-n", namespace)
    # Available means its pod passed restricted Pod Security admission and kwok made it Ready.
    assert deployment["status"].get("availableReplicas") == 1
    pod_spec = deployment["spec"]["template"]["spec"]
    sa_name = pod_spec["serviceAccountName"]
    assert sa_name == fullname
    get(cluster, "serviceaccount", sa_name, "-n", namespace)
    args = pod_spec["containers"][0]["args"]
    assert args[:2] == ["run", "--all-namespaces"] and f"--peering={release}" in args

    sa = f"system:serviceaccount:{namespace}:{sa_name}"
    for role in (fullname, f"{fullname}-cluster"):
        get(cluster, "clusterrole", role)
        binding = get(cluster, "clusterrolebinding", role)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": namespace}]
    assert get(cluster, "clusterkopfpeering", release)["metadata"]["name"] == release
    assert get(cluster, "configmap", f"{fullname}-config", "-n", namespace)["data"]["config.yaml"]

    # What a cluster-wide operator needs, in any namespace.
    allowed = [
        ("watch", "sttmodels.stt.dev", other_namespace),
        ("patch", "modeldeployments.stt.dev/status", other_namespace),
        ("patch", "abtests.stt.dev", other_namespace),
        ("create", "deployments.apps", other_namespace),
        ("delete", "services", other_namespace),
        ("create", "configmaps", other_namespace),
        ("create", "jobs.batch", other_namespace),
        ("list", "pods", other_namespace),
        ("create", "events", other_namespace),
        ("patch", "httproutes.gateway.networking.k8s.io", other_namespace),
        ("patch", "deployments.apps/scale", other_namespace),
        ("create", "endpointslices.discovery.k8s.io", other_namespace),
        ("create", "servicemonitors.monitoring.coreos.com", other_namespace),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("watch", "namespaces", None),
        ("patch", "clusterkopfpeerings.kopf.dev", None),
    ]
    # ... and what it must never do.
    denied = [
        ("get", "secrets", None),
        ("list", "secrets", namespace),
        ("create", "pods", other_namespace),
        ("delete", "pods", other_namespace),
        ("create", "pods/exec", other_namespace),
        ("create", "sttmodels.stt.dev", other_namespace),
        ("delete", "modeldeployments.stt.dev", other_namespace),
        ("update", "nodes", None),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
        ("create", "roles.rbac.authorization.k8s.io", other_namespace),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("create", "serviceaccounts/token", namespace),
    ]
    wrong = [("allowed", *c) for c in allowed if not can_i(cluster, sa, *c)]
    wrong += [("denied", *c) for c in denied if can_i(cluster, sa, *c)]
    assert wrong == [], f"RBAC differs from what the operator needs: {wrong}"

    # A settings change through `helm upgrade` reaches the ConfigMap and rolls the pod.
    before = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    helm(
        cluster, "upgrade", release, str(CHART), "-n", namespace, "--reuse-values",
        "--set", "config.maxConcurrentABTests=9", "--wait", "--timeout", "120s",
    )  # fmt: skip
    upgraded = get(cluster, "deployment", fullname, "-n", namespace)
    assert upgraded["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != before
    assert upgraded["status"].get("updatedReplicas") == 1 and upgraded["status"].get("availableReplicas") == 1
    settings = get(cluster, "configmap", f"{fullname}-config", "-n", namespace)["data"]["config.yaml"]
    assert yaml.safe_load(settings)["max_concurrent_abtests"] == 9

    # People get the API through the default roles (aggregated by kube-controller-manager).
    cluster.kubectl(
        "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice", "-n", other_namespace
    )
    cluster.kubectl(
        "create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob", "-n", other_namespace
    )
    wait_for(
        lambda: can_i(cluster, "alice", "create", "sttmodels.stt.dev", other_namespace), 30, "edit aggregated"
    )
    wait_for(lambda: can_i(cluster, "bob", "list", "abtests.stt.dev", other_namespace), 30, "view aggregated")
    assert can_i(cluster, "alice", "delete", "modeldeployments.stt.dev", other_namespace)
    assert not can_i(cluster, "alice", "patch", "sttmodels.stt.dev/status", other_namespace)
    assert not can_i(cluster, "bob", "create", "abtests.stt.dev", other_namespace)
    assert not can_i(cluster, "alice", "create", "sttmodels.stt.dev", namespace)

    helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout", "60s")
    assert cluster.kubectl("get", "clusterrole", fullname, "--ignore-not-found") == ""
    assert not can_i(cluster, sa, "watch", "sttmodels.stt.dev", other_namespace)


def sa_kubeconfig(cluster: LocalCluster, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (TokenRequest API), like the pod does."""
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": sa, "user": {"token": token}}],
                "contexts": [
                    {"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": sa}}
                ],
                "current-context": "sa",
            }
        )
    )
    path.chmod(0o600)
    return path


def operator_argv(container: dict[str, Any], config: Path, kubeconfig: Path) -> tuple[list[str], int]:
    """The chart's container arguments, with local ports and the settings file at a local path."""
    liveness = free_port()
    replace = {
        "--liveness-port": str(liveness),
        "--metrics-port": str(free_port()),
        "--config": str(config),
    }
    args = []
    for arg in container["args"]:
        flag, eq, _ = arg.partition("=")
        args.append(f"{flag}={replace[flag]}" if eq and flag in replace else arg)
    assert args[0] == "run" and all(f"{f}=" in " ".join(args) for f in replace), args
    return [sys.executable, "-m", "stt_operator.cli", *args, f"--kubeconfig={kubeconfig}"], liveness


def condition_true(obj: dict[str, Any], type_: str) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == type_ and c["status"] == "True" for c in conditions)


def test_namespaced_operator_reconciles_with_only_the_chart_rbac(
    cluster: LocalCluster, namespace: str, release: str, other_namespace: str, tmp_path: Path
) -> None:
    install(cluster, release, namespace, "--set", f"watchNamespaces={{{namespace}}}")
    fullname = f"{release}-stt-operator"
    sa_name = fullname
    sa = f"system:serviceaccount:{namespace}:{sa_name}"
    assert can_i(cluster, sa, "create", "deployments.apps", namespace)
    assert can_i(cluster, sa, "patch", "kopfpeerings.kopf.dev", namespace)
    assert not can_i(cluster, sa, "create", "deployments.apps", other_namespace)
    assert not can_i(cluster, sa, "watch", "sttmodels.stt.dev", other_namespace)
    assert not can_i(cluster, sa, "patch", "clusterkopfpeerings.kopf.dev", None)

    container = get(cluster, "deployment", fullname, "-n", namespace)["spec"]["template"]["spec"][
        "containers"
    ][0]
    config = tmp_path / "config.yaml"
    config.write_text(get(cluster, "configmap", f"{fullname}-config", "-n", namespace)["data"]["config.yaml"])
    kubeconfig = sa_kubeconfig(cluster, namespace, sa_name, tmp_path / "sa.kubeconfig")
    argv, liveness = operator_argv(container, config, kubeconfig)
    # KUBECONFIG too: Kopf's login reads it from the environment, not from --kubeconfig.
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    log_path = tmp_path / "operator.log"

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:

            def live() -> bool:
                assert proc.poll() is None, f"operator exited:\n{log_path.read_text()[-3000:]}"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=2) as r:
                        return r.status == 200
                except OSError:
                    return False

            wait_for(live, 60, "operator /healthz")
            # Kopf's heartbeat in the namespace's KopfPeering the chart created.
            wait_for(
                lambda: get(cluster, "kopfpeering", release, "-n", namespace).get("status") or {},
                30,
                "a peer in the KopfPeering",
            )

            cluster.kubectl(
                "apply", "--server-side", "-f", "-", input=yaml.safe_dump(stt_model("m1", namespace))
            )
            cluster.kubectl(
                "apply",
                "--server-side",
                "-f",
                "-",
                input=yaml.safe_dump(model_deployment("asr", namespace, "m1")),
            )
            model = wait_for(
                lambda: (
                    (m := get(cluster, "sttmodel", "m1", "-n", namespace))
                    and condition_true(m, "Ready")
                    and m
                ),
                90,
                "STTModel Ready",
            )
            get(cluster, "configmap", model["status"]["tritonConfigMap"], "-n", namespace)
            wait_for(
                lambda: condition_true(get(cluster, "modeldeployment", "asr", "-n", namespace), "Ready"),
                120,
                "ModelDeployment Ready",
            )
            route = get(cluster, "httproute", "asr", "-n", namespace)
            assert route["spec"]["rules"][0]["backendRefs"][0]["weight"] == 100
            assert get(cluster, "deployments", "-n", namespace, "-l", "stt.dev/model-deployment=asr")["items"]
            events = get(cluster, "events", "-n", namespace)["items"]
            assert any(e["involvedObject"]["name"] == "asr" for e in events)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    log_text = log_path.read_text()
    assert "forbidden" not in log_text.lower(), (
        f"authorization error in the operator log:\n{log_text[-4000:]}"
    )
    # The chart sets JSON logs; every line the operator's own loggers wrote is a JSON object.
    records = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    assert records and all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)


def test_kubectl_apply_install_bundle(cluster: LocalCluster) -> None:
    files = ["-f", str(INSTALL)]
    # The cluster holds crds/ as generated; a stale chart copy would conflict (and must not win).
    sync = subprocess.run(
        ["bash", str(ROOT / "hack" / "render-install-manifests.sh"), "--check"],
        env=cluster.env(),
        capture_output=True,
        text=True,
    )
    assert sync.returncode == 0, sync.stderr
    # Server-side dry run of the CRDs, then the real install in one apply (CRDs, namespace, operator).
    cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", str(INSTALL / "crds.yaml"))
    try:
        out = cluster.kubectl("apply", "--server-side", *files)
        assert "deployment.apps/stt-operator serverside-applied" in out
        assert "clusterkopfpeering.kopf.dev/stt-operator serverside-applied" in out
        cluster.kubectl("-n", "stt-system", "rollout", "status", "deployment/stt-operator", "--timeout=90s")
        # Applying again is accepted and changes nothing.
        cluster.kubectl("apply", "--server-side", "--dry-run=server", *files)
        res = subprocess.run(
            [
                str(cluster.bin_dir / "kubectl"),
                "diff",
                "--server-side",
                "-f",
                str(INSTALL / "stt-operator.yaml"),
            ],
            env=cluster.env(),
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, f"re-applying the bundle would change:\n{res.stdout}{res.stderr}"
        # `kubectl apply -k` builds exactly the files `-f` applies.
        built = [d for d in yaml.safe_load_all(cluster.kubectl("kustomize", str(INSTALL))) if d]
        listed = [d for f in sorted(INSTALL.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
        key = lambda d: (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])  # noqa: E731
        assert sorted(map(key, built)) == sorted(map(key, listed))
        sa = "system:serviceaccount:stt-system:stt-operator"
        assert can_i(cluster, sa, "patch", "sttmodels.stt.dev/status", "default")
        assert not can_i(cluster, sa, "get", "secrets", None)
        # The monitoring objects are valid against the Prometheus Operator's CRD schemas.
        out = cluster.kubectl(
            "apply", "--server-side", "--dry-run=server",
            "-f", str(MONITORING / "prometheusrule.yaml"), "-f", str(MONITORING / "servicemonitor.yaml"),
            "-f", str(MONITORING / "workload-servicemonitor.yaml"),
        )  # fmt: skip
        assert "prometheusrule.monitoring.coreos.com/stt-operator serverside-applied (server dry run)" in out
        assert "servicemonitor.monitoring.coreos.com/stt-operator serverside-applied (server dry run)" in out
        assert (
            "servicemonitor.monitoring.coreos.com/stt-operator-workloads serverside-applied (server dry run)"
            in out
        )
    finally:
        # The operator's objects go; the CRDs stay (other tests' resources live in them).
        cluster.kubectl("delete", "-f", str(INSTALL / "stt-operator.yaml"), "--wait=false", check=False)


def test_argocd_application_matches_the_argo_cd_schema(cluster: LocalCluster) -> None:
    """The example Application against Argo CD's real CRD (from its Go module), server-side."""
    crds = Path(
        subprocess.run(
            ["bash", str(ROOT / "hack" / "argocd-crds.sh")], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    crd = crds / "application-crd.yaml"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    # Not `kubectl wait`: right after creation status.conditions is null and it errors out.
    wait_for(
        lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (get(cluster, "crd", "applications.argoproj.io").get("status") or {}).get("conditions")
            or []
        ),
        60,
        "the Application CRD Established",
    )
    if not cluster.kubectl("get", "namespace", "argocd", "--ignore-not-found"):
        cluster.kubectl("create", "namespace", "argocd")
    app = ROOT / "manifests" / "argocd" / "application.yaml"
    out = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", str(app))
    assert "application.argoproj.io/stt-operator serverside-applied (server dry run)" in out
    # The same check rejects a broken Application: the schema is really enforced.
    broken = yaml.safe_load(app.read_text())
    broken["spec"]["syncPolicy"]["retry"]["limit"] = "five"
    res = subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "apply", "--server-side", "--dry-run=server", "-f", "-"],
        input=yaml.safe_dump(broken), env=cluster.env(), capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode != 0 and "spec.syncPolicy.retry.limit" in res.stderr, res.stderr
