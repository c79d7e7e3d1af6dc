"""The manifests a rollout plan comes to: what the ModelDeployment controller applies, scales
and deletes, in that order (experiments/objects.py is the A/B test's counterpart).

Pure: the controller reads the cluster, plans (rollout/dispatch.py), turns the plan into
`EndpointObjects` here and applies them without deciding anything on the way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stt_operator.api.modeldeployment import ModelDeploymentSpec
from stt_operator.builders.metadata import LABEL_REVISION
from stt_operator.builders.placement import Images, place
from stt_operator.builders.revision import serving_params
from stt_operator.builders.routing import (
    endpoint_route,
    endpoint_service,
    endpoint_slice,
    ratio_replicas,
    ready_pod_ips,
    route_name,
)
from stt_operator.builders.serving import (
    TRITON_HTTP_PORT,
    Revision,
    revision_object_name,
    triton_deployment,
    triton_service,
)
from stt_operator.rollout.plan import EndpointPlan, ObservedRevision


@dataclass(frozen=True)
class Endpoint:
    """One ModelDeployment as the builders need it: who it is and what it asks for."""

    name: str
    namespace: str
    owner: Mapping[str, Any]
    spec: ModelDeploymentSpec
    images: Images

    @property
    def http_port(self) -> int:
        return self.spec.endpoint.port if self.spec.endpoint else TRITON_HTTP_PORT

    def revision_objects(
        self, model: Mapping[str, Any], revision: Revision, role: str, replicas: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One revision's Triton Deployment (placed on the serving nodes) and its Service."""
        params = serving_params(
            deployment_name=self.name,
            namespace=self.namespace,
            revision=revision,
            role=role,
            model=model,
            replicas=replicas,
            resources_override=self.spec.resources.to_dict() if self.spec.resources else None,
            triton_image=self.images.triton,
            operator_image=self.images.fetcher,
            owner=self.owner,
            http_port=self.http_port,
        )
        return place(triton_deployment(params), self.images.serving_placement), triton_service(params)

    def first_pods(self, model: Mapping[str, Any], revision: Revision) -> tuple[dict[str, Any], int]:
        """The pod spec and count a new revision starts with (the capacity preflight's question):
        a canary that scales with its weight starts with one pod, anything else with all."""
        deployment, _ = self.revision_objects(model, revision, "canary", self.spec.replicas)
        scaled = self.spec.scale_replicas_with_weight and self.spec.strategy.type in ("Canary", "Gradual")
        return deployment["spec"]["template"]["spec"], 1 if scaled else self.spec.replicas


@dataclass
class EndpointObjects:
    """Applied in field order: serving stacks, replica changes, routing; then deletions."""

    serving: list[dict[str, Any]] = field(default_factory=list)
    scale: dict[str, int] = field(default_factory=dict)  # Deployment name -> replicas
    routing: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, int] | None = None  # Service name -> weight, when the route is written
    address: str | None = None  # status.endpoint, when the route is written
    delete: list[str] = field(default_factory=list)  # revision object names (Deployment + Service)


def endpoint_objects(
    endpoint: Endpoint,
    plan: EndpointPlan,
    model: Mapping[str, Any],
    observed: Mapping[str, ObservedRevision],
    models_by_revision: Mapping[str, str],
    pods: Sequence[Mapping[str, Any]] = (),
) -> EndpointObjects:
    """`model`: the STTModel body every ensured revision serves; `models_by_revision`: the model
    behind each revision id the plan may name; `pods`: the endpoint's pods (read only for
    `routing: replica-ratio`, where the split is made of replicas and one Service over them)."""
    name, namespace, spec = endpoint.name, endpoint.namespace, endpoint.spec
    out = EndpointObjects()
    by_ratio = spec.routing == "replica-ratio"
    ratio = ratio_replicas(plan.route, spec.replicas) if by_ratio and plan.route else {}
    for revision, role in plan.ensure:
        replicas = ratio.get(revision.id, plan.replicas.get(revision.id, spec.replicas))
        out.serving += endpoint.revision_objects(model, revision, role, replicas)

    def object_name(revision_id: str) -> str:
        return revision_object_name(name, models_by_revision[revision_id], revision_id)

    if plan.route is not None and by_ratio:
        for revision_id, replicas in ratio.items():
            found = observed.get(revision_id)
            if found is not None and found.replicas is not None and found.replicas != replicas:
                out.scale[object_name(revision_id)] = replicas
        serving = {rid for rid, weight in plan.route.items() if weight > 0}  # a preview takes none
        addresses = ready_pod_ips(
            [p for p in pods if (p.get("metadata") or {}).get("labels", {}).get(LABEL_REVISION) in serving]
        )
        out.routing = [
            endpoint_service(name, namespace, endpoint.owner, endpoint.http_port),
            endpoint_slice(name, namespace, addresses, endpoint.owner),
        ]
        out.address = f"{route_name(name)}.{namespace}.svc"
    elif plan.route is not None:
        services = {rid: object_name(rid) for rid in plan.route}
        out.weights = {services[rid]: weight for rid, weight in plan.route.items()}
        served = {services[rid]: models_by_revision[rid] for rid in plan.route}
        out.routing = [
            endpoint_route(name, namespace, spec.endpoint, out.weights, models=served, owner=endpoint.owner)
        ]
        out.address = name
    out.delete = [object_name(rid) for rid in plan.delete if rid in models_by_revision]
    return out
