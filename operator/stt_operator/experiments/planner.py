"""The ABTest planner: spec + status + observed world (+ one look at the metrics) -> a plan.

Pure and deterministic. Everything a test must remember between reconciles lives in its
`status` (phase, startedAt, each variant's revision, lastAnalyzedAt, decision, winner) and in
the hold annotation on the ModelDeployment, so planning twice gives the same plan and a
restarted operator resumes where it stopped.

Phases: Pending -> Running -> Concluded -> Promoted, or Stopped / Failed. Actions of a
terminal phase (route back, release the hold, promote, remove the variants) follow from the
committed phase at the next reconcile, so a decision is recorded before anything acts on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stt_operator.analysis.ab_verdict import ABDecision, decide_ab
from stt_operator.analysis.model import HIGHER, AnalysisResult, MetricResult
from stt_operator.analysis.verdicts import p_state
from stt_operator.api.abtest import (
    PHASE_CONCLUDED,
    PHASE_FAILED,
    PHASE_PENDING,
    PHASE_PROMOTED,
    PHASE_RUNNING,
    PHASE_STOPPED,
    REASON_COLLECTING,
    REASON_DURATION_REACHED,
    REASON_ENDPOINT_BUSY,
    REASON_ENDPOINT_NOT_FOUND,
    REASON_GUARDRAIL_FAILED,
    REASON_NO_DIFFERENCE,
    REASON_SRM_DETECTED,
    REASON_STOPPED,
    REASON_TEST_STARTED,
    REASON_VARIANT_NOT_READY,
    REASON_WINNER_ANNOUNCED,
    REASON_WINNER_FOUND,
    REASON_WINNER_PROMOTED,
    ABTestSpec,
    ABTestStatus,
    ConfidenceInterval,
    Decision,
    DecisionOutcome,
    GuardrailResult,
    PromotionStatus,
    SampleRatioStatus,
    VariantStatus,
    sequential_status,
    variant_summary,
)
from stt_operator.api.common import get_condition
from stt_operator.builders.serving import Revision, model_digest, revision_object_name
from stt_operator.experiments.objects import VariantBackend, owned_service_name
from stt_operator.rollout.plan import ConditionUpdate, EventUpdate
from stt_operator.rollout.transitions import ANNOTATION_HELD_BY
from stt_operator.stats.counts import SRMResult

TERMINAL = (PHASE_CONCLUDED, PHASE_PROMOTED, PHASE_STOPPED, PHASE_FAILED)
REASON_STARTING = "StartingVariants"
REASON_CONCURRENCY = "MaxConcurrentTests"
REASON_ENDPOINT_NOT_READY = "EndpointNotReady"
REASON_UNSUPPORTED = "UnsupportedEndpoint"
REASON_MODEL_FAILED = "VariantModelFailed"
REASON_HOLD_LOST = "HoldLost"
REASON_HOLD_PENDING = "WaitingForHold"
REASON_NOT_ENOUGH = "NotEnoughData"
REASON_MIN_DURATION = "MinDurationNotReached"
REASON_NO_DATA = "NoData"
REASON_ANALYSIS_ERROR = "AnalysisError"
REASON_INCONCLUSIVE = "Inconclusive"
MAX_TEXT = 1000
# VariantStatus attribute of each metric preset in `status.variants[]`.
PRESET_FIELDS = {
    "wer": "wer",
    "cer": "cer",
    "confidence": "confidence",
    "latency-p95": "latency_p95_ms",
    "error-rate": "error_rate",
}


def iso(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _finite(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


# --- inputs and outputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """A variant's STTModel as found."""

    name: str
    exists: bool = True
    ready: bool = True
    failed: str | None = None  # why validation failed, when it did
    digest: str = ""  # the ModelDeployment controller's revision digest of the model

    @classmethod
    def from_body(cls, name: str, body: Mapping[str, Any] | None) -> ModelInfo:
        if body is None:
            return cls(name, exists=False, ready=False)
        conditions = (body.get("status") or {}).get("conditions")
        validated = get_condition(conditions, "Validated") or {}
        failed = (validated.get("message") or "failed") if validated.get("status") == "False" else None
        ready = (get_condition(conditions, "Ready") or {}).get("status") == "True"
        return cls(name, exists=True, ready=ready, failed=failed, digest=model_digest(body))


@dataclass(frozen=True)
class EndpointInfo:
    """The target ModelDeployment as found."""

    name: str
    exists: bool = True
    held_by: str | None = None  # the hold annotation
    held_by_status: str | None = None  # status.heldBy: the ModelDeployment saw the hold
    spec_model: str | None = None
    stable_model: str | None = None
    stable_revision: str | None = None
    canary_revision: str | None = None
    routing: str = "gateway-api"
    stable_available: bool = False
    # The endpoint's `spec.analysis.prometheus`: the test reads the same Prometheus its
    # rollouts do (None: the operator's default).
    prometheus_source: str | None = None
    prometheus_address: str | None = None

    @classmethod
    def from_body(cls, name: str, md: Mapping[str, Any] | None) -> EndpointInfo:
        """The ModelDeployment as found (`stable_available` is read from its Deployment)."""
        if md is None:
            return cls(name, exists=False)
        status = md.get("status") or {}
        spec = md.get("spec") or {}
        prometheus = (spec.get("analysis") or {}).get("prometheus") or {}
        return cls(
            name,
            held_by=(md["metadata"].get("annotations") or {}).get(ANNOTATION_HELD_BY),
            held_by_status=status.get("heldBy"),
            spec_model=(spec.get("model") or {}).get("name"),
            stable_model=status.get("stableModel"),
            stable_revision=status.get("stableRevision"),
            canary_revision=status.get("canaryRevision"),
            routing=spec.get("routing") or "gateway-api",
            prometheus_source=prometheus.get("source"),
            prometheus_address=prometheus.get("address"),
        )

    @property
    def stable_service(self) -> str | None:
        if not (self.stable_model and self.stable_revision):
            return None
        return revision_object_name(self.name, self.stable_model, self.stable_revision)


@dataclass(frozen=True)
class Measurement:
    """One look at the metrics: per non-control variant, the analysis of the primary metric and
    the guardrails against the control; the sample-ratio check; or why the look failed."""

    results: Mapping[str, AnalysisResult] = field(default_factory=dict)
    srm: SRMResult | str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ABTestInput:
    name: str
    namespace: str
    spec: ABTestSpec
    status: ABTestStatus
    now: datetime
    endpoint: EndpointInfo
    models: Mapping[str, ModelInfo]
    available: Mapping[str, bool]  # Deployment name -> Available (the test's own variants)
    active_elsewhere: int = 0  # other ABTests in the cluster holding an endpoint
    max_concurrent: int = 5
    analysis_interval_s: float = 60.0
    measurement: Measurement | None = None
    deleting: bool = False


@dataclass
class ABTestPlan:
    status: ABTestStatus  # the whole new status: the input's, as the planner edited it
    conditions: list[ConditionUpdate] = field(default_factory=list)
    events: list[EventUpdate] = field(default_factory=list)
    acquire_hold: bool = False
    release_hold: bool = False
    promote_model: str | None = None  # set the ModelDeployment's spec.model to this
    ensure: list[VariantBackend] = field(default_factory=list)  # owned variants to create/keep
    ensure_evaluator: bool = False
    route: dict[str, int] | None = None  # Service -> weight; None: leave the route alone
    cleanup: bool = False  # remove the test's variants and evaluator (never one the route names)
    measure: bool = False  # look at the metrics, then plan again with the Measurement
    requeue_after: float | None = None

    @classmethod
    def from_status(cls, status: ABTestStatus) -> ABTestPlan:
        """An empty plan whose status starts as a copy of `status` (the input stays untouched)."""
        return cls(status=status.model_copy(deep=True))

    def set_status(self, **fields: Any) -> None:
        """Set status fields by their Python names; assignment raises on a misspelt name and
        marks each field as set, so the controller writes it."""
        for name, value in fields.items():
            setattr(self.status, name, value)


# --- helpers ------------------------------------------------------------------------------------


def backends(inp: ABTestInput) -> list[VariantBackend]:
    """Where each variant is served. A variant on the endpoint's stable model uses the endpoint's
    stable revision; any other gets the test's own Deployment. Revisions recorded in status win
    (a restarted operator keeps measuring the same revisions)."""
    recorded = {v.name: v for v in inp.status.variants}
    out = []
    ep = inp.endpoint
    for v in inp.spec.variants:
        model = v.model.name
        revision = recorded[v.name].revision if v.name in recorded else None
        if revision is None:
            if model == ep.stable_model and ep.stable_revision:
                revision = ep.stable_revision
            else:
                revision = Revision(model, inp.models[model].digest).id if model in inp.models else ""
        if model == ep.stable_model and revision == ep.stable_revision and ep.stable_service:
            out.append(VariantBackend(v.name, model, revision, ep.stable_service, owned=False))
        else:
            out.append(
                VariantBackend(v.name, model, revision, owned_service_name(inp.name, model, revision), True)
            )
    return out


def is_available(inp: ABTestInput, backend: VariantBackend) -> bool:
    if not backend.owned:
        return inp.endpoint.stable_available
    return inp.available.get(backend.service, False)


def route_weights(inp: ABTestInput, bks: Sequence[VariantBackend]) -> dict[str, int] | None:
    """The spec's weights on the available variants. A variant that is not Available is never
    named; its share goes to the control (else to the first available variant)."""
    weights = inp.spec.weights()
    up = [b for b in bks if is_available(inp, b)]
    if not up:
        return None
    route = {b.service: weights[b.variant] for b in up}
    missing = sum(weights[b.variant] for b in bks if b not in up)
    if missing:
        control = next((b for b in up if b.variant == inp.spec.control().name), up[0])
        route[control.service] += missing
    return route


def live_weights(inp: ABTestInput, bks: Sequence[VariantBackend]) -> dict[str, float] | None:
    """variant -> the share of live traffic the route gives it now (a variant that is down has
    its share on the control), for the live sample-ratio check; None when fewer than two
    variants take traffic (nothing to compare)."""
    route = route_weights(inp, bks)
    if route is None:
        return None
    weights = {b.variant: float(route.get(b.service, 0)) for b in bks}
    return weights if sum(1 for w in weights.values() if w > 0) >= 2 else None


def hold_acknowledged(inp: ABTestInput) -> bool:
    """The ModelDeployment reports our hold in status.heldBy: its reconciles that could still
    write the route are over (Kopf handles one object serially), so we are the only writer."""
    return inp.endpoint.held_by == inp.name and inp.endpoint.held_by_status == inp.name


def stable_route(inp: ABTestInput) -> dict[str, int] | None:
    ep = inp.endpoint
    return {ep.stable_service: 100} if ep.stable_service and ep.stable_available else None


def _variants_status(inp: ABTestInput, bks: Sequence[VariantBackend]) -> list[VariantStatus]:
    """Each variant's entry: what status recorded (its measured values), with where it is served."""
    old = {v.name: v for v in inp.status.variants}
    weights = inp.spec.weights()
    out = []
    for b in bks:
        entry = old[b.variant].model_copy(deep=True) if b.variant in old else VariantStatus(name=b.variant)
        # Assigned one by one: each is marked set, so it is written even where it equals a default.
        entry.model = b.model
        entry.weight = weights[b.variant]
        entry.revision = b.revision
        entry.service = b.service
        out.append(entry)
    return out


def _elapsed(inp: ABTestInput) -> float:
    started = parse_iso(inp.status.started_at)
    return (inp.now - started).total_seconds() if started else 0.0


def _common(plan: ABTestPlan, inp: ABTestInput) -> None:
    plan.status.variant_summary = variant_summary(inp.spec.variants)


def _wait(plan: ABTestPlan, reason: str, message: str, phase: str = PHASE_PENDING) -> ABTestPlan:
    message = short(message)
    plan.set_status(phase=phase, message=message)
    plan.conditions += [
        ConditionUpdate("Ready", "False", reason, message),
        ConditionUpdate("Running", "False", reason, message),
    ]
    if phase == PHASE_FAILED:
        plan.events.append(EventUpdate("Warning", reason, message))
    plan.requeue_after = 2.0
    return plan


def _end(plan: ABTestPlan, inp: ABTestInput, phase: str, reason: str, message: str) -> ABTestPlan:
    """Move to a terminal phase; the next reconcile acts on it (route back, release, clean up)."""
    message = short(message)
    plan.set_status(phase=phase, ended_at=iso(inp.now), message=message)
    plan.conditions += [
        ConditionUpdate("Running", "False", reason, message),
        ConditionUpdate("Ready", "True" if phase == PHASE_CONCLUDED else "False", reason, message),
        ConditionUpdate("Paused", "False", reason, message),
    ]
    plan.events.append(EventUpdate("Warning" if phase == PHASE_FAILED else "Normal", reason, message))
    plan.requeue_after = 0.5
    return plan


# --- the planner --------------------------------------------------------------------------------


def plan_abtest(inp: ABTestInput) -> ABTestPlan:
    plan = ABTestPlan.from_status(inp.status)
    _common(plan, inp)
    phase = inp.status.phase or PHASE_PENDING
    if inp.deleting:
        return _release(plan, inp)
    if phase in TERMINAL:
        return _terminal(plan, inp, phase)
    if inp.spec.stop:
        plan.status.decision = Decision(
            outcome="Stopped", reason="spec.stop is true: ended by a person", decided_at=iso(inp.now)
        )
        return _end(
            plan, inp, PHASE_STOPPED, REASON_STOPPED, "spec.stop is true: the test was ended by a person"
        )
    if phase == PHASE_RUNNING:
        return _running(plan, inp)
    return _pending(plan, inp)


def _release(plan: ABTestPlan, inp: ABTestInput) -> ABTestPlan:
    """Give the endpoint back: route to its stable revision (while still holding), release the
    hold, and remove the test's objects (the controller keeps any the route still names)."""
    if inp.endpoint.exists and inp.endpoint.held_by == inp.name:
        plan.route = stable_route(inp)
        plan.release_hold = True
    plan.cleanup = True
    return plan


def promotion_target(inp: ABTestInput) -> str | None:
    """The model to promote: a Concluded test's `status.winner` when promotion.auto is on and the
    endpoint does not serve it already (spec.model)."""
    promotion = inp.spec.promotion
    winner = inp.status.winner
    if not (promotion and promotion.auto and winner and inp.endpoint.exists):
        return None
    model = next((v.model.name for v in inp.spec.variants if v.name == winner), None)
    return model if model and model != inp.endpoint.spec_model else None


def _terminal(plan: ABTestPlan, inp: ABTestInput, phase: str) -> ABTestPlan:
    _release(plan, inp)
    if phase == PHASE_CONCLUDED:
        model = promotion_target(inp)
        promotion = inp.spec.promotion
        if model is not None and promotion is not None and promotion.mode == "Announce":
            return _announce(plan, inp, model)
        if model is not None:
            plan.promote_model = model
            plan.status.promotion = PromotionStatus(
                mode="PatchSpec", model=model, endpoint=inp.endpoint.name, at=iso(inp.now)
            )
            message = short(
                f"winner {inp.status.winner} promoted: ModelDeployment {inp.endpoint.name}"
                f" spec.model set to {model}; its rollout strategy takes it from here"
            )
            plan.set_status(phase=PHASE_PROMOTED, message=message)
            plan.conditions.append(ConditionUpdate("Ready", "True", REASON_WINNER_PROMOTED, message))
            plan.events.append(EventUpdate("Normal", REASON_WINNER_PROMOTED, message))
        elif _promoted_before_recorded(inp):
            # The ModelDeployment patch landed but the operator stopped before writing this
            # status (the patch is applied first): finish the record instead of staying Concluded.
            winner_model = next(v.model.name for v in inp.spec.variants if v.name == inp.status.winner)
            message = short(
                f"winner {inp.status.winner} promoted: ModelDeployment {inp.endpoint.name}"
                f" spec.model is {winner_model}; its rollout strategy takes it from here"
            )
            plan.set_status(
                phase=PHASE_PROMOTED,
                message=message,
                promotion=PromotionStatus(
                    mode="PatchSpec", model=winner_model, endpoint=inp.endpoint.name, at=iso(inp.now)
                ),
            )
            plan.conditions.append(ConditionUpdate("Ready", "True", REASON_WINNER_PROMOTED, message))
            plan.events.append(EventUpdate("Normal", REASON_WINNER_PROMOTED, message))
    return plan


def _promoted_before_recorded(inp: ABTestInput) -> bool:
    """A candidate (not the control) won with auto PatchSpec promotion, and the endpoint's spec
    already names its model: the promotion happened and only its status record is missing."""
    promotion = inp.spec.promotion
    winner = inp.status.winner
    if not (promotion and promotion.auto and promotion.mode != "Announce" and winner and inp.endpoint.exists):
        return False
    if winner == inp.spec.control().name or inp.status.promotion is not None:
        return False
    model = next((v.model.name for v in inp.spec.variants if v.name == winner), None)
    return model is not None and model == inp.endpoint.spec_model


def promotion_patch(model: str) -> str:
    """The change to a ModelDeployment manifest that promotes `model`, as a JSON merge patch."""
    return json.dumps({"spec": {"model": {"name": model}}}, separators=(",", ":"))


def _announce(plan: ABTestPlan, inp: ABTestInput, model: str) -> ABTestPlan:
    """GitOps-safe promotion: the spec belongs to Git, so the winner is recorded and announced,
    never written; the endpoint keeps serving its declared model until Git changes it."""
    previous = inp.status.promotion
    # Announced by an earlier reconcile: keep its time, post no second Event.
    announced = previous if previous is not None and previous.model == model else None
    message = short(
        f"winner {inp.status.winner} (model {model}) announced: set ModelDeployment"
        f" {inp.endpoint.name} spec.model.name to {model} in Git (`kubectl stt promotion abt/{inp.name}`"
        " prints the change)"
    )
    plan.set_status(
        message=message,
        promotion=PromotionStatus(
            mode="Announce",
            model=model,
            endpoint=inp.endpoint.name,
            patch=promotion_patch(model),
            at=announced.at if announced is not None else iso(inp.now),
        ),
    )
    plan.conditions.append(ConditionUpdate("Ready", "True", REASON_WINNER_ANNOUNCED, message))
    if announced is None:
        plan.events.append(EventUpdate("Normal", REASON_WINNER_ANNOUNCED, message))
    return plan


def _pending(plan: ABTestPlan, inp: ABTestInput) -> ABTestPlan:
    ep, name = inp.endpoint, inp.name
    held = ep.held_by == name
    if not ep.exists:
        return _wait(
            plan, REASON_ENDPOINT_NOT_FOUND, f"ModelDeployment {ep.name} not found in {inp.namespace}"
        )
    if ep.routing != "gateway-api":
        return _wait(
            plan,
            REASON_UNSUPPORTED,
            f"ModelDeployment {ep.name} uses routing {ep.routing}; an A/B test splits traffic with"
            " HTTPRoute weights (routing: gateway-api)",
            PHASE_FAILED,
        )
    if ep.held_by and not held:
        return _wait(plan, REASON_ENDPOINT_BUSY, f"ABTest {ep.held_by} holds endpoint {ep.name}; waiting")
    if not held and ep.canary_revision:
        return _wait(
            plan, REASON_ENDPOINT_BUSY, f"ModelDeployment {ep.name} is rolling out a new revision; waiting"
        )
    if not (ep.stable_service and ep.stable_available):
        return _wait(
            plan, REASON_ENDPOINT_NOT_READY, f"ModelDeployment {ep.name} has no Available stable revision yet"
        )
    for v in inp.spec.variants:
        info = inp.models.get(v.model.name) or ModelInfo(v.model.name, exists=False)
        if info.failed:
            return _wait(
                plan,
                REASON_MODEL_FAILED,
                f"variant {v.name}: STTModel {info.name} failed validation: {info.failed}",
                PHASE_FAILED,
            )
        if not info.exists:
            return _wait(plan, REASON_VARIANT_NOT_READY, f"variant {v.name}: STTModel {info.name} not found")
        if not info.ready:
            return _wait(
                plan, REASON_VARIANT_NOT_READY, f"variant {v.name}: STTModel {info.name} is not Ready"
            )
    if not held:
        if inp.active_elsewhere >= inp.max_concurrent:
            return _wait(
                plan,
                REASON_CONCURRENCY,
                f"{inp.active_elsewhere} A/B tests already run (maxConcurrentABTests={inp.max_concurrent});"
                " waiting for one to end",
            )
        plan.acquire_hold = True
    bks = backends(inp)
    plan.ensure = [b for b in bks if b.owned]
    plan.status.variants = _variants_status(inp, bks)
    waiting = [b for b in bks if not is_available(inp, b)]
    if waiting:
        message = (
            "waiting for "
            + ", ".join(f"variant {b.variant} ({b.model}, Deployment {b.service})" for b in waiting)
            + " to become Available"
        )
        _wait(plan, REASON_STARTING, message)
        plan.conditions.append(
            ConditionUpdate("Concluded", "False", REASON_STARTING, "the test has not started")
        )
        return plan
    if not hold_acknowledged(inp):
        _wait(
            plan,
            REASON_HOLD_PENDING,
            f"waiting for ModelDeployment {ep.name} to report the hold (status.heldBy)",
        )
        plan.conditions.append(
            ConditionUpdate("Concluded", "False", REASON_STARTING, "the test has not started")
        )
        return plan
    plan.route = route_weights(inp, bks)
    plan.ensure_evaluator = True
    message = short(
        f"splitting {ep.name}: {variant_summary(inp.spec.variants)}; control {inp.spec.control().name}"
    )
    plan.set_status(phase=PHASE_RUNNING, started_at=iso(inp.now), message=message)
    plan.conditions += [
        ConditionUpdate("Running", "True", REASON_TEST_STARTED, message),
        ConditionUpdate("Ready", "True", REASON_TEST_STARTED, message),
        ConditionUpdate("Concluded", "False", REASON_COLLECTING, "collecting samples"),
        ConditionUpdate("Paused", "False", REASON_COLLECTING, "collecting samples"),
        ConditionUpdate("SampleRatioMismatch", "False", REASON_COLLECTING, "not checked yet"),
    ]
    plan.events.append(EventUpdate("Normal", REASON_TEST_STARTED, message))
    plan.requeue_after = 0.5
    return plan


def _running(plan: ABTestPlan, inp: ABTestInput) -> ABTestPlan:
    ep = inp.endpoint
    if not ep.exists:
        return _end(
            plan, inp, PHASE_FAILED, REASON_ENDPOINT_NOT_FOUND, f"ModelDeployment {ep.name} was deleted"
        )
    if ep.held_by and ep.held_by != inp.name:
        return _end(
            plan, inp, PHASE_FAILED, REASON_HOLD_LOST, f"ABTest {ep.held_by} took the hold of {ep.name}"
        )
    if ep.held_by is None:
        plan.acquire_hold = True  # someone removed the annotation: the test still runs, hold again
    bks = backends(inp)
    plan.ensure = [b for b in bks if b.owned]
    plan.ensure_evaluator = True
    # Re-taken after someone removed it: no route write until the ModelDeployment reports it.
    plan.route = route_weights(inp, bks) if hold_acknowledged(inp) else None
    plan.status.variants = _variants_status(inp, bks)
    down = [b for b in bks if not is_available(inp, b)]
    if down:
        message = short(
            "not Available: "
            + ", ".join(f"variant {b.variant} ({b.service})" for b in down)
            + "; its share goes to the control until it is back"
        )
        plan.conditions.append(ConditionUpdate("Ready", "False", REASON_VARIANT_NOT_READY, message))
    else:
        plan.conditions.append(
            ConditionUpdate("Ready", "True", REASON_TEST_STARTED, "every variant is Available")
        )
    elapsed = _elapsed(inp)
    ended = elapsed >= inp.spec.duration_seconds()
    last = parse_iso(inp.status.last_analyzed_at)
    due = ended or last is None or (inp.now - last).total_seconds() >= inp.analysis_interval_s
    if not due:
        plan.requeue_after = max(0.5, inp.analysis_interval_s - (inp.now - last).total_seconds())  # type: ignore[operator]
        return plan
    if inp.measurement is None:
        plan.measure = True
        return plan
    return _judge(plan, inp, inp.measurement, elapsed, ended)


# --- one look -----------------------------------------------------------------------------------


def _primary(result: AnalysisResult, name: str) -> MetricResult | None:
    return next((m for m in result.metrics if m.name == name), None)


def _record_values(variants: list[VariantStatus], inp: ABTestInput, m: Measurement) -> None:
    """Per-variant values of every preset metric (the control's from any comparison)."""
    control = inp.spec.control().name
    by_name = {v.name: v for v in variants}
    specs = {s.name: s for s in [inp.spec.primary_metric, *inp.spec.guardrail_metrics]}
    primary = inp.spec.primary_metric.name
    for variant, result in m.results.items():
        for metric in result.metrics:
            spec = specs.get(metric.name)
            key = PRESET_FIELDS.get(spec.preset or "") if spec else None
            if key and _finite(metric.value) is not None:
                setattr(by_name[variant], key, round(float(metric.value), 6))  # type: ignore[arg-type]
            if key and _finite(metric.baseline) is not None:
                setattr(by_name[control], key, round(float(metric.baseline), 6))  # type: ignore[arg-type]
            if metric.name == primary and metric.samples:
                if "candidate" in metric.samples:
                    by_name[variant].samples = int(metric.samples["candidate"])
                if "baseline" in metric.samples:
                    by_name[control].samples = int(metric.samples["baseline"])


def _guardrails(inp: ABTestInput, m: Measurement) -> tuple[list[GuardrailResult], dict[str, list[str]]]:
    """`status.guardrails` (worst variant per metric) and variant -> failed guardrail names."""
    rank = {"Failed": 3, "NoData": 2, "Inconclusive": 1, "Passed": 0}
    failures: dict[str, list[str]] = {}
    out = []
    for spec in inp.spec.guardrail_metrics:
        seen: list[tuple[str, MetricResult]] = []
        for variant, result in m.results.items():
            metric = _primary(result, spec.name)
            if metric is None and spec.slice:
                # A sliced guardrail reports per slice value (`name[slice=value]`): the worst one
                # speaks for the metric, and a failed slice blocks the variant.
                slices = [r for r in result.metrics if r.name.startswith(f"{spec.name}[")]
                for r in slices:
                    if r.outcome == "Failed":
                        failures.setdefault(variant, []).append(r.name)
                metric = max(slices, key=lambda r: rank.get(r.outcome, 1), default=None)
                if metric is None:
                    continue
                seen.append((variant, metric))
                continue
            if metric is None:
                continue
            seen.append((variant, metric))
            if metric.outcome == "Failed":
                failures.setdefault(variant, []).append(spec.name)
        if not seen:
            continue

        def outcome(r: MetricResult) -> str:
            return r.outcome if r.outcome in rank else "Inconclusive"  # Error: not judged this look

        variant, worst = max(seen, key=lambda s: rank[outcome(s[1])])
        entry = GuardrailResult(
            metric=spec.name,
            outcome=outcome(worst),  # type: ignore[arg-type]
            message=short("; ".join(f"{v}: {r.message}" for v, r in seen)),
        )
        # Optional values are assigned only when known: a field never set is never written.
        raw = [p for _, r in seen for p, _ in (r.details.get("p_raw") or {}).values() if p is not None]
        if raw and _finite(min(raw)) is not None:
            entry.p_value = min(raw)
        adjusted = [r.p_value for _, r in seen if _finite(r.p_value) is not None]
        if adjusted:
            entry.adjusted_p_value = min(adjusted)  # type: ignore[type-var]
        if _finite(worst.effect) is not None:
            entry.effect = worst.effect
        out.append(entry)
    return out, failures


def _decision_status(inp: ABTestInput, d: ABDecision, outcome: DecisionOutcome, reason: str) -> Decision:
    out = Decision(
        outcome=outcome, metric=inp.spec.primary_metric.name, reason=short(reason), decided_at=iso(inp.now)
    )
    # Optional values are assigned only when finite: a field never set is never written.
    if _finite(d.p_value) is not None:
        out.p_value = d.p_value
    if _finite(d.effect) is not None:
        out.effect = d.effect
    if d.confidence_interval is not None and all(_finite(x) is not None for x in d.confidence_interval):
        lo, hi = d.confidence_interval
        out.confidence_interval = ConfidenceInterval(
            lower=lo, upper=hi, level=1.0 - inp.spec.significance_level
        )
    return out


def non_inferior_choice(
    inp: ABTestInput, primaries: Mapping[str, MetricResult], blocked: Mapping[str, Sequence[str]]
) -> str | None:
    """The best candidate whose always-valid interval of (candidate - control) stays within the
    primary metric's margin on the bad side, and no guardrail failed."""
    margin = inp.spec.primary_metric.non_inferiority_margin
    if margin is None:
        return None
    higher = inp.spec.primary_metric.effective_direction() == HIGHER
    ok = []
    for variant, r in primaries.items():
        if blocked.get(variant) or r.ci_low is None or r.ci_high is None:
            continue
        inside = r.ci_low >= -margin if higher else r.ci_high <= margin
        if inside:
            ok.append((variant, r.effect or 0.0))
    if not ok:
        return None
    return max(ok, key=lambda x: x[1])[0] if higher else min(ok, key=lambda x: x[1])[0]


def _judge(plan: ABTestPlan, inp: ABTestInput, m: Measurement, elapsed: float, ended: bool) -> ABTestPlan:
    spec, now = inp.spec, inp.now
    control = spec.control().name
    plan.status.last_analyzed_at = iso(now)
    variants = plan.status.variants
    old_srm_detected = inp.status.sample_ratio is not None and inp.status.sample_ratio.detected
    if m.error is not None:
        return _pause(plan, inp, REASON_ANALYSIS_ERROR, f"the metrics could not be read: {m.error}", ended)
    plan.status.sequential = sequential_status({v: p_state(r) for v, r in m.results.items()})
    _record_values(variants, inp, m)
    guardrails, blocked = _guardrails(inp, m)
    plan.status.guardrails = guardrails
    # Sample-ratio mismatch: hold every decision while it alarms.
    srm = m.srm if isinstance(m.srm, SRMResult) else None
    if srm is not None:
        plan.status.sample_ratio = SampleRatioStatus(
            p_value=srm.p_value if math.isfinite(srm.p_value) else 1.0,
            detected=srm.mismatch,
            checked_at=iso(now),
        )
        if srm.mismatch:
            message = short(f"decision held: {srm.message}")
            plan.conditions.append(
                ConditionUpdate("SampleRatioMismatch", "True", REASON_SRM_DETECTED, message)
            )
            if not old_srm_detected:
                plan.events.append(EventUpdate("Warning", REASON_SRM_DETECTED, message))
        else:
            plan.conditions.append(
                ConditionUpdate("SampleRatioMismatch", "False", "SampleRatioOK", short(srm.message))
            )
    elif isinstance(m.srm, str):
        # No counts to check: the last check's result (p-value, alarm) stands; only checkedAt moves.
        found = inp.status.sample_ratio
        plan.status.sample_ratio = found.model_copy() if found is not None else SampleRatioStatus()
        plan.status.sample_ratio.detected = old_srm_detected
        plan.status.sample_ratio.checked_at = iso(now)
        plan.conditions.append(
            ConditionUpdate("SampleRatioMismatch", "Unknown", REASON_NO_DATA, short(m.srm))
        )
    primaries: dict[str, MetricResult] = {}
    for variant, result in m.results.items():
        r = _primary(result, spec.primary_metric.name)
        if r is None:
            return _pause(
                plan, inp, REASON_ANALYSIS_ERROR, f"{variant}: no result for the primary metric", ended
            )
        primaries[variant] = r
    stalled = [(v, r) for v, r in primaries.items() if r.outcome in ("NoData", "Error")]
    if stalled:
        reason = REASON_NO_DATA if all(r.outcome == "NoData" for _, r in stalled) else REASON_ANALYSIS_ERROR
        return _pause(plan, inp, reason, "; ".join(f"{v}: {r.message}" for v, r in stalled), ended)
    plan.conditions.append(ConditionUpdate("Paused", "False", REASON_COLLECTING, "metrics are flowing"))
    direction = spec.primary_metric.effective_direction()
    margin = spec.primary_metric.non_inferiority_margin
    d = decide_ab(
        control,
        primaries,
        direction=direction,
        alpha=spec.significance_level,
        margin=margin,
        ended=ended,
        srm=srm,
        guardrail_failures=blocked,
    )
    enough = all("p_higher" in r.details for r in primaries.values())
    srm_held = srm is not None and srm.mismatch
    if blocked:
        old = {(g.metric, g.outcome) for g in inp.status.guardrails}
        if any((name, "Failed") not in old for names in blocked.values() for name in names):
            text = short(f"guardrails failed: {blocked}; such a variant cannot win")
            plan.events.append(EventUpdate("Warning", REASON_GUARDRAIL_FAILED, text))
    interim = _decision_status(inp, d, "Inconclusive", d.reason)
    if not ended and (not d.final or elapsed < spec.min_duration_seconds()):
        if not enough:
            reason, message = REASON_NOT_ENOUGH, d.reason
        elif d.final:
            reason = REASON_MIN_DURATION
            message = f"{d.reason} (no decision before minDuration {spec.min_duration})"
        else:
            reason, message = REASON_COLLECTING, d.reason
        plan.set_status(decision=interim, message=short(message))
        plan.conditions.append(ConditionUpdate("Concluded", "False", reason, short(message)))
        plan.requeue_after = inp.analysis_interval_s
        return plan
    # The test ends now: a decision, or the duration is over.
    if d.outcome == "Winner":
        plan.set_status(winner=d.winner, decision=_decision_status(inp, d, "Winner", d.reason))
        return _conclude(plan, inp, REASON_WINNER_FOUND, f"winner {d.winner}: {d.reason}")
    if d.outcome == "NoDifference" or (enough and not srm_held):
        outcome_reason = d.reason
        promotion = spec.promotion
        if promotion and promotion.auto and promotion.only_if == "non-inferior":
            choice = non_inferior_choice(inp, primaries, blocked)
            if choice is not None:
                plan.status.winner = choice
                outcome_reason += f"; {choice} is non-inferior to {control} (margin {margin:g})"
        plan.status.decision = _decision_status(inp, d, "NoDifference", outcome_reason)
        why = REASON_NO_DIFFERENCE if d.outcome == "NoDifference" else REASON_DURATION_REACHED
        return _conclude(plan, inp, why, f"no difference: {outcome_reason}")
    # Ended without enough data, or with the decision held by a sample-ratio mismatch.
    plan.status.decision = _decision_status(inp, d, "Inconclusive", f"duration reached: {d.reason}")
    return _conclude(plan, inp, REASON_DURATION_REACHED, f"duration reached without a decision: {d.reason}")


def _conclude(plan: ABTestPlan, inp: ABTestInput, reason: str, message: str) -> ABTestPlan:
    _end(plan, inp, PHASE_CONCLUDED, reason, message)
    plan.conditions.append(ConditionUpdate("Concluded", "True", reason, short(message)))
    return plan


def _pause(plan: ABTestPlan, inp: ABTestInput, reason: str, message: str, ended: bool) -> ABTestPlan:
    """No data or a failed look: never a decision. At the end of the duration the test ends
    Inconclusive; before, it waits (the duration clock keeps running)."""
    message = short(message)
    if ended:
        plan.status.decision = Decision(
            outcome="Inconclusive",
            metric=inp.spec.primary_metric.name,
            reason=short(f"duration reached without data: {message}"),
            decided_at=iso(inp.now),
        )
        return _conclude(plan, inp, REASON_DURATION_REACHED, f"duration reached without data: {message}")
    plan.status.message = short(f"paused: {message}")
    plan.conditions += [
        ConditionUpdate("Paused", "True", reason, message),
        ConditionUpdate("Concluded", "False", reason, message),
    ]
    plan.requeue_after = inp.analysis_interval_s
    return plan


def active_tests(items: Sequence[Mapping[str, Any]], exclude_uid: str) -> int:
    """How many ABTests (cluster-wide) hold an endpoint: Running, or Pending with the hold taken
    (starting their variants)."""
    count = 0
    for item in items:
        if (item.get("metadata") or {}).get("uid") == exclude_uid:
            continue
        status = item.get("status") or {}
        starting = any(
            c.get("type") == "Running" and c.get("reason") in (REASON_STARTING, REASON_HOLD_PENDING)
            for c in status.get("conditions") or []
        )
        if status.get("phase") == PHASE_RUNNING or (status.get("phase") == PHASE_PENDING and starting):
            count += 1
    return count


def analysis_interval_s(spec: ABTestSpec, default_interval_s: float, reconcile_interval_s: float) -> float:
    """At least ~30 looks over the test's duration, at most one per default analysis interval,
    never more often than the reconcile loop (always-valid p-values allow looking this often)."""
    return max(reconcile_interval_s, min(default_interval_s, spec.duration_seconds() / 30.0))
