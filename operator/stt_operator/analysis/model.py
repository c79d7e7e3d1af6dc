"""Inputs and outputs of the analysis engine.

Typed end to end: specs come in as the api's pydantic `MetricSpec` / `AnalysisSpec` (validated
when the resource was read) and become the engine's own frozen dataclasses through
`MetricRule.from_spec` / `PolicySpec.from_spec`, which re-check what the engine relies on.
Callers build `AnalysisContext` and `Arm` directly; `AnalysisContext` checks itself on creation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from stt_operator.api import common as api_common
from stt_operator.api.common import MetricPreset, MetricSpec
from stt_operator.evalmetrics import SLICE_KEYS

PRESETS: tuple[str, ...] = get_args(MetricPreset)  # the API's own list: one place to add a preset
Outcome = Literal["Passed", "Failed", "Inconclusive", "NoData", "Error"]
OUTCOMES: tuple[str, ...] = ("Passed", "Failed", "Inconclusive", "NoData", "Error")
LOWER, HIGHER = "lower-is-better", "higher-is-better"


def parse_duration(value: str | float | int, field_name: str = "duration") -> float:
    """`1h30m` -> 5400.0 seconds (the API's own reading); numbers are seconds."""
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{field_name} must be >= 0, got {value}")
        return float(value)
    try:
        return api_common.parse_duration(value)
    except ValueError:
        raise ValueError(f"{field_name} {value!r} is not a duration like 30s, 5m, 1h30m") from None


def _opt_float(v: Any, field_name: str) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{field_name} must be a number, got {v!r}") from e
    if math.isnan(f):
        raise ValueError(f"{field_name} must be a number, got NaN")
    return f


@dataclass(frozen=True)
class MetricRule:
    """One analysis metric, normalised."""

    name: str
    preset: str | None = None
    query: str | None = None
    threshold_min: float | None = None
    threshold_max: float | None = None
    max_relative_increase: float | None = None
    non_inferiority_margin: float | None = None
    direction: str = LOWER
    min_samples: int = 200
    slice: str | None = None  # judge per value of this slice dimension (evalmetrics.SLICE_KEYS)

    @classmethod
    def from_spec(cls, spec: MetricSpec, index: int | None = None) -> MetricRule:
        """The engine's rule for one API metric. The pydantic model already checked most of this
        when the resource was read; the checks stay because the engine's verdicts rely on them
        (and a model built with `model_construct` skips validation)."""
        where = f"metrics[{index}]" if index is not None else "metric"
        name = spec.name
        if not name or not isinstance(name, str):
            raise ValueError(f"{where}.name is required")
        where = f"metric {name!r}"
        preset, query = spec.preset, spec.query
        if (preset is None) == (query is None):
            raise ValueError(f"{where}: exactly one of preset or query must be set")
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"{where}.preset {preset!r} is not one of {list(PRESETS)}")
        tr = spec.threshold_range
        tmin = _opt_float(tr.min if tr is not None else None, f"{where}.thresholdRange.min")
        tmax = _opt_float(tr.max if tr is not None else None, f"{where}.thresholdRange.max")
        if tmin is not None and tmax is not None and tmin > tmax:
            raise ValueError(f"{where}.thresholdRange.min must be <= max")
        rel = _opt_float(spec.max_relative_increase, f"{where}.maxRelativeIncrease")
        margin = _opt_float(spec.non_inferiority_margin, f"{where}.nonInferiorityMargin")
        if rel is not None and rel < 0:
            raise ValueError(f"{where}.maxRelativeIncrease must be >= 0")
        if margin is not None and margin < 0:
            raise ValueError(f"{where}.nonInferiorityMargin must be >= 0")
        direction = spec.direction or (HIGHER if preset == "confidence" else LOWER)
        if direction not in (LOWER, HIGHER):
            raise ValueError(f"{where}.direction {direction!r} is not {LOWER} or {HIGHER}")
        min_samples = spec.min_samples
        if not isinstance(min_samples, int) or min_samples < 1:
            raise ValueError(f"{where}.minSamples must be an integer >= 1, got {min_samples!r}")
        slice_key = spec.slice
        if slice_key is not None and slice_key not in SLICE_KEYS:
            raise ValueError(f"{where}.slice {slice_key!r} is not one of {list(SLICE_KEYS)}")
        if slice_key is not None and (preset is None or preset == "error-rate"):
            raise ValueError(f"{where}.slice needs a preset other than error-rate")
        return cls(name, preset, query, tmin, tmax, rel, margin, direction, min_samples, slice_key)

    @property
    def has_rule(self) -> bool:
        return any(
            v is not None
            for v in (
                self.threshold_min,
                self.threshold_max,
                self.max_relative_increase,
                self.non_inferiority_margin,
            )
        )


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: the variant label the evaluator uses, the Triton Service name
    (Triton metrics carry it as `service`), and the STTModel name."""

    variant: str
    service: str = ""
    model: str = ""


@dataclass(frozen=True)
class AnalysisContext:
    namespace: str
    endpoint: str
    candidate: Arm
    baseline: Arm | None = None
    language: str = ""  # empty: all languages
    start: float = 0.0  # unix seconds: counts are cumulative since then
    now: float | None = None  # evaluation time (default: wall clock)
    interval: str = "1m"
    paired: bool = True  # use the evaluator's paired series when they exist
    confidence: float = 0.95
    tuning_n: float | None = None  # where the confidence sequence is tightest (default: from minSamples)
    no_data_policy: str = "Pause"
    previous_p: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # running minima
    # Up to this window, increases come from raw samples (exact); beyond it from server-side
    # increase(), whose edge extrapolation is negligible over long windows and whose answer
    # stays small (no transfer of hours of raw samples every interval).
    exact_window_max_s: float = 6 * 3600.0
    # Enforce `namespace` on every selector of a custom query (the administrator may opt out).
    scope_queries: bool = True
    # Set by the engine for one slice of a sliced metric: read stt_eval_slice_* of this value.
    slice_key: str = ""
    slice_value: str = ""

    def __post_init__(self) -> None:
        # Checked however the context is made (the controllers, the monitoring look, tools).
        for required, value in (
            ("namespace", self.namespace),
            ("endpoint", self.endpoint),
            ("candidate", self.candidate.variant),
        ):
            if not value:
                raise ValueError(f"analysis context: {required} is required")
        if self.baseline is not None and not self.baseline.variant:
            raise ValueError("analysis context: baseline.variant is required")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"analysis context: confidence must be in [0.5, 1), got {self.confidence}")
        if self.no_data_policy not in ("Pause", "Fail", "Ignore"):
            raise ValueError(f"noDataPolicy {self.no_data_policy!r} is not Pause, Fail or Ignore")
        parse_duration(self.interval, "interval")

    def eval_time(self) -> float:
        return float(self.now) if self.now is not None else time.time()

    def window_seconds(self) -> int:
        return max(1, math.ceil(self.eval_time() - self.start))

    def window(self) -> str:
        """The PromQL range since `start`, whole seconds, at least 1s."""
        return f"{self.window_seconds()}s"


@dataclass(frozen=True)
class RuleCheck:
    """One rule of one metric. Statistical rules carry p-values (Holm-adjusted by the engine);
    point rules (custom queries) carry a verdict directly."""

    rule: str  # e.g. "maxRelativeIncrease 0.05"
    statistical: bool
    p_fail: float = 1.0
    p_pass: float = 1.0
    verdict: str | None = None  # point rules, or the final verdict after adjustment
    detail: str = ""


@dataclass(frozen=True)
class MetricResult:
    name: str
    outcome: str
    message: str
    value: float | None = None  # candidate
    baseline: float | None = None
    effect: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None  # the deciding (adjusted) p-value, when statistical
    samples: dict[str, float] = field(default_factory=dict)
    method: str = ""
    checks: tuple[RuleCheck, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    queries: tuple[str, ...] = ()

    def to_status(self) -> dict[str, Any]:
        """Fields of a `status.analysisRuns` entry (the controller adds step and time)."""
        out: dict[str, Any] = {"metric": self.name, "outcome": self.outcome, "message": self.message}
        if self.value is not None and math.isfinite(self.value):
            out["value"] = round(self.value, 6)
        if self.baseline is not None and math.isfinite(self.baseline):
            out["baseline"] = round(self.baseline, 6)
        return out


@dataclass(frozen=True)
class AnalysisResult:
    outcome: str
    message: str
    metrics: tuple[MetricResult, ...]
    elapsed_s: float = 0.0
    at: float = 0.0
    # Set when no look was possible at all (no Prometheus configured or allowed): the reason
    # (NoPrometheus / PrometheusNotAllowed). Such a result is not counted as a look.
    unavailable: str | None = None

    def metric(self, name: str) -> MetricResult:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)


@dataclass(frozen=True)
class WindowCounts:
    """One metric's counts over a look's window; events/trials None when there was no data."""

    name: str
    events: float | None
    trials: float | None
    message: str = ""


@dataclass(frozen=True)
class MonitoringLook:
    """The answer to a MonitoringRequest. `unavailable`: no Prometheus could be asked or a query
    failed (a reason word); counts are then empty."""

    counts: tuple[WindowCounts, ...] = ()
    unavailable: str | None = None
    message: str = ""
