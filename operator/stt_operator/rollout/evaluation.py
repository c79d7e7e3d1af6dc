"""The evaluator a rollout runs: paired replay of a labelled set to the stable and the new revision.

The `wer`, `cer`, `confidence`, `rtf` and latency presets read the evaluator's `stt_eval_*`
series, so while a revision is in flight and the analysis uses one of them, the ModelDeployment
owns one evaluator (ConfigMap + Deployment + Service, `evaluator.manifests`). It needs an
evaluation set: the new model's `validation.evaluationSet`, else the stable model's. Without
one the analysis finds no series and pauses (noDataPolicy), which its condition says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stt_operator.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from stt_operator.builders.metadata import LABEL_DEPLOYMENT, owner_reference
from stt_operator.builders.modelconfig import triton_model_name
from stt_operator.builders.placement import Images, place
from stt_operator.builders.serving import revision_object_name
from stt_operator.evaluator.manifests import (
    EvaluatorParams,
    evaluation_set,
    evaluator_name,
    evaluator_objects,
    revision_target,
)
from stt_operator.rollout.objects import Endpoint
from stt_operator.rollout.plan import ObservedRevision

# Presets computed from the evaluator's series (error-rate reads Triton's own counters).
EVALUATOR_PRESETS = frozenset({"wer", "cer", "confidence", "rtf", "latency-p95", "latency-p99"})
ROLE_EVALUATOR = "evaluator"


def needs_evaluator(spec: ModelDeploymentSpec) -> bool:
    analysis = spec.analysis
    return analysis is not None and any(m.preset in EVALUATOR_PRESETS for m in analysis.metrics)


def candidate_variant(spec: ModelDeploymentSpec) -> str:
    """The evaluator's variant label of the revision in flight."""
    return "preview" if spec.strategy.type == "BlueGreen" else "canary"


def rollout_evaluator(
    md_body: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    *,
    stable: tuple[str, Mapping[str, Any]],
    candidate: tuple[str, Mapping[str, Any]],
    operator_image: str,
) -> list[dict[str, Any]] | None:
    """Objects of the evaluator comparing `candidate` with `stable` ((revision id, STTModel
    body) each), or None when no model names an evaluation set."""
    evalset = evaluation_set((candidate[1], stable[1]))
    if evalset is None:
        return None
    meta = md_body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    targets = []
    for variant, (revision_id, model) in (("stable", stable), (candidate_variant(spec), candidate)):
        model_name = model["metadata"]["name"]
        targets.append(
            revision_target(
                variant,
                revision_object_name(name, model_name, revision_id),
                namespace,
                triton_model_name(model_name),
                model_name,
                (model.get("spec") or {}).get("io") or {},
            )
        )
    params = EvaluatorParams(
        owner_name=name,
        namespace=namespace,
        endpoint=name,
        targets=targets,
        evalset_uri=evalset[0],
        evalset_secret=evalset[1],
        baseline="stable",
        image=operator_image,
        owner=owner_reference(md_body),
        # Listed with the endpoint's revisions (it has no revision label, so it is not one).
        extra_labels={LABEL_DEPLOYMENT: name},
    )
    return evaluator_objects(params)


@dataclass(frozen=True)
class EvaluatorChange:
    """What this reconcile does to the rollout's evaluator: objects to apply, or remove it."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    remove: bool = False


def evaluator_wanted(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> bool:
    """A revision is in flight beside a stable one and the analysis reads the evaluator's series."""
    return bool(status.canary_revision and status.stable_revision and needs_evaluator(spec))


def evaluator_change(
    md_body: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    *,
    candidate_model: Mapping[str, Any],
    stable_model: Mapping[str, Any] | None,
    found: bool,
    candidate_serves: bool,
    images: Images,
) -> EvaluatorChange:
    """Run the rollout's evaluator while it is wanted (`status`: after this reconcile's plan);
    remove it otherwise. It starts once the new revision is Available: a replay against a
    revision still loading its model only fails, backs off and wastes its first round (the
    canary on the real node took a minute to load; the next round came 60 s later)."""
    wanted = evaluator_wanted(spec, status)
    if wanted and not (candidate_serves or found):
        return EvaluatorChange()
    objects = None
    if wanted and stable_model is not None:
        objects = rollout_evaluator(
            md_body,
            spec,
            stable=(status.stable_revision or "", stable_model),
            candidate=(status.canary_revision or "", candidate_model),
            operator_image=images.jobs,
        )
    if objects:
        return EvaluatorChange([place(obj, images.jobs_placement) for obj in objects])
    return EvaluatorChange(remove=found)


def plan_evaluator(
    md_body: Mapping[str, Any],
    endpoint: Endpoint,
    status: ModelDeploymentStatus,
    deployments: Sequence[Mapping[str, Any]],
    observed: Mapping[str, ObservedRevision],
    candidate_model: Mapping[str, Any],
    get_model: Callable[[str], Mapping[str, Any] | None],
) -> EvaluatorChange:
    """`evaluator_change` from what the controller found: the evaluator's Deployment among the
    endpoint's `deployments`, whether the revision in flight (`status`: after this reconcile's
    plan) is Available in `observed`. The stable STTModel is read (`get_model`, by name) only
    when the evaluator may run, so a settled endpoint costs no extra read."""
    found = any(d["metadata"]["name"] == evaluator_name(endpoint.name) for d in deployments)
    candidate = observed.get(status.canary_revision or "")
    serves = candidate is not None and candidate.available
    stable_model = None
    if evaluator_wanted(endpoint.spec, status) and (serves or found):
        stable_model = get_model(status.stable_model or "")
    return evaluator_change(
        md_body,
        endpoint.spec,
        status,
        candidate_model=candidate_model,
        stable_model=stable_model,
        found=found,
        candidate_serves=serves,
        images=endpoint.images,
    )
