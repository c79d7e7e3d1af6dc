"""The endpoint's Gateway API HTTPRoute with weighted backendRefs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stt_operator.builders.common import LABEL_DEPLOYMENT, common_labels, dns_name, object_metadata
from stt_operator.builders.serving import TRITON_GRPC_PORT, TRITON_HTTP_PORT

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"


@dataclass(frozen=True)
class Backend:
    service: str
    weight: int
    port: int = TRITON_HTTP_PORT


def route_name(deployment_name: str) -> str:
    """The HTTPRoute's and endpoint Service's name: a Service name must be a DNS-1035 label,
    which a ModelDeployment name (a DNS subdomain) need not be."""
    return dns_name(deployment_name)


def http_route(
    deployment_name: str,
    namespace: str,
    backends: Sequence[Backend],
    *,
    parent_refs: Sequence[Mapping[str, Any]] = (),
    hostnames: Sequence[str] = (),
    path: str = "/",
    owner: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An HTTPRoute sending `path` on the parents to the weighted backends; with `headers`, only
    requests carrying every one of them exactly (one ModelDeployment per language pair sharing a
    path: the Gateway prefers the rule with header matches, docs/rollouts.md).

    Backends with weight 0 stay listed, so Gateway implementations keep their clusters warm
    and a later weight change is a pure weight edit."""
    if not backends:
        raise ValueError("an HTTPRoute needs at least one backend; build it once a backend is ready")
    labels = common_labels(deployment_name, "endpoint")
    labels[LABEL_DEPLOYMENT] = deployment_name
    metadata = object_metadata(route_name(deployment_name), namespace, labels, owner)
    spec: dict[str, Any] = {
        "parentRefs": [dict(p) for p in parent_refs],
        "rules": [
            {
                "matches": [_match(path, headers or {})],
                "backendRefs": [
                    {"kind": "Service", "name": b.service, "port": b.port, "weight": b.weight}
                    for b in backends
                ],
            }
        ],
    }
    if hostnames:
        spec["hostnames"] = list(hostnames)
    return {"apiVersion": GATEWAY_API_VERSION, "kind": "HTTPRoute", "metadata": metadata, "spec": spec}


def _match(path: str, headers: Mapping[str, str]) -> dict[str, Any]:
    match: dict[str, Any] = {"path": {"type": "PathPrefix", "value": path}}
    if headers:
        match["headers"] = [{"type": "Exact", "name": k, "value": v} for k, v in sorted(headers.items())]
    return match


def route_weights(route: Mapping[str, Any] | None) -> dict[str, int]:
    """service name -> weight of an existing HTTPRoute (first rule), {} when none."""
    if not route:
        return {}
    rules = (route.get("spec") or {}).get("rules") or []
    if not rules:
        return {}
    return {ref["name"]: int(ref.get("weight", 1)) for ref in rules[0].get("backendRefs") or []}


# --- replica-ratio: the no-mesh fallback ------------------------------------------------------
# One Service without a selector fronts the endpoint; the operator writes its EndpointSlice with
# the ready pods of every revision that has weight, and sizes each revision's replicas in
# proportion to its weight, so kube-proxy's even spread over endpoints approximates the split.

ENDPOINT_PORTS = (("http", TRITON_HTTP_PORT), ("grpc", TRITON_GRPC_PORT))


def ratio_replicas(weights: Mapping[str, int], total: int) -> dict[str, int]:
    """Replicas per revision for a weight split over `total` replicas (each weighted revision
    keeps at least one pod; weight 0 is left to the planner, as its pods take no traffic)."""
    return {rid: max(1, round(total * weight / 100)) for rid, weight in weights.items() if weight > 0}


def endpoint_service(
    deployment_name: str,
    namespace: str,
    owner: Mapping[str, Any] | None = None,
    http_port: int = TRITON_HTTP_PORT,
) -> dict[str, Any]:
    """`http_port`: the port clients use (spec.endpoint.port); the slice maps it to Triton's."""
    labels = {**common_labels(deployment_name, "endpoint"), LABEL_DEPLOYMENT: deployment_name}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(route_name(deployment_name), namespace, labels, owner),
        # No selector: the operator owns the endpoints (see endpoint_slice).
        "spec": {
            "ports": [
                {"name": n, "port": http_port if n == "http" else p, "targetPort": p}
                for n, p in ENDPOINT_PORTS
            ]
        },
    }


def endpoint_slice(
    deployment_name: str,
    namespace: str,
    addresses: Sequence[str],
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    labels = {
        **common_labels(deployment_name, "endpoint"),
        LABEL_DEPLOYMENT: deployment_name,
        "kubernetes.io/service-name": route_name(deployment_name),
        "endpointslice.kubernetes.io/managed-by": "stt-operator",
    }
    name = f"{route_name(deployment_name)}-ratio"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": object_metadata(name, namespace, labels, owner),
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in sorted(addresses)],
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ENDPOINT_PORTS],
    }


def ready_pod_ips(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """IPs of the pods that are Ready and not going away."""
    ips = []
    for pod in pods:
        status = pod.get("status") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        leaving = (pod.get("metadata") or {}).get("deletionTimestamp")
        if conditions.get("Ready") == "True" and status.get("podIP") and not leaving:
            ips.append(status["podIP"])
    return ips
