"""The Kubernetes objects an ABTest writes (pure builders over the project's builders).

- one Triton Deployment + Service per variant whose model the endpoint does not already serve,
  owned by the ABTest and labelled `stt.dev/abtest=<name>` (its own `model-deployment` label
  value, so the ModelDeployment controller never mistakes them for its own revisions);
- the endpoint's HTTPRoute (the ModelDeployment's name and owner) with one weighted backendRef
  per variant;
- the evaluator that replays the golden set to every variant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stt_operator import API_GROUP
from stt_operator.api.modeldeployment import EndpointSpec
from stt_operator.builders import routing
from stt_operator.builders.metadata import dns_name, owner_reference
from stt_operator.builders.modelconfig import triton_model_name
from stt_operator.builders.revision import serving_params
from stt_operator.builders.serving import (
    TRITON_HTTP_PORT,
    Revision,
    revision_object_name,
    triton_deployment,
    triton_service,
)
from stt_operator.evaluator.manifests import (
    EvaluatorParams,
    evaluator_objects,
    revision_target,
)

LABEL_ABTEST = f"{API_GROUP}/abtest"
ROLE_VARIANT = "variant"


@dataclass(frozen=True)
class VariantBackend:
    """Where one variant is served: the endpoint's stable revision, or a Deployment of the test."""

    variant: str
    model: str
    revision: str  # revision id (builders.serving.Revision.id)
    service: str  # Service (and Deployment) name
    owned: bool  # created by the ABTest (False: the endpoint's stable revision)


def variant_deployment_name(abtest: str) -> str:
    """The `model-deployment` label value (and name prefix) of an ABTest's variant objects."""
    return dns_name("abt", abtest, max_length=40)


def owned_service_name(abtest: str, model: str, revision_id: str) -> str:
    return revision_object_name(variant_deployment_name(abtest), model, revision_id)


def variant_objects(
    *,
    abtest_body: Mapping[str, Any],
    backend: VariantBackend,
    model_body: Mapping[str, Any],
    model_digest: str,
    replicas: int,
    resources_override: Mapping[str, Any] | None,
    triton_image: str,
    operator_image: str,
    http_port: int = TRITON_HTTP_PORT,
) -> list[dict[str, Any]]:
    """Deployment and Service serving one owned variant (HTTP on the endpoint's port)."""
    name = abtest_body["metadata"]["name"]
    params = serving_params(
        deployment_name=variant_deployment_name(name),
        namespace=abtest_body["metadata"]["namespace"],
        revision=Revision(backend.model, model_digest),
        role=ROLE_VARIANT,
        model=model_body,
        replicas=replicas,
        resources_override=resources_override,
        triton_image=triton_image,
        operator_image=operator_image,
        owner=owner_reference(abtest_body),
        http_port=http_port,
    )
    objects = [triton_deployment(params), triton_service(params)]
    for obj in objects:
        obj["metadata"]["labels"][LABEL_ABTEST] = name
    if objects[0]["metadata"]["name"] != backend.service:
        raise ValueError(
            f"variant {backend.variant}: revision {backend.revision} of model {backend.model} does not"
            f" match the model's current digest; the STTModel changed during the test"
        )
    return objects


def endpoint_route(
    md_body: Mapping[str, Any],
    weights: Mapping[str, int],
    session_header: str | None = None,
    models: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The held endpoint's HTTPRoute with the test's `weights` (Service name -> weight), built
    by the same builder as the ModelDeployment's own (`builders/routing.py: endpoint_route`):
    same name, owner, parents and match, plus the test's sticky rules."""
    meta = md_body["metadata"]
    endpoint = (md_body.get("spec") or {}).get("endpoint")
    return routing.endpoint_route(
        meta["name"],
        meta["namespace"],
        EndpointSpec.model_validate(endpoint) if endpoint else None,
        weights,
        models=models,
        owner=owner_reference(md_body),
        session_header=session_header,
    )


def evaluator_for(
    *,
    abtest_body: Mapping[str, Any],
    endpoint: str,
    backends: Sequence[VariantBackend],
    models: Mapping[str, Mapping[str, Any]],
    control: str,
    evalset: tuple[str, str | None],
    operator_image: str,
) -> list[dict[str, Any]]:
    """ConfigMap, Deployment and Service of the test's evaluator (paired replay to every variant)."""
    meta = abtest_body["metadata"]
    namespace = meta["namespace"]
    targets = [
        revision_target(
            b.variant,
            b.service,
            namespace,
            triton_model_name(b.model),
            b.model,
            (models[b.model].get("spec") or {}).get("io") or {},
        )
        for b in backends
    ]
    params = EvaluatorParams(
        # `abt-<name>`: never the name of the endpoint's own rollout evaluator (`<md>-evaluator`).
        owner_name=variant_deployment_name(meta["name"]),
        namespace=namespace,
        endpoint=endpoint,
        targets=targets,
        evalset_uri=evalset[0],
        evalset_secret=evalset[1],
        baseline=control,
        image=operator_image,
        owner=owner_reference(abtest_body),
        extra_labels={LABEL_ABTEST: meta["name"]},
    )
    return evaluator_objects(params)
