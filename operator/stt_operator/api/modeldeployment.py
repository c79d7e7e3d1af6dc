"""`ModelDeployment` (short name `mdep`): one serving endpoint and how it changes models."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from stt_operator.api.common import (
    DNS_LABEL,
    DNS_SUBDOMAIN_PATTERN,
    LABEL_KEY_PATTERN,
    UNIQUE_NAMES_RULE,
    AnalysisSpec,
    ApiModel,
    Condition,
    CustomResource,
    LabelValue,
    Language,
    LanguagePair,
    ModelRef,
    ObjectName,
    PrometheusSpec,
    ResourcesSpec,
    ShortText,
    StatusModel,
    Timestamp,
    bounded_duration,
    check_unique,
    conditions_field,
    exactly_one_rule,
    fractional_minimum,
    parse_duration,
    require_exactly_one,
)

StrategyType = Literal["Immediate", "Gradual", "Canary", "BlueGreen"]
STRATEGY_IMMEDIATE = "Immediate"
STRATEGY_GRADUAL = "Gradual"
STRATEGY_CANARY = "Canary"
STRATEGY_BLUE_GREEN = "BlueGreen"
Routing = Literal["gateway-api", "replica-ratio"]
Optimize = Literal["wer", "latency"]


# --- spec -------------------------------------------------------------------------------------


class SelectionCriteria(ApiModel):
    max_wer: float | None = Field(default=None, ge=0, le=10)
    """Only models with validated WER at most this."""
    max_latency_p95_ms: float | None = Field(default=None, gt=0)
    """Only models with p95 latency at most this (ms)."""
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    """Only models with mean confidence at least this."""
    optimize: Optimize = "wer"
    """Among the candidates, the lowest wer or the lowest latency wins."""


class ModelSelector(ApiModel):
    """Pick the best Ready STTModel automatically instead of naming one."""

    language: Language | None = None
    """BCP-47 language the model must have."""
    language_pair: LanguagePair | None = None
    """Language pair the model must have (speech translation)."""
    match_labels: dict[str, LabelValue] | None = Field(
        default=None,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(k, size(k.split('/')[0]) <= 253 && k.matches('{LABEL_KEY_PATTERN}'))",
                    "message": "selector.matchLabels keys must be Kubernetes label keys ([prefix/]name)",
                }
            ]
        },
    )
    """Labels the STTModel must carry (Kubernetes label keys and values)."""
    criteria: SelectionCriteria | None = None
    """Constraints and what to optimise."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.language) || has(self.languagePair) || has(self.matchLabels)",
                    "message": "selector needs language, languagePair or matchLabels",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not (self.language or self.language_pair or self.match_labels):
            raise ValueError("selector needs language, languagePair or matchLabels")
        bad = [
            k
            for k in self.match_labels or {}
            if len(k.split("/")[0]) > 253 or not re.match(LABEL_KEY_PATTERN, k)
        ]
        if bad:
            raise ValueError(
                f"selector.matchLabels keys must be Kubernetes label keys ([prefix/]name): {bad}"
            )
        return self


class GatewayRef(ApiModel):
    """The Gateway API parent of the endpoint's HTTPRoute."""

    name: ObjectName
    """Gateway name."""
    namespace: DNS_LABEL | None = None
    """Gateway namespace; this namespace when empty."""
    section_name: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253
    )
    """Listener of the Gateway (a Gateway API SectionName)."""


# Gateway API's own rules for an HTTPRoute PathPrefix value (its CRD rejects anything else).
GATEWAY_PATH_PATTERN = r"^/(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})*$"
_PATH_MSG = (
    "endpoint.path must be a Gateway API path prefix: no '//', '/./', '/../', '%2f', '#',"
    " trailing '/.' or '/..'"
)
GATEWAY_PATH_RULES = [
    {
        "rule": "!self.contains('//') && !self.contains('/./') && !self.contains('/../')"
        " && !self.contains('%2f') && !self.contains('%2F') && !self.contains('#')"
        " && !self.endsWith('/..') && !self.endsWith('/.')",
        "message": _PATH_MSG,
    }
]


def _gateway_path_ok(path: str) -> bool:
    bad = ("//", "/./", "/../", "%2f", "%2F", "#")
    return not any(b in path for b in bad) and not path.endswith(("/..", "/."))


# Gateway API's HTTPHeaderName (an RFC 7230 token).
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$"
LANGUAGE_PAIR_HEADER = "x-language-pair"
_PAIR_MISMATCH = "endpoint.languagePair must equal selector.languagePair when both are set"

HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class EndpointSpec(ApiModel):
    gateway_ref: GatewayRef | None = None
    """Parent Gateway of the HTTPRoute."""
    hostnames: list[Annotated[str, Field(pattern=HOSTNAME_PATTERN, max_length=253)]] = Field(
        default_factory=list, max_length=16
    )
    """Hostnames the HTTPRoute matches."""
    path: str = Field(
        default="/",
        pattern=GATEWAY_PATH_PATTERN,
        max_length=1024,
        json_schema_extra={"x-kubernetes-validations": GATEWAY_PATH_RULES},
    )
    """Path prefix the HTTPRoute matches (Gateway API rules: no `//`, `/./`, `/../`, `%2f`, `#`)."""
    port: int = Field(default=8000, ge=1, le=65535, description="Triton HTTP port behind the Service")
    language_pair: LanguagePair | None = None
    """Serve only requests whose language-pair header (languagePairHeader) equals this pair, so
    several ModelDeployments (one per pair, each with its own rollout) share one path and host.
    Unset: every request on the path (one language, as before)."""
    language_pair_header: str = Field(
        default=LANGUAGE_PAIR_HEADER, pattern=HEADER_NAME_PATTERN, max_length=256
    )
    """Request header that carries the language pair (used with languagePair)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not _gateway_path_ok(self.path):
            raise ValueError(_PATH_MSG)
        return self

    def header_matches(self) -> dict[str, str]:
        """The exact header matches of the endpoint's HTTPRoute rule (none without languagePair)."""
        return {self.language_pair_header: self.language_pair} if self.language_pair else {}


class GradualStrategy(ApiModel):
    """Fixed weight step every interval (analysis between steps when configured)."""

    step_weight: int = Field(ge=1, le=100)
    """Weight added to the new model at each step (percent)."""
    max_weight: int = Field(default=100, ge=1, le=100)
    """Weight at which the new model is promoted."""
    interval: bounded_duration("gradual.interval", "1s", "24h") = "1m"  # type: ignore[valid-type]
    """Time between steps."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.stepWeight <= self.maxWeight",
                    "message": "gradual.stepWeight must be <= gradual.maxWeight",
                    "fieldPath": ".stepWeight",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.step_weight > self.max_weight:
            raise ValueError("gradual.stepWeight must be <= gradual.maxWeight")
        return self

    def weights(self) -> list[int]:
        """The weight after each step; the last step reaches maxWeight (then promotion)."""
        out = list(range(self.step_weight, self.max_weight, self.step_weight))
        return [*out, self.max_weight]


class PauseStep(ApiModel):
    duration: bounded_duration("pause.duration", "1s", "720h") | None = Field(  # type: ignore[valid-type]
        default=None, description="empty = until a person resumes"
    )


class AnalysisStep(ApiModel):
    template_metrics: list[Annotated[str, Field(max_length=63)]] | None = Field(
        default=None,
        max_length=16,
        description="names of spec.analysis.metrics to run; all when empty",
    )


_STEP = ("setWeight", "pause", "analysis")
_STEP_MSG = "each canary step needs exactly one of setWeight, pause or analysis"


class CanaryStep(ApiModel):
    """Exactly one of setWeight, pause, analysis (Argo Rollouts naming)."""

    set_weight: int | None = Field(default=None, ge=0, le=100)
    """Send this percentage of traffic to the new model."""
    pause: PauseStep | None = None
    """Wait, for a duration or until a person resumes."""
    analysis: AnalysisStep | None = None
    """Run spec.analysis and go on only if it passes."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [exactly_one_rule(_STEP, _STEP_MSG)]}
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        require_exactly_one(self, ("set_weight", "pause", "analysis"), _STEP_MSG)
        return self

    @property
    def kind(self) -> str:
        return (
            "setWeight" if self.set_weight is not None else "pause" if self.pause is not None else "analysis"
        )


def default_canary_steps(with_analysis: bool = True) -> list[CanaryStep]:
    """Steps used when strategy.type is Canary and no steps are given: 10 %, check, 50 %,
    check, then promotion. The check is an analysis when spec.analysis has metrics, else a
    one-minute pause (so a canary without metrics still gives a person time to look)."""

    def check() -> CanaryStep:
        return (
            CanaryStep(analysis=AnalysisStep())
            if with_analysis
            else CanaryStep(pause=PauseStep(duration="1m"))
        )

    return [CanaryStep(set_weight=10), check(), CanaryStep(set_weight=50), check()]


class CanaryStrategy(ApiModel):
    steps: list[CanaryStep] = Field(
        min_length=1,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
                    "message": "canary.steps setWeight values must be non-decreasing",
                }
            ]
        },
    )
    """Steps in order; promotion follows the last one."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        weights = [s.set_weight for s in self.steps if s.set_weight is not None]
        if weights != sorted(weights):
            raise ValueError("canary.steps setWeight values must be non-decreasing")
        return self


class BlueGreenStrategy(ApiModel):
    auto_promotion_enabled: bool = True
    """Switch traffic on its own once the preview is ready (and analysed)."""
    auto_promotion_seconds: int | None = Field(
        default=None, ge=0, le=86400 * 7, description="wait this long after the preview is ready"
    )
    scale_down_delay_seconds: int = Field(default=30, ge=0, le=86400)
    """Keep the old stack this long after the switch."""
    pre_promotion_analysis: bool = False
    """Run spec.analysis against the preview before switching."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.autoPromotionSeconds) || self.autoPromotionEnabled",
                    "message": "blueGreen.autoPromotionSeconds needs blueGreen.autoPromotionEnabled true",
                    "fieldPath": ".autoPromotionSeconds",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.auto_promotion_seconds is not None and not self.auto_promotion_enabled:
            raise ValueError("blueGreen.autoPromotionSeconds needs blueGreen.autoPromotionEnabled true")
        return self


class StrategySpec(ApiModel):
    type: StrategyType = "Canary"
    """Immediate, Gradual, Canary (default) or BlueGreen."""
    gradual: GradualStrategy | None = None
    """Settings of the Gradual strategy."""
    canary: CanaryStrategy | None = None
    """Settings of the Canary strategy; default steps when empty."""
    blue_green: BlueGreenStrategy | None = None
    """Settings of the BlueGreen strategy."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.type == 'Gradual' ? has(self.gradual) : !has(self.gradual)",
                    "message": "strategy.gradual must be set exactly when strategy.type is Gradual",
                },
                {
                    "rule": "!has(self.canary) || self.type == 'Canary'",
                    "message": "strategy.canary is only allowed when strategy.type is Canary",
                },
                {
                    "rule": "!has(self.blueGreen) || self.type == 'BlueGreen'",
                    "message": "strategy.blueGreen is only allowed when strategy.type is BlueGreen",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.type == "Gradual") != (self.gradual is not None):
            raise ValueError("strategy.gradual must be set exactly when strategy.type is Gradual")
        if self.canary is not None and self.type != "Canary":
            raise ValueError("strategy.canary is only allowed when strategy.type is Canary")
        if self.blue_green is not None and self.type != "BlueGreen":
            raise ValueError("strategy.blueGreen is only allowed when strategy.type is BlueGreen")
        return self

    def canary_steps(self, with_analysis: bool = True) -> list[CanaryStep]:
        """The explicit steps, or the default ones (`with_analysis`: spec.analysis has metrics)."""
        return self.canary.steps if self.canary is not None else default_canary_steps(with_analysis)

    def effective_blue_green(self) -> BlueGreenStrategy:
        return self.blue_green or BlueGreenStrategy()


class RollbackSpec(ApiModel):
    automatic: bool = True
    """Roll back on its own when analysis fails."""
    revision_history_limit: int = Field(default=10, ge=1, le=100)
    """Revisions kept in status.revisions."""


class SmokeTestSpec(ApiModel):
    """A known utterance through the new revision's own Service before it gets any weight."""

    enabled: bool | None = None
    """Run the smoke transcription; empty = the operator's `smoke_test_default` setting (off
    unless the administrator turns it on)."""
    timeout: bounded_duration("smokeTest.timeout", "1s", "5m") = "30s"  # type: ignore[valid-type]
    """How long one smoke inference may take."""


# --- monitoring after promotion ----------------------------------------------------------------

# Only metrics whose served-revision series support an exact test: error-rate is failed / all
# requests from Triton's own counters (nv_inference_request_failure / _success of the stable
# revision's Service), tested with the exact binomial test (stats/monitoring.py). WER needs
# reference transcripts (the evaluator runs only during rollouts) and Triton exports no latency
# histogram, so neither is offered: the enum rejects them at admission.
MonitoringPreset = Literal["error-rate"]
MONITORING_PRESETS: tuple[str, ...] = MonitoringPreset.__args__  # type: ignore[attr-defined]
_SLO_MIN = "monitoring.metrics[].thresholdRange.min is not used: the SLO is an upper bound (max)"


class SloThreshold(ApiModel):
    """The SLO of one monitored metric: the largest acceptable event probability."""

    max: float = Field(ge=0, lt=1)
    """Largest acceptable value, e.g. 0.01 = at most 1 % of requests fail."""
    min: float | None = Field(default=None, description="not allowed: the SLO is an upper bound")

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "!has(self.min)", "message": _SLO_MIN, "fieldPath": ".min"}]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.min is not None:
            raise ValueError(_SLO_MIN)
        return self


class MonitoringMetric(ApiModel):
    """One metric of the served revision and its absolute SLO."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$", max_length=63)
    """Unique name of the metric (used in status and Events)."""
    preset: MonitoringPreset = "error-rate"
    """What is measured; only error-rate (failed / all requests, from Triton's counters)."""
    threshold_range: SloThreshold
    """The SLO: thresholdRange.max."""


class MonitoringSpec(ApiModel):
    """Keep checking the promoted (stable) revision against absolute SLOs.

    Each look tests every metric on the requests of its own window since the previous look,
    at a level that keeps false alarms per day at most `maxFalseAlarmsPerDay` while the SLO
    holds (docs/rollouts.md, "Monitoring after promotion")."""

    interval: bounded_duration("monitoring.interval", "10s", "24h") = "5m"  # type: ignore[valid-type]
    """Time between two looks (each look judges the requests since the previous one)."""
    metrics: list[MonitoringMetric] = Field(
        min_length=1,
        max_length=8,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": UNIQUE_NAMES_RULE, "message": "monitoring.metrics names must be unique"}
            ]
        },
    )
    """The metrics and their SLOs."""
    min_samples: int = Field(default=500, ge=1, le=100_000_000)
    """Requests a look needs before it is tested; fewer: the window keeps growing until the
    next look (a hold, never a verdict)."""
    max_false_alarms_per_day: float = Field(
        default=0.01, ge=1e-6, le=1, json_schema_extra=fractional_minimum("maxFalseAlarmsPerDay", 1e-6)
    )
    """False-alarm budget: expected alarms per day while every metric is exactly at its SLO
    (0.01 = one in 100 days at worst)."""
    rollback: bool = False
    """On a breach roll back to the previous good revision (true, needs spec.model), or only
    set the Degraded condition and emit an Event (false)."""
    prometheus: PrometheusSpec | None = None
    """Where to query; spec.analysis.prometheus, else the operator-wide Prometheus, when empty."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_unique([m.name for m in self.metrics], "monitoring.metrics names")
        return self

    def interval_seconds(self) -> float:
        return parse_duration(self.interval)


_MONITORING_ROLLBACK = (
    "monitoring.rollback needs spec.model: the rollback points spec.model at the previous revision"
    " (with spec.selector set monitoring.rollback false)"
)
_ANALYSIS_NEEDED = "(has(self.analysis) && size(self.analysis.metrics) > 0)"


class ModelDeploymentSpec(ApiModel):
    """A serving endpoint, the model behind it and how that model is changed."""

    model: ModelRef | None = None
    """The STTModel to serve (or use selector)."""
    selector: ModelSelector | None = None
    """Pick the best Ready STTModel automatically (instead of model)."""
    replicas: int = Field(default=1, ge=0, le=1000)
    """Triton pods of the stable revision."""
    resources: ResourcesSpec | None = Field(default=None, description="overrides the STTModel's resources")
    scale_replicas_with_weight: bool = False
    """Scale the new revision's pods with its traffic weight."""
    endpoint: EndpointSpec | None = None
    """The stable endpoint clients call."""
    routing: Routing = "gateway-api"
    """gateway-api (weighted HTTPRoute, default) or replica-ratio (no mesh: one Service, split
    by pod count)."""
    # Explicit object defaults so omitting the block still yields `type: Canary` etc. at admission.
    strategy: StrategySpec = Field(
        default_factory=StrategySpec, json_schema_extra={"default": {"type": "Canary"}}
    )
    """How a new model replaces the serving one."""
    analysis: AnalysisSpec | None = None
    """Measurements between steps and the rules that decide promotion or rollback."""
    rollback: RollbackSpec = Field(
        default_factory=RollbackSpec,
        json_schema_extra={"default": {"automatic": True, "revisionHistoryLimit": 10}},
    )
    """Automatic rollback and revision history."""
    scale_down_delay: bounded_duration("scaleDownDelay", None, "24h") = "30s"  # type: ignore[valid-type]
    """Keep the old revision this long after promotion."""
    paused: bool = False
    """Hold the rollout where it is."""
    progress_deadline: bounded_duration("progressDeadline", "10s", "24h") = "10m"  # type: ignore[valid-type]
    """How long a new revision may take to become ready for traffic (scheduled, Available and
    smoke-tested) before the rollout is aborted with reason ProgressDeadlineExceeded."""
    smoke_test: SmokeTestSpec | None = None
    """Transcribe a known utterance through each new revision before it gets weight."""
    monitoring: MonitoringSpec | None = None
    """After promotion: keep checking the served revision against absolute SLOs, and roll back
    or report when it degrades."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.model) != has(self.selector)",
                    "message": "exactly one of spec.model or spec.selector must be set",
                },
                {
                    "rule": "!has(self.strategy) || !has(self.strategy.canary)"
                    " || !self.strategy.canary.steps.exists(s, has(s.analysis)) || " + _ANALYSIS_NEEDED,
                    "message": "strategy.canary analysis steps need spec.analysis.metrics",
                    "fieldPath": ".analysis",
                },
                {
                    "rule": "!has(self.strategy) || !has(self.strategy.canary)"
                    " || self.strategy.canary.steps.all(s, !has(s.analysis)"
                    " || !has(s.analysis.templateMetrics) || s.analysis.templateMetrics.all(n,"
                    " has(self.analysis) && self.analysis.metrics.exists(m, m.name == n)))",
                    "message": "strategy.canary.steps[].analysis.templateMetrics must name"
                    " spec.analysis.metrics entries",
                    "fieldPath": ".strategy.canary.steps",
                },
                {
                    "rule": "!has(self.strategy) || !has(self.strategy.blueGreen)"
                    " || !self.strategy.blueGreen.prePromotionAnalysis || " + _ANALYSIS_NEEDED,
                    "message": "strategy.blueGreen.prePromotionAnalysis needs spec.analysis.metrics",
                    "fieldPath": ".analysis",
                },
                {
                    "rule": "!has(self.endpoint) || !has(self.endpoint.languagePair) || !has(self.selector)"
                    " || !has(self.selector.languagePair)"
                    " || self.endpoint.languagePair == self.selector.languagePair",
                    "message": _PAIR_MISMATCH,
                    "fieldPath": ".endpoint.languagePair",
                },
                {
                    "rule": "!has(self.endpoint) || !has(self.endpoint.languagePair)"
                    " || self.routing == 'gateway-api'",
                    "message": "endpoint.languagePair routes by header: it needs routing gateway-api",
                    "fieldPath": ".endpoint.languagePair",
                },
                {
                    "rule": "!has(self.monitoring) || !self.monitoring.rollback || has(self.model)",
                    "message": _MONITORING_ROLLBACK,
                    "fieldPath": ".monitoring.rollback",
                },
                {
                    "rule": "!has(self.endpoint) || !has(self.endpoint.gatewayRef)"
                    " || self.routing == 'gateway-api'",
                    "message": "endpoint.gatewayRef is only used with routing gateway-api",
                    "fieldPath": ".endpoint.gatewayRef",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.model is None) == (self.selector is None):
            raise ValueError("exactly one of spec.model or spec.selector must be set")
        pair = self.endpoint.language_pair if self.endpoint else None
        if pair and self.selector and self.selector.language_pair and self.selector.language_pair != pair:
            raise ValueError(_PAIR_MISMATCH)
        if pair and self.routing != "gateway-api":
            raise ValueError("endpoint.languagePair routes by header: it needs routing gateway-api")
        metrics = {m.name for m in self.analysis.metrics} if self.analysis else set()
        if self.strategy.canary is not None:
            for i, step in enumerate(self.strategy.canary.steps):
                if step.analysis is None:
                    continue
                if not metrics:
                    raise ValueError("strategy.canary analysis steps need spec.analysis.metrics")
                missing = set(step.analysis.template_metrics or ()) - metrics
                if missing:
                    raise ValueError(
                        f"strategy.canary.steps[{i}].analysis.templateMetrics names unknown metrics"
                        f" {sorted(missing)}"
                    )
        bg = self.strategy.blue_green
        if bg is not None and bg.pre_promotion_analysis and not metrics:
            raise ValueError("strategy.blueGreen.prePromotionAnalysis needs spec.analysis.metrics")
        if self.monitoring is not None and self.monitoring.rollback and self.model is None:
            raise ValueError(_MONITORING_ROLLBACK)
        if self.endpoint and self.endpoint.gateway_ref and self.routing != "gateway-api":
            raise ValueError("endpoint.gatewayRef is only used with routing gateway-api")
        return self

    def canary_steps(self) -> list[CanaryStep]:
        return self.strategy.canary_steps(bool(self.analysis and self.analysis.metrics))

    def effective_endpoint(self) -> EndpointSpec:
        return self.endpoint or EndpointSpec()

    def scale_down_delay_seconds(self) -> float:
        return parse_duration(self.scale_down_delay)

    def progress_deadline_seconds(self) -> float:
        return parse_duration(self.progress_deadline)


# --- status -----------------------------------------------------------------------------------

ModelDeploymentPhase = Literal[
    "Pending", "Progressing", "Paused", "Healthy", "Degraded", "RolledBack", "Failed"
]
PHASE_PENDING = "Pending"
PHASE_PROGRESSING = "Progressing"
PHASE_PAUSED = "Paused"
PHASE_HEALTHY = "Healthy"
PHASE_DEGRADED = "Degraded"
PHASE_ROLLED_BACK = "RolledBack"
PHASE_FAILED = "Failed"
MODELDEPLOYMENT_PHASES: tuple[str, ...] = ModelDeploymentPhase.__args__  # type: ignore[attr-defined]

AnalysisOutcome = Literal["Passed", "Failed", "Inconclusive", "NoData", "Error"]
ANALYSIS_OUTCOMES: tuple[str, ...] = AnalysisOutcome.__args__  # type: ignore[attr-defined]

# Revision history outcomes.
REVISION_SERVING = "Serving"
REVISION_SUPERSEDED = "Superseded"
REVISION_ROLLED_BACK = "RolledBack"
REVISION_FAILED = "Failed"

# Reasons for ModelDeployment conditions and Events.
REASON_ROLLOUT_STARTED = "RolloutStarted"
REASON_STEP_ADVANCED = "StepAdvanced"
REASON_WEIGHT_CHANGED = "WeightChanged"
REASON_ANALYSIS_PASSED = "AnalysisPassed"
REASON_ANALYSIS_FAILED = "AnalysisFailed"
REASON_ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
REASON_ANALYSIS_NO_DATA = "AnalysisNoData"
REASON_PROMOTED = "Promoted"
REASON_ROLLED_BACK = "RolledBack"
REASON_ROLLOUT_PAUSED = "RolloutPaused"
REASON_HELD_BY_ABTEST = "HeldByABTest"
REASON_MODEL_NOT_READY = "ModelNotReady"
REASON_MODEL_NOT_FOUND = "ModelNotFound"
REASON_NO_MODEL_SELECTED = "NoModelSelected"
REASON_MODEL_SELECTED = "ModelSelected"
REASON_SERVING = "Serving"
REASON_REVISION_RETIRED = "RevisionRetired"
REASON_PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
REASON_INSUFFICIENT_GPU = "InsufficientGPU"
REASON_SMOKE_TEST_FAILED = "SmokeTestFailed"


# Monitoring after promotion (spec.monitoring): condition type, outcomes and reasons.
COND_MONITORING = "Monitoring"  # True: the last look judged; False: it held (and why)
MonitoringOutcome = Literal["Passed", "Breached", "InsufficientData", "NoData", "Unavailable"]
MONITOR_PASSED = "Passed"
MONITOR_BREACHED = "Breached"
MONITOR_INSUFFICIENT = "InsufficientData"
MONITOR_NO_DATA = "NoData"
MONITOR_UNAVAILABLE = "Unavailable"
MonitoringVerdict = Literal["Healthy", "Degraded"]
VERDICT_HEALTHY = "Healthy"
VERDICT_DEGRADED = "Degraded"
REASON_SLO_BREACHED = "SLOBreached"
REASON_MONITORING_ROLLBACK = "MonitoringRollback"
REASON_MONITORING_HOLD = "MonitoringHold"
REASON_MONITORING_OK = "WithinSLO"


class MonitoringMetricStatus(StatusModel):
    """The last tested window of one monitored metric."""

    name: str = Field(max_length=63)
    events: int = Field(default=0, ge=0)
    trials: int = Field(default=0, ge=0)
    observed: float | None = None
    threshold: float | None = None
    p_value: float | None = None
    alpha: float | None = None
    outcome: MonitoringOutcome | None = None


class MonitoringStatus(StatusModel):
    """Where monitoring of the served revision stands; a restarted operator resumes from it."""

    revision: str | None = Field(default=None, max_length=63, description="the stable revision watched")
    window_start: Timestamp | None = None
    """Counts of the next look start here (the end of the last tested window)."""
    last_look_at: Timestamp | None = None
    looks: int = Field(default=0, ge=0, description="tested windows of this revision")
    last_outcome: MonitoringOutcome | None = None
    metrics: list[MonitoringMetricStatus] = Field(default_factory=list, max_length=8)
    verdict: MonitoringVerdict | None = None
    verdict_at: Timestamp | None = None
    rollback_to_revision: int | None = Field(default=None, ge=0)
    message: ShortText | None = None


class AnalysisRun(StatusModel):
    step: int | None = Field(default=None, ge=0)
    metric: str = Field(max_length=63)
    outcome: AnalysisOutcome
    value: float | None = None
    baseline: float | None = None
    message: ShortText = ""
    at: Timestamp | None = None


class RevisionRecord(StatusModel):
    revision: int = Field(ge=0)
    revision_id: str | None = Field(default=None, max_length=63)
    model: str = Field(max_length=253)
    model_digest: str | None = Field(default=None, max_length=128)
    created_at: Timestamp | None = None
    promoted_at: Timestamp | None = None
    outcome: str | None = Field(default=None, max_length=32)


class AnalysisState(StatusModel):
    """Counters of the analysis in progress, kept in status so a restart resumes them."""

    failures: int = Field(default=0, ge=0)
    inconclusive: int = Field(default=0, ge=0)
    consecutive_successes: int = Field(default=0, ge=0)
    no_data: int = Field(default=0, ge=0)
    started_at: Timestamp | None = None
    last_checked_at: Timestamp | None = None


class RollbackRecord(StatusModel):
    at: Timestamp | None = None
    from_model: str | None = Field(default=None, max_length=253)
    to_model: str | None = Field(default=None, max_length=253)
    reason: ShortText | None = None
    code: str | None = Field(
        default=None, max_length=64, description="the reason code: RolledBack, ProgressDeadlineExceeded, ..."
    )


class SmokeTestStatus(StatusModel):
    """The last smoke transcription of the revision in flight."""

    revision: str | None = Field(default=None, max_length=63)
    outcome: Literal["Passed", "Failed", "Error"] | None = None
    expected: ShortText | None = None
    transcript: ShortText | None = None
    message: ShortText | None = None
    at: Timestamp | None = None
    attempts: int = Field(default=0, ge=0)


class ModelDeploymentStatus(StatusModel):
    phase: ModelDeploymentPhase | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = conditions_field()
    stable_revision: str | None = Field(default=None, max_length=63)
    canary_revision: str | None = Field(default=None, max_length=63)
    current_step_index: int | None = Field(default=None, ge=0)
    current_weight: int | None = Field(default=None, ge=0, le=100)
    stable_model: str | None = Field(default=None, max_length=253)
    canary_model: str | None = Field(default=None, max_length=253)
    selected_model: str | None = Field(default=None, max_length=253)
    declared_model: str | None = Field(
        default=None,
        max_length=253,
        description="the model the spec asks for (spec.model, or the selector's choice)",
    )
    step_started_at: Timestamp | None = None
    rollout_started_at: Timestamp | None = None
    analysis: AnalysisState | None = None
    analysis_runs: list[AnalysisRun] = Field(default_factory=list, max_length=100)
    revisions: list[RevisionRecord] = Field(default_factory=list, max_length=100)
    last_rollback: RollbackRecord | None = None
    held_by: str | None = Field(default=None, max_length=253)
    smoke_test: SmokeTestStatus | None = None
    monitoring: MonitoringStatus | None = None
    endpoint: str | None = Field(default=None, max_length=1024)
    message: ShortText | None = None


class ModelDeployment(CustomResource):
    KIND: ClassVar[str] = "ModelDeployment"
    PLURAL: ClassVar[str] = "modeldeployments"
    SINGULAR: ClassVar[str] = "modeldeployment"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("mdep",)
    PRINTER_COLUMNS: ClassVar[list[dict[str, Any]]] = [
        {"name": "Model", "type": "string", "jsonPath": ".status.stableModel"},
        {"name": "Strategy", "type": "string", "jsonPath": ".spec.strategy.type"},
        {"name": "Weight", "type": "integer", "jsonPath": ".status.currentWeight"},
        {"name": "Step", "type": "integer", "jsonPath": ".status.currentStepIndex"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Desired", "type": "string", "jsonPath": ".spec.model.name", "priority": 1},
        {"name": "Canary", "type": "string", "jsonPath": ".status.canaryModel", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)
