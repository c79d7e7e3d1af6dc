"""The endpoint's Gateway API HTTPRoute with weighted backendRefs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stt_operator.api.modeldeployment import EndpointSpec
from stt_operator.builders.assignment import bucket_regex, bucket_slices
from stt_operator.builders.metadata import LABEL_DEPLOYMENT, common_labels, dns_name, object_metadata
from stt_operator.builders.modelconfig import triton_model_name
from stt_operator.builders.serving import TRITON_GRPC_PORT, TRITON_HTTP_PORT

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"


@dataclass(frozen=True)
class Backend:
    service: str
    weight: int
    port: int = TRITON_HTTP_PORT
    model: str | None = None  # the Triton model this revision serves (for the endpoint's alias path)


def model_path(model: str) -> str:
    """Triton's HTTP path prefix of one model (KServe v2 protocol)."""
    return f"/v2/models/{model}"


def route_name(deployment_name: str) -> str:
    """The HTTPRoute's and endpoint Service's name: a Service name must be a DNS-1035 label,
    which a ModelDeployment name (a DNS subdomain) need not be."""
    return dns_name(deployment_name)


def parent_refs(endpoint: EndpointSpec | None) -> list[dict[str, Any]]:
    """HTTPRoute parentRefs from a ModelDeployment's `spec.endpoint.gatewayRef` (none: no parent)."""
    gateway = endpoint.gateway_ref if endpoint else None
    if gateway is None:
        return []
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway.name}
    if gateway.namespace:
        parent["namespace"] = gateway.namespace
    if gateway.section_name:
        parent["sectionName"] = gateway.section_name
    return [parent]


def endpoint_route(
    name: str,
    namespace: str,
    endpoint: EndpointSpec | None,
    weights: Mapping[str, int],
    *,
    models: Mapping[str, str] | None = None,
    owner: Mapping[str, Any] | None = None,
    session_header: str | None = None,
) -> dict[str, Any]:
    """The one HTTPRoute of ModelDeployment `name`, whoever sets its weights (the rollout or an
    A/B test holding the endpoint): `weights` maps each revision's Service to its weight,
    `models` each Service to the STTModel it serves (with it, clients may call
    `/v2/models/<name>` whichever revision answers), `session_header` adds an A/B test's sticky
    rules. Parents, hostnames, path, port and language-pair match come from `spec.endpoint`."""
    models = models or {}
    port = endpoint.port if endpoint else TRITON_HTTP_PORT
    return http_route(
        name,
        namespace,
        [
            Backend(
                service,
                weight,
                port,
                model=triton_model_name(models[service]) if service in models else None,
            )
            for service, weight in weights.items()
        ],
        parent_refs=parent_refs(endpoint),
        hostnames=endpoint.hostnames if endpoint else (),
        path=endpoint.path if endpoint else "/",
        owner=owner,
        alias=name if models else None,
        session_header=session_header,
        headers=(endpoint.header_matches() or None) if endpoint else None,
    )


def http_route(
    deployment_name: str,
    namespace: str,
    backends: Sequence[Backend],
    *,
    parent_refs: Sequence[Mapping[str, Any]] = (),
    hostnames: Sequence[str] = (),
    path: str = "/",
    owner: Mapping[str, Any] | None = None,
    alias: str | None = None,
    session_header: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An HTTPRoute sending `path` on the parents to the weighted backends; with `headers`, only
    requests carrying every one of them exactly (one ModelDeployment per language pair sharing a
    path: the Gateway prefers the rule with header matches, docs/rollouts.md).

    Backends with weight 0 stay listed, so Gateway implementations keep their clusters warm
    and a later weight change is a pure weight edit.

    `alias`: a model name clients may call whatever revision answers. Each revision's Triton
    serves its own STTModel's name, so a client calling `/v2/models/<old model>/infer` fails on
    the new revision's pods during a switch; a second rule with the same weights matches
    `/v2/models/<alias>` and each backend rewrites it to its own model's path (per-backend
    URLRewrite, Gateway API Extended). The first rule stays the plain split.

    `session_header` (ABTest stickiness): one more rule per weighted backend matching the
    header's value against that backend's run of buckets (`builders.assignment`), so a
    session always reaches one backend. Gateway API gives a rule with more header matches
    precedence over the plain rule, which keeps the weighted split for requests without a
    session id. The plain rule stays first (`route_weights` reads it). With an alias the sticky
    rules are repeated for the alias path (a longer path wins over more header matches)."""
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
    aliased = bool(alias) and all(b.model for b in backends)
    if aliased:
        spec["rules"].append(
            {
                "matches": [_match(model_path(alias or ""), headers or {})],
                "backendRefs": [
                    {
                        "kind": "Service",
                        "name": b.service,
                        "port": b.port,
                        "weight": b.weight,
                        "filters": _rewrite_to(b),
                    }
                    for b in backends
                ],
            }
        )
    if session_header and sum(1 for b in backends if b.weight > 0) > 1:  # a split to stick to
        spec["rules"] += sticky_rules(backends, session_header, path, headers=headers)
        if aliased:
            alias_path = model_path(alias or "")
            spec["rules"] += sticky_rules(backends, session_header, alias_path, rewrite=True, headers=headers)
    if hostnames:
        spec["hostnames"] = list(hostnames)
    return {"apiVersion": GATEWAY_API_VERSION, "kind": "HTTPRoute", "metadata": metadata, "spec": spec}


def _rewrite_to(b: Backend) -> list[dict[str, Any]]:
    """The filter turning the endpoint's alias path into this backend's own model path."""
    return [
        {
            "type": "URLRewrite",
            "urlRewrite": {
                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": model_path(b.model or "")}
            },
        }
    ]


def sticky_rules(
    backends: Sequence[Backend],
    header: str,
    path: str = "/",
    rewrite: bool = False,
    headers: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Per weighted backend, a rule sending the sessions whose `header` value falls in its bucket
    run to it alone (Gateway API session persistence is experimental-channel only, and header
    matches are standard: docs/abtests.md)."""
    weights = {b.service: b.weight for b in backends}
    by_service = {b.service: b for b in backends}
    rules = []
    for service, (first, end) in bucket_slices(weights).items():
        b = by_service[service]
        match = _match(path, headers or {})  # the endpoint's own header matches (language pair) too
        match["headers"] = [
            *match.get("headers", []),
            {"type": "RegularExpression", "name": header, "value": bucket_regex(first, end)},
        ]
        ref: dict[str, Any] = {"kind": "Service", "name": b.service, "port": b.port}
        if rewrite:
            ref["filters"] = _rewrite_to(b)
        rules.append({"matches": [match], "backendRefs": [ref]})
    return rules


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


# The label that ties an EndpointSlice to its Service (the EndpointSlice controller sets it).
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def endpoint_slice(
    deployment_name: str,
    namespace: str,
    addresses: Sequence[str],
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    labels = {
        **common_labels(deployment_name, "endpoint"),
        LABEL_DEPLOYMENT: deployment_name,
        SERVICE_NAME_LABEL: route_name(deployment_name),
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
