"""The endpoint's Gateway API HTTPRoute with weighted backendRefs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stt_operator.builders.common import LABEL_DEPLOYMENT, common_labels, object_metadata
from stt_operator.builders.serving import TRITON_HTTP_PORT

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"


@dataclass(frozen=True)
class Backend:
    service: str
    weight: int
    port: int = TRITON_HTTP_PORT


def route_name(deployment_name: str) -> str:
    return deployment_name


def http_route(
    deployment_name: str,
    namespace: str,
    backends: Sequence[Backend],
    *,
    parent_refs: Sequence[Mapping[str, Any]] = (),
    hostnames: Sequence[str] = (),
    path: str = "/",
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An HTTPRoute sending `path` on the parents to the weighted backends.

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
                "matches": [{"path": {"type": "PathPrefix", "value": path}}],
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


def route_weights(route: Mapping[str, Any] | None) -> dict[str, int]:
    """service name -> weight of an existing HTTPRoute (first rule), {} when none."""
    if not route:
        return {}
    rules = (route.get("spec") or {}).get("rules") or []
    if not rules:
        return {}
    return {ref["name"]: int(ref.get("weight", 1)) for ref in rules[0].get("backendRefs") or []}
