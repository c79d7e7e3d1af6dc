"""`ABTest` (short name `abt`): split one endpoint's traffic between models and name a winner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from stt_operator.api.common import (
    DNS_LABEL_PATTERN,
    UNIQUE_NAMES_RULE,
    ApiModel,
    Condition,
    CRName,
    CustomResource,
    MetricSpec,
    ModelRef,
    ShortText,
    StatusModel,
    Timestamp,
    bounded_duration,
    check_unique,
    conditions_field,
    parse_duration,
)

# --- spec -------------------------------------------------------------------------------------


class ModelDeploymentRef(ApiModel):
    name: CRName
    """Name of a ModelDeployment in the same namespace."""


class ABTestEndpoint(ApiModel):
    model_deployment_ref: ModelDeploymentRef
    """The ModelDeployment whose traffic is split."""


class Variant(ApiModel):
    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    """Variant name (DNS label), unique in the test."""
    model: ModelRef
    """The STTModel this variant serves."""
    weight: int = Field(ge=1, le=100)
    """Share of traffic in percent (at least 1: a variant without traffic never gets the samples a
    decision needs); all weights sum to 100."""


HTTP_TOKEN_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


class Stickiness(ApiModel):
    enabled: bool = False
    """Keep a session on one variant."""
    session_header: str = Field(
        default="x-session-id", pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", max_length=256
    )
    """Request header carrying the session id."""
    cookie_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", max_length=256)
    """Cookie carrying the session id (when no header)."""


PromotionRule = Literal["winner", "non-inferior"]
PromotionMode = Literal["PatchSpec", "Announce"]


class PromotionSpec(ApiModel):
    auto: bool = False
    """Promote the winner through the ModelDeployment when the test ends."""
    only_if: PromotionRule = "winner"
    """winner: only a significantly better variant; non-inferior: not worse than the control
    by more than the primary metric's margin."""
    mode: PromotionMode = "PatchSpec"
    """PatchSpec: write the winner into the ModelDeployment's spec.model. Announce (GitOps): leave
    the spec Git owns alone; record the winner and the change to make in status.promotion and
    post an Event (docs/gitops.md)."""


# One winner is chosen on the whole set; slices guard it (a sliced guardrail blocks a variant
# that regresses in any slice).
_PRIMARY_SLICE = "primaryMetric.slice is not supported: put the slice on a guardrail metric"


def _immutable(field: str) -> dict[str, Any]:
    # Changing what is compared mid-test would mix samples of two experiments.
    return {
        "x-kubernetes-validations": [
            {
                "rule": "self == oldSelf",
                "message": f"{field} cannot change once the test exists; create a new ABTest",
            }
        ]
    }


class ABTestSpec(ApiModel):
    """A traffic split of one endpoint between models, measured until a decision."""

    endpoint: ABTestEndpoint = Field(json_schema_extra=_immutable("endpoint"))
    """The endpoint whose traffic is split."""
    variants: list[Variant] = Field(
        min_length=2,
        max_length=10,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": UNIQUE_NAMES_RULE, "message": "variants names must be unique"},
                {
                    "rule": "self.all(x, self.exists_one(y, y.model.name == x.model.name))",
                    "message": "variants must name distinct models",
                },
                {
                    "rule": "self.map(v, v.weight).sum() == 100",
                    "message": "variants weights must sum to 100",
                },
                *_immutable("variants")["x-kubernetes-validations"],
            ]
        },
    )
    """2..10 variants; distinct models; weights sum to 100."""
    control_variant: str | None = Field(
        default=None, max_length=63, description="the baseline variant; the first variant when empty"
    )
    stickiness: Stickiness | None = None
    """Session stickiness."""
    duration: bounded_duration("duration", "1s", "2160h") = Field(  # type: ignore[valid-type]
        default="24h", description="maximum run time (1s to 90 days)"
    )
    min_duration: bounded_duration("minDuration", None, "2160h") | None = Field(  # type: ignore[valid-type]
        default=None, description="no decision before this"
    )
    primary_metric: MetricSpec = Field(json_schema_extra=_immutable("primaryMetric"))
    """The metric that decides the winner."""
    guardrail_metrics: list[MetricSpec] = Field(
        default_factory=list,
        max_length=8,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": UNIQUE_NAMES_RULE, "message": "guardrailMetrics names must be unique"}
            ]
        },
    )
    """Metrics no variant may worsen (Holm-corrected)."""
    significance_level: float = Field(default=0.05, gt=0, le=0.2)
    """Alpha of the always-valid test."""
    min_samples_per_variant: int = Field(default=500, ge=1, le=100_000_000)
    """No decision before every variant has this many samples."""
    paired_evaluation: bool = True
    """Replay the labelled set to every variant and compare per utterance."""
    srm_threshold: float = Field(default=0.001, gt=0, lt=0.5)
    """p-value below which a sample-ratio mismatch holds the decision."""
    promotion: PromotionSpec | None = None
    """What happens to the winner."""
    stop: bool = Field(default=False, description="end the test now (phase Stopped)")

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.controlVariant)"
                    " || self.variants.exists(v, v.name == self.controlVariant)",
                    "message": "controlVariant must name one of spec.variants",
                    "fieldPath": ".controlVariant",
                },
                {
                    "rule": "!has(self.minDuration) || duration(self.minDuration) <= duration(self.duration)",
                    "message": "minDuration must be <= duration",
                    "fieldPath": ".minDuration",
                },
                {
                    "rule": "!has(self.primaryMetric.slice)",
                    "message": _PRIMARY_SLICE,
                    "fieldPath": ".primaryMetric.slice",
                },
                {
                    "rule": "!has(self.guardrailMetrics)"
                    " || self.guardrailMetrics.all(m, m.name != self.primaryMetric.name)",
                    "message": "guardrailMetrics names must differ from primaryMetric.name",
                    "fieldPath": ".guardrailMetrics",
                },
                {
                    "rule": "!has(self.promotion) || !self.promotion.auto"
                    " || self.promotion.onlyIf != 'non-inferior'"
                    " || has(self.primaryMetric.nonInferiorityMargin)",
                    "message": "promotion.onlyIf non-inferior needs primaryMetric.nonInferiorityMargin",
                    "fieldPath": ".promotion.onlyIf",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_unique([v.name for v in self.variants], "variants names")
        check_unique([v.model.name for v in self.variants], "variants models")
        total = sum(v.weight for v in self.variants)
        if total != 100:
            raise ValueError(f"variants weights must sum to 100 (got {total})")
        if self.control_variant is not None and self.control_variant not in {v.name for v in self.variants}:
            raise ValueError(f"controlVariant {self.control_variant!r} must name one of spec.variants")
        if self.min_duration is not None and parse_duration(self.min_duration) > parse_duration(
            self.duration
        ):
            raise ValueError("minDuration must be <= duration")
        check_unique([m.name for m in self.guardrail_metrics], "guardrailMetrics names")
        if self.primary_metric.slice is not None:
            raise ValueError(_PRIMARY_SLICE)
        if any(m.name == self.primary_metric.name for m in self.guardrail_metrics):
            raise ValueError("guardrailMetrics names must differ from primaryMetric.name")
        p = self.promotion
        non_inferior = p is not None and p.auto and p.only_if == "non-inferior"
        if non_inferior and self.primary_metric.non_inferiority_margin is None:
            raise ValueError("promotion.onlyIf non-inferior needs primaryMetric.nonInferiorityMargin")
        return self

    def control(self) -> Variant:
        if self.control_variant is not None:
            return next(v for v in self.variants if v.name == self.control_variant)
        return self.variants[0]

    def duration_seconds(self) -> float:
        return parse_duration(self.duration)

    def min_duration_seconds(self) -> float:
        return parse_duration(self.min_duration) if self.min_duration else 0.0

    def weights(self) -> dict[str, int]:
        return {v.name: v.weight for v in self.variants}


# --- status -----------------------------------------------------------------------------------

ABTestPhase = Literal["Pending", "Running", "Concluded", "Promoted", "Stopped", "Failed"]
PHASE_PENDING = "Pending"
PHASE_RUNNING = "Running"
PHASE_CONCLUDED = "Concluded"
PHASE_PROMOTED = "Promoted"
PHASE_STOPPED = "Stopped"
PHASE_FAILED = "Failed"
ABTEST_PHASES: tuple[str, ...] = ABTestPhase.__args__  # type: ignore[attr-defined]
DecisionOutcome = Literal["Winner", "NoDifference", "Inconclusive", "Stopped"]

# Reasons for ABTest conditions and Events.
REASON_TEST_STARTED = "TestStarted"
REASON_COLLECTING = "CollectingSamples"
REASON_WINNER_FOUND = "WinnerFound"
REASON_NO_DIFFERENCE = "NoDifference"
REASON_DURATION_REACHED = "DurationReached"
REASON_SRM_DETECTED = "SampleRatioMismatch"
REASON_GUARDRAIL_FAILED = "GuardrailFailed"
REASON_WINNER_PROMOTED = "WinnerPromoted"
REASON_WINNER_ANNOUNCED = "WinnerAnnounced"  # promotion.mode Announce: the winner is for Git to apply
REASON_STOPPED = "StoppedByUser"
REASON_ENDPOINT_NOT_FOUND = "EndpointNotFound"
REASON_ENDPOINT_BUSY = "EndpointBusy"
REASON_VARIANT_NOT_READY = "VariantNotReady"


class VariantStatus(StatusModel):
    name: str = Field(max_length=63)
    model: str | None = Field(default=None, max_length=253)
    weight: int | None = Field(default=None, ge=0, le=100)
    samples: int | None = Field(default=None, ge=0)
    requests: float | None = None
    errors: float | None = None
    wer: float | None = None
    cer: float | None = None
    confidence: float | None = None
    latency_p95_ms: float | None = None
    error_rate: float | None = None
    revision: str | None = Field(default=None, max_length=63)
    service: str | None = Field(
        default=None,
        max_length=63,
        description="the Service serving this variant (its Triton counters' label)",
    )


class ConfidenceInterval(StatusModel):
    lower: float
    upper: float
    level: float | None = Field(default=None, gt=0, lt=1)


class GuardrailResult(StatusModel):
    metric: str = Field(max_length=63)
    outcome: Literal["Passed", "Failed", "Inconclusive", "NoData"]
    p_value: float | None = None
    adjusted_p_value: float | None = None
    effect: float | None = None
    message: ShortText = ""


class Decision(StatusModel):
    outcome: DecisionOutcome
    metric: str | None = Field(default=None, max_length=63)
    p_value: float | None = None
    effect: float | None = None
    confidence_interval: ConfidenceInterval | None = None
    reason: ShortText = ""
    decided_at: Timestamp | None = None


class SampleRatioStatus(StatusModel):
    p_value: float | None = None
    detected: bool = False
    checked_at: Timestamp | None = None


class PromotionStatus(StatusModel):
    """What happened to the winner: written into the endpoint's spec, or announced for Git."""

    mode: PromotionMode
    model: str = Field(max_length=253)
    endpoint: str = Field(max_length=253)
    patch: ShortText = ""
    at: Timestamp | None = None


class RunningPValue(StatusModel):
    """One statistical rule's always-valid p-values, as running minima over the looks so far
    (each look starts from them: a restarted operator resumes the same sequential test)."""

    variant: str = Field(max_length=63)
    rule: str = Field(max_length=512, description="<metric>/<rule>, e.g. 'wer/maxRelativeIncrease 0.05'")
    p_fail: float = Field(description="running minimum of the p-value for 'the candidate is worse'")
    p_pass: float = Field(description="running minimum of the p-value for 'the candidate is not worse'")


class ABTestStatus(StatusModel):
    phase: ABTestPhase | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = conditions_field()
    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    last_analyzed_at: Timestamp | None = None
    variants: list[VariantStatus] = Field(default_factory=list, max_length=10)
    variant_summary: str | None = Field(
        default=None, max_length=1024, description="e.g. 'a=50% b=50%', shown by kubectl get"
    )
    winner: str | None = Field(default=None, max_length=63)
    decision: Decision | None = None
    sample_ratio: SampleRatioStatus | None = None
    guardrails: list[GuardrailResult] = Field(default_factory=list, max_length=8)
    promotion: PromotionStatus | None = None
    message: ShortText | None = None
    sequential: list[RunningPValue] = Field(default_factory=list, max_length=4096)

    def running_p_values(self) -> dict[str, dict[str, tuple[float, float]]]:
        """variant -> "<metric>/<rule>" -> (p_fail, p_pass): the analysis context's previous_p."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for r in self.sequential:
            out.setdefault(r.variant, {})[r.rule] = (r.p_fail, r.p_pass)
        return out


def sequential_status(state: Mapping[str, Mapping[str, tuple[float, float]]]) -> list[RunningPValue]:
    """`status.sequential` from variant -> "<metric>/<rule>" -> (p_fail, p_pass)."""
    return [
        RunningPValue(variant=v, rule=rule, p_fail=pf, p_pass=pp)
        for v, rules in sorted(state.items())
        for rule, (pf, pp) in sorted(rules.items())
    ]


class ABTest(CustomResource):
    KIND: ClassVar[str] = "ABTest"
    PLURAL: ClassVar[str] = "abtests"
    SINGULAR: ClassVar[str] = "abtest"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("abt",)
    PRINTER_COLUMNS: ClassVar[list[dict[str, Any]]] = [
        {"name": "Endpoint", "type": "string", "jsonPath": ".spec.endpoint.modelDeploymentRef.name"},
        {"name": "Variants", "type": "string", "jsonPath": ".status.variantSummary"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Winner", "type": "string", "jsonPath": ".status.winner"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    spec: ABTestSpec
    status: ABTestStatus = Field(default_factory=ABTestStatus)


def variant_summary(variants: Sequence[Variant]) -> str:
    """The `Variants` printer column text, e.g. `a=50% b=50%`."""
    return " ".join(f"{v.name}={v.weight}%" for v in variants)
