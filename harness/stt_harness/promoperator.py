"""Prometheus the way users run it: the Prometheus Operator reconciling a ``Prometheus`` into a
StatefulSet on the real node, and ServiceMonitors / PodMonitors / PrometheusRules into its
configuration and rule files.

- The operator (``prometheus-operator``, built by ``hack/build-tools.sh`` from its Go module)
  runs as a host process with the ServiceAccount ``stt-monitoring/prometheus-operator`` and the
  upstream ClusterRole (copied from the module), like the operator's own Deployment would.
- The ``Prometheus`` object ``stt`` asks for one replica pinned to the real node. The operator
  writes the StatefulSet; kubelet runs it from two images built here without a registry
  (``stt_harness.imagetar``): ``prometheus-k8s`` (Prometheus built from its module with
  Kubernetes discovery, which Debian's package leaves out; see hack/build-tools.sh) and the
  ``prometheus-config-reloader`` built from the operator's module. The pod runs as the
  ServiceAccount ``stt-monitoring/prometheus`` (the upstream Prometheus ClusterRole) and
  discovers targets through the apiserver (``kubernetes_sd_configs`` the operator generates).
- Selectors are empty, so every ServiceMonitor, PodMonitor and PrometheusRule in any namespace
  is picked up: the chart's objects work as installed, and no test adds scrape targets by hand.

The host reaches the pod's IP over the node's routes (``stt_harness.node``); ``url`` is
``http://<pod IP>:9090``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from stt_harness.cluster import Component, free_port, load_yaml_docs
from stt_harness.imagetar import image_tar
from stt_harness.node import REAL_NODE_SELECTOR, REAL_NODE_TOLERATION

if TYPE_CHECKING:
    from stt_harness.cluster import LocalCluster

NAMESPACE = "stt-monitoring"
PROMETHEUS_NAME = "stt"
OPERATOR_SA = "prometheus-operator"
PROMETHEUS_SA = "prometheus"
PROMETHEUS_BINARY = "prometheus-k8s"  # in the tools bin dir (hack/build-tools.sh)
RELOADER_IMAGE = "stt.local/prometheus-config-reloader"
PROMETHEUS_IMAGE = "stt.local/prometheus"
RUNTIME_DIR = "prometheus-operator-runtime"  # under the tools dir (hack/build-tools.sh)


class PrometheusOperatorError(RuntimeError):
    """The Prometheus Operator or the Prometheus it manages did not come up."""


def prometheus_version(binary: Path) -> str:
    """``3.5.0`` from ``prometheus, version 3.5.0 (...)`` (Debian's says ``2.42.0+ds``)."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    first = (out.stdout or out.stderr).splitlines()[0]
    return first.split("version", 1)[1].split()[0].split("+")[0]


def shared_libraries(binary: Path) -> dict[str, Path]:
    """image path -> host file for every library ``binary`` loads (from ``ldd``), dynamic loader
    included, so a dynamically linked Debian binary runs in a one-layer image."""
    res = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if res.returncode != 0:  # "not a dynamic executable": a static binary needs nothing
        return {}
    out = res.stdout
    files: dict[str, Path] = {}
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            files[path.lstrip("/")] = Path(os.path.realpath(path))
    return files


def prometheus_rbac() -> list[dict[str, Any]]:
    """Namespace, the two ServiceAccounts and their bindings to the upstream ClusterRoles."""

    def binding(role: str, sa: str) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{NAMESPACE}-{sa}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}],
        }

    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_SA, "namespace": NAMESPACE},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": PROMETHEUS_SA, "namespace": NAMESPACE},
        },
        binding("prometheus-operator", OPERATOR_SA),
        binding("prometheus", PROMETHEUS_SA),
    ]


def prometheus_object(image: str, version: str, interval: str = "5s") -> dict[str, Any]:
    """One Prometheus on the real node that selects every monitor and rule in every namespace."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "Prometheus",
        "metadata": {"name": PROMETHEUS_NAME, "namespace": NAMESPACE},
        "spec": {
            "image": image,
            "version": f"v{version}",
            "replicas": 1,
            "serviceAccountName": PROMETHEUS_SA,
            "scrapeInterval": interval,
            "evaluationInterval": interval,
            "serviceMonitorSelector": {},
            "serviceMonitorNamespaceSelector": {},
            "podMonitorSelector": {},
            "podMonitorNamespaceSelector": {},
            "ruleSelector": {},
            "ruleNamespaceSelector": {},
            "nodeSelector": dict(REAL_NODE_SELECTOR),
            "tolerations": [dict(REAL_NODE_TOLERATION)],
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        },
    }


class PrometheusStack:
    """The operator (host process) and the Prometheus pod it runs on the real node."""

    def __init__(self, cluster: LocalCluster, workdir: Path) -> None:
        if cluster.real_node is None:
            raise PrometheusOperatorError("the Prometheus Operator stack needs the real node")
        self.cluster = cluster
        self.workdir = workdir
        self.component: Component | None = None
        self.prometheus_bin = cluster.bin_dir / PROMETHEUS_BINARY
        self.version = prometheus_version(self.prometheus_bin) if self.prometheus_bin.exists() else ""
        self.pod_ip = ""

    @property
    def url(self) -> str:
        return f"http://{self.pod_ip}:9090"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus-operator.log"

    @property
    def runtime_dir(self) -> Path:
        return self.cluster.tools_dir / RUNTIME_DIR

    def start(self, timeout: float = 240.0) -> PrometheusStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        operator_bin = self.cluster.bin_dir / "prometheus-operator"
        if not operator_bin.exists() or not self.prometheus_bin.exists() or not self.runtime_dir.is_dir():
            raise PrometheusOperatorError(
                f"{operator_bin} or {self.runtime_dir} missing: run hack/build-tools.sh"
            )
        # AlertmanagerConfig's schema holds a YAML 1.1 `=` value tag PyYAML cannot load: kubectl
        # applies that one (the operator's Alertmanager controller waits for it).
        crds = [
            p
            for p in sorted(self.runtime_dir.glob("monitoring.coreos.com_*.yaml"))
            if "alertmanagerconfigs" not in p.name
        ]
        self.cluster.install_crds(crds, timeout=120)
        self.cluster.kubectl(
            "apply",
            "--server-side",
            "-f",
            str(self.runtime_dir / "monitoring.coreos.com_alertmanagerconfigs.yaml"),
        )
        roles = [
            doc
            for name in ("prometheus-operator-cluster-role.yaml", "prometheus-cluster-role.yaml")
            for doc in load_yaml_docs(self.runtime_dir / name)
        ]
        self._apply([*roles, *prometheus_rbac()])
        reloader_image, prometheus_image = self._import_images()

        kubeconfig = self.cluster.service_account_kubeconfig(NAMESPACE, OPERATOR_SA, 86400)
        argv = [
            str(operator_bin),
            f"--prometheus-config-reloader={reloader_image}",
            f"--web.listen-address=127.0.0.1:{free_port()}",
            "--log-level=info",
        ]
        env = dict(os.environ, KUBECONFIG=str(kubeconfig))
        self.component = Component("prometheus-operator", argv, self.log_path, env=env)
        self.component.start()
        self._apply([prometheus_object(prometheus_image, self.version)])
        self._until(self._pod_ready, timeout, f"pod prometheus-{PROMETHEUS_NAME}-0 Ready")
        self._until(self._api_ready, 60, "Prometheus /-/ready")
        return self

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            # The operator deletes the StatefulSet through owner references; kubelet stops the pod.
            self.cluster.kubectl(
                "delete", "prometheus", PROMETHEUS_NAME, "-n", NAMESPACE, "--ignore-not-found", "--wait=false"
            )
        if self.component is not None:
            self.component.stop()

    # -- queries -----------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise PrometheusOperatorError(f"{path}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/query", query=promql)["result"])

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/targets", state="active")["activeTargets"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/alerts")["alerts"])

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/rules")["groups"])

    def wait_for(self, probe: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
        """Poll ``probe`` until it returns something truthy (errors count as not yet)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError, PrometheusOperatorError):
                value = probe()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise PrometheusOperatorError(
                    f"timed out after {timeout:.0f}s waiting for {what}\n{self._diagnose()}"
                )
            time.sleep(1)

    # -- helpers -------------------------------------------------------------------------------

    def _import_images(self) -> tuple[str, str]:
        node = self.cluster.real_node
        assert node is not None
        reloader_bin = self.cluster.bin_dir / "prometheus-config-reloader"
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            reloader = f"{RELOADER_IMAGE}:{_file_tag(reloader_bin)}"
            image_tar(
                Path(tmp) / "reloader.tar",
                reloader,
                {"bin/prometheus-config-reloader": reloader_bin},
                ["/bin/prometheus-config-reloader"],
            )
            node.import_image(Path(tmp) / "reloader.tar")
            files = {"bin/prometheus": self.prometheus_bin, **shared_libraries(self.prometheus_bin)}
            prometheus = f"{PROMETHEUS_IMAGE}:{self.version}-{_file_tag(self.prometheus_bin)}"
            image_tar(Path(tmp) / "prometheus.tar", prometheus, files, ["/bin/prometheus"])
            node.import_image(Path(tmp) / "prometheus.tar")
        return reloader, prometheus

    def _apply(self, objects: list[dict[str, Any]]) -> None:
        doc = {"apiVersion": "v1", "kind": "List", "items": objects}
        self.cluster.kubectl(
            "apply", "--server-side", "--field-manager=stt-harness", "-f", "-", input=json.dumps(doc)
        )

    def _pod(self) -> dict[str, Any] | None:
        try:
            return self.cluster._request(
                "GET", f"/api/v1/namespaces/{NAMESPACE}/pods/prometheus-{PROMETHEUS_NAME}-0"
            )
        except RuntimeError:  # ClusterError, also when the cluster runs as __main__ (-m)
            return None

    def _pod_ready(self) -> bool:
        pod = self._pod() or {}
        status = pod.get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
        if conds.get("Ready") == "True" and status.get("podIP"):
            self.pod_ip = status["podIP"]
            return True
        return False

    def _api_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _until(self, ok: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            if self.component is not None and not self.component.alive():
                raise PrometheusOperatorError(
                    f"prometheus-operator exited waiting for {what}\n{self._diagnose()}"
                )
            if time.monotonic() > deadline:
                raise PrometheusOperatorError(
                    f"timed out after {timeout:.0f}s waiting for {what}\n{self._diagnose()}"
                )
            time.sleep(1)

    def _diagnose(self) -> str:
        pod = self._pod() or {}
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        state = yaml.safe_dump([{s["name"]: s.get("state")} for s in statuses]) if statuses else "no pod"
        log = ""
        with contextlib.suppress(OSError):
            log = self.log_path.read_text(errors="replace")[-3000:]
        return f"pod containers:\n{state}\noperator log tail:\n{log}"


def _file_tag(path: Path) -> str:
    """A tag that changes when the binary does (a content hash prefix)."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@contextlib.contextmanager
def running_prometheus_operator(cluster: LocalCluster, workdir: Path) -> Iterator[PrometheusStack]:
    stack = PrometheusStack(cluster, workdir)
    try:
        yield stack.start()
    finally:
        stack.stop()
