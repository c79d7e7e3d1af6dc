"""Pure parts of the local Gateway (Traefik) and Prometheus Operator set-up."""

from __future__ import annotations

from pathlib import Path

from stt_harness.gateway import (
    CONTROLLER_NAME,
    GATEWAY_NAME,
    gateway,
    gateway_class,
    route_parent_conditions,
    traefik_rbac,
    traefik_static_config,
)
from stt_harness.node import REAL_NODE_SELECTOR
from stt_harness.promoperator import prometheus_object, prometheus_rbac, shared_libraries


def test_gateway_listener_uses_traefik_entry_point_port() -> None:
    config = traefik_static_config(18080, 18081, "https://127.0.0.1:6443", "tok", Path("/ca.crt"))
    assert config["entryPoints"]["web"]["address"] == "127.0.0.1:18080"
    assert config["providers"]["kubernetesGateway"]["certAuthFilePath"] == "/ca.crt"
    gw = gateway("ns1", 18080)
    assert gw["metadata"] == {"name": GATEWAY_NAME, "namespace": "ns1"}
    assert gw["spec"]["listeners"][0]["port"] == 18080
    assert gateway_class()["spec"]["controllerName"] == CONTROLLER_NAME


def test_traefik_may_write_route_status_but_not_routes() -> None:
    role = next(o for o in traefik_rbac() if o["kind"] == "ClusterRole")
    writes = {r for rule in role["rules"] if "update" in rule["verbs"] for r in rule["resources"]}
    assert "httproutes/status" in writes and "httproutes" not in writes


def test_route_parent_conditions_only_for_traefik_and_the_named_gateway() -> None:
    route = {
        "status": {
            "parents": [
                {
                    "parentRef": {"name": GATEWAY_NAME},
                    "controllerName": "example.com/other",
                    "conditions": [{"type": "Accepted", "status": "False"}],
                },
                {
                    "parentRef": {"name": GATEWAY_NAME},
                    "controllerName": CONTROLLER_NAME,
                    "conditions": [
                        {"type": "Accepted", "status": "True"},
                        {"type": "ResolvedRefs", "status": "True"},
                    ],
                },
            ]
        }
    }
    assert route_parent_conditions(route) == {"Accepted": "True", "ResolvedRefs": "True"}
    assert route_parent_conditions(route, "elsewhere") == {}
    assert route_parent_conditions(None) == {}


def test_prometheus_selects_everything_and_runs_on_the_real_node() -> None:
    spec = prometheus_object("stt.local/prometheus:x", "2.42.0")["spec"]
    assert spec["version"] == "v2.42.0"
    for key in ("serviceMonitor", "podMonitor", "rule"):
        assert spec[f"{key}Selector"] == {} and spec[f"{key}NamespaceSelector"] == {}
    assert spec["nodeSelector"] == REAL_NODE_SELECTOR
    kinds = [o["kind"] for o in prometheus_rbac()]
    assert kinds.count("ServiceAccount") == 2 and kinds.count("ClusterRoleBinding") == 2


def test_shared_libraries_include_the_dynamic_loader() -> None:
    libs = shared_libraries(Path("/bin/ls"))
    assert any("ld-linux" in dest for dest in libs)
    assert all(not dest.startswith("/") and src.is_file() for dest, src in libs.items())
