"""Types shared by the three kinds: base models, durations, conditions, metrics, analysis.

The pydantic models here are the single source of truth for the API: `crdgen` turns them
into the CRD OpenAPI schemas, and the controllers parse Kopf bodies with them. CEL rules that
the apiserver enforces at admission live next to the fields in `json_schema_extra`, so a
rule and the field it guards are read together.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from stt_operator import API_GROUP, API_VERSION

API_VERSION_FULL = f"{API_GROUP}/{API_VERSION}"

# --- errors -----------------------------------------------------------------------------------


def fractional_minimum(field: str, minimum: float) -> dict[str, Any]:
    """A CEL rule for a number field whose minimum is fractional: the apiserver checks an
    integer value against `minimum` truncated to an integer (`0` passes `minimum: 0.5`), so
    the schema's minimum alone would admit what the models refuse."""
    return {
        "x-kubernetes-validations": [
            {"rule": f"self >= {minimum!r}", "message": f"{field} must be >= {minimum!r}"}
        ]
    }


class SpecError(ValueError):
    """A custom resource's spec (or status) does not match the API.

    `path` is the field path in YAML (camelCase) naming, e.g. `spec.strategy.canary.steps[2]`;
    `errors` holds one `(path, message)` pair per problem found."""

    def __init__(self, kind: str, name: str | None, errors: Sequence[tuple[str, str]]) -> None:
        self.kind = kind
        self.name = name
        self.errors = list(errors)
        self.path = self.errors[0][0] if self.errors else ""
        where = f"{kind} {name}" if name else kind
        details = "; ".join(f"{p}: {m}" for p, m in self.errors)
        super().__init__(f"invalid {where}: {details}")


def _loc_to_path(prefix: str, loc: Sequence[int | str]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def spec_error_from(exc: ValidationError, kind: str, name: str | None, prefix: str) -> SpecError:
    """Turn a pydantic ValidationError into a SpecError with YAML-style field paths."""
    errors: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        # pydantic appends the union member / validator name to loc for some errors; they are
        # never alias names (they contain `[` or are function names), so drop those parts.
        loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
        msg = err["msg"].removeprefix("Value error, ")
        errors.append((_loc_to_path(prefix, loc), msg))
    return SpecError(kind, name, errors)


# --- base models ------------------------------------------------------------------------------


class ApiModel(BaseModel):
    """Spec-side model: camelCase in YAML, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=False,
        use_enum_values=True,
        use_attribute_docstrings=True,  # field docstrings become CRD descriptions (kubectl explain)
    )

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON form (camelCase, unset optional fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(BaseModel):
    """Status-side model: same naming, but tolerant of fields written by a newer operator."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=True,
        use_attribute_docstrings=True,
    )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @classmethod
    def parse_lenient(cls, data: Mapping[str, Any] | None) -> tuple[Self, list[str]]:
        """Parse a status as found on the apiserver without failing on what the model rejects
        (a value an older operator wrote, say): a rejected list item is left out, else the whole
        top-level field it is in, as if it were absent. Returns the model and the paths left out."""
        fields = dict(data or {})
        dropped: list[str] = []
        while True:
            try:
                return cls.model_validate(fields), dropped
            except ValidationError as exc:
                errors = exc.errors(include_url=False)
            whole: set[str] = set()  # fields rejected as a whole
            items: dict[str, set[int]] = {}  # list field -> indices of rejected items
            for err in errors:
                loc = err["loc"]
                key = loc[0] if loc else None
                if not isinstance(key, str) or key not in fields:
                    return cls(), [*dropped, "status"]  # nothing to pin it on: start from empty
                if isinstance(fields[key], list) and len(loc) > 1 and isinstance(loc[1], int):
                    items.setdefault(key, set()).add(loc[1])
                else:
                    whole.add(key)
            for key in sorted(whole):
                del fields[key]
                dropped.append(f"status.{key}")
            for key, bad in items.items():
                if key not in whole:
                    fields[key] = [v for i, v in enumerate(fields[key]) if i not in bad]
                    dropped += [f"status.{key}[{i}]" for i in sorted(bad)]

    @classmethod
    def unknown_fields(cls, data: Mapping[str, Any], prefix: str = "status") -> list[str]:
        """Paths in `data` the schema does not define. The apiserver silently prunes those from
        a status patch, so a controller test can assert this is empty for what it writes."""
        return _unknown_fields(cls, data, prefix)


def _unknown_fields(model: type[BaseModel], data: Mapping[str, Any], prefix: str) -> list[str]:
    by_alias = {(f.alias or name): f for name, f in model.model_fields.items()}
    out: list[str] = []
    for key, value in data.items():
        field = by_alias.get(key) or model.model_fields.get(key)
        if field is None:
            out.append(f"{prefix}.{key}")
            continue
        inner = _model_in(field.annotation)
        if inner is None or value is None:
            continue
        if isinstance(value, Mapping):
            out += _unknown_fields(inner, value, f"{prefix}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    out += _unknown_fields(inner, item, f"{prefix}.{key}[{i}]")
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `X | None` or `list[X]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


NAME_MAX_MESSAGE = (
    "metadata.name must be at most 63 characters: it becomes a label value of every object the"
    " operator creates for it"
)
CR_NAME_MAX = 63


class CustomResource(BaseModel):
    """Shared `from_body` for the three kinds. Subclasses set KIND and the spec/status types."""

    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""
    SINGULAR: ClassVar[str] = ""
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    api_version: str = Field(default=API_VERSION_FULL, alias="apiVersion")
    kind: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_name(self) -> Self:
        name = self.metadata.get("name")
        if isinstance(name, str) and len(name) > CR_NAME_MAX:
            raise ValueError(NAME_MAX_MESSAGE)
        return self

    @classmethod
    def root_rules(cls) -> list[dict[str, str]]:
        """CEL rules on the whole object (metadata.name is the only metadata CEL may read)."""
        return [{"rule": f"size(self.metadata.name) <= {CR_NAME_MAX}", "message": NAME_MAX_MESSAGE}]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Parse a Kopf body (or any dict with metadata/spec/status) into the model.

        Raises SpecError naming the offending field path (`spec.…` / `status.…`)."""
        data = {
            "apiVersion": body.get("apiVersion", API_VERSION_FULL),
            "kind": body.get("kind", cls.KIND),
            "metadata": dict(body.get("metadata") or {}),
            "spec": dict(body.get("spec") or {}),
            "status": dict(body.get("status") or {}),
        }
        name = data["metadata"].get("name")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise spec_error_from(exc, cls.KIND, name, "") from None

    @classmethod
    def spec_from(cls, spec: Mapping[str, Any], name: str | None = None) -> Any:
        """Parse only a spec mapping (Kopf's `spec` kwarg)."""
        spec_type = cls.model_fields["spec"].annotation
        assert isinstance(spec_type, type) and issubclass(spec_type, BaseModel)
        try:
            return spec_type.model_validate(dict(spec))
        except ValidationError as exc:
            raise spec_error_from(exc, cls.KIND, name, "spec") from None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation") or 0)

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        out["kind"] = out.get("kind") or self.KIND
        if not out.get("status"):
            out.pop("status", None)
        return out


# --- durations and scalars --------------------------------------------------------------------

DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float:
    """`30s`, `5m`, `1h30m`, `250ms` -> seconds. Raises ValueError naming the bad value."""
    if not isinstance(value, str) or not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 5m, 1h30m, 250ms")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest duration string `parse_duration` reads back (ms precision)."""
    ms = round(seconds * 1000)
    if ms < 0:
        raise ValueError(f"negative duration {seconds}")
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    parts = [f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s"), (ms, "ms")) if v]
    return "".join(parts) or "0s"


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]


def duration_bounds_rule(what: str, minimum: str | None = "1s", maximum: str | None = None) -> dict[str, Any]:
    """A CEL rule bounding a Duration field (as its own `x-kubernetes-validations`): a `0s` or
    sub-second timeout or interval is admitted by the pattern but can never work."""
    parts, words = [], []
    if minimum:
        parts.append(f"duration(self) >= duration('{minimum}')")
        words.append(f"at least {minimum}")
    if maximum:
        parts.append(f"duration(self) <= duration('{maximum}')")
        words.append(f"at most {maximum}")
    return {"rule": " && ".join(parts), "message": f"{what} must be {' and '.join(words)}"}


def bounded_duration(what: str, minimum: str | None = "1s", maximum: str | None = None) -> Any:
    """`Duration` with admission-time and parse-time bounds (see duration_bounds_rule)."""
    rule = duration_bounds_rule(what, minimum, maximum)
    low = parse_duration(minimum) if minimum else None
    high = parse_duration(maximum) if maximum else None

    def check(value: str) -> str:
        seconds = parse_duration(value)
        if (low is not None and seconds < low) or (high is not None and seconds > high):
            raise ValueError(rule["message"])
        return value

    return Annotated[
        str,
        Field(
            pattern=DURATION_PATTERN, max_length=32, json_schema_extra={"x-kubernetes-validations": [rule]}
        ),
        AfterValidator(check),
    ]


# Kubernetes resource quantity (`500m`, `2`, `16Gi`, `1e3`), as resource.ParseQuantity reads it,
# without a sign (no resource is negative); ints are accepted and kept as strings.
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[mkMGTPE]|[eE][+-]?[0-9]{1,2})?$"


def _quantity_to_str(value: Any) -> Any:
    if isinstance(value, bool):
        return value  # let the str check reject it
    if isinstance(value, int | float):
        return str(value)
    return value


Quantity = Annotated[
    str,
    Field(
        pattern=QUANTITY_PATTERN,
        max_length=32,
        json_schema_extra={"x-kubernetes-int-or-string": True},
    ),
    BeforeValidator(_quantity_to_str),
]


def parse_quantity(value: str | int) -> Decimal:
    """A Kubernetes quantity as a number (the kubernetes client's parser)."""
    from kubernetes.utils import parse_quantity as _parse

    return Decimal(_parse(value))


DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]
# Names of the project's own kinds end up in label values (`app.kubernetes.io/instance`,
# `stt.dev/model`), which Kubernetes caps at 63 characters; a reference to one is capped alike.
CRName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=CR_NAME_MAX)]
DNS_LABEL = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
# Label keys and values as Kubernetes validates them (qualified name; value <= 63).
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_PATTERN, max_length=63)]
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
LANGUAGE_PAIR_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*>[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
Language = Annotated[str, Field(pattern=LANGUAGE_PATTERN, max_length=35)]
LanguagePair = Annotated[str, Field(pattern=LANGUAGE_PAIR_PATTERN, max_length=71)]
SHA256_PATTERN = r"^[a-f0-9]{64}$"
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN, min_length=64, max_length=64)]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"}, max_length=64)]
ShortText = Annotated[str, Field(max_length=1024)]
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(now: datetime) -> str:
    """RFC 3339 UTC, second precision, as Kubernetes writes timestamps."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as written by `iso` (or any ISO form); None for an empty value."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- references and resources -----------------------------------------------------------------


class ModelRef(ApiModel):
    """An STTModel in the same namespace."""

    name: CRName
    """Name of an STTModel in the same namespace."""


class LocalObjectRef(ApiModel):
    """A Secret (or other object) in the same namespace."""

    name: ObjectName
    """Name of a Secret in the same namespace."""


LIMIT_NAMES = ("cpu", "memory", "ephemeral-storage")


def _limit_not_below_request(name: str) -> dict[str, str]:
    return {
        "rule": f"!has(self.limits) || !has(self.{name}) || !('{name}' in self.limits)"
        f" || quantity(string(self.limits['{name}'])).compareTo(quantity(string(self.{name}))) >= 0",
        "message": f"resources.limits.{name} must be >= resources.{name}",
        "fieldPath": ".limits",
    }


class ResourcesSpec(ApiModel):
    """Requests for a serving pod; `limits` maps resource names to quantities."""

    gpu: int = Field(default=1, ge=0, le=16, description="nvidia.com/gpu count (requests = limits)")
    cpu: Quantity | None = Field(default=None, description="CPU request, e.g. 2 or 500m")
    memory: Quantity | None = Field(default=None, description="memory request, e.g. 8Gi")
    limits: dict[str, Quantity] | None = Field(
        default=None,
        max_length=3,
        description="limits by resource name (cpu, memory, ephemeral-storage), e.g. {cpu: '4', memory: 16Gi}",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, k in " + repr(list(LIMIT_NAMES)) + ")",
                    "message": "resources.limits keys must be cpu, memory or ephemeral-storage"
                    " (the GPU count is resources.gpu)",
                }
            ]
        },
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_limit_not_below_request("cpu"), _limit_not_below_request("memory")]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        unknown = sorted(set(self.limits or {}) - set(LIMIT_NAMES))
        if unknown:
            raise ValueError(
                "resources.limits keys must be cpu, memory or ephemeral-storage"
                f" (the GPU count is resources.gpu); got {unknown}"
            )
        for name in ("cpu", "memory"):
            request, limit = getattr(self, name), (self.limits or {}).get(name)
            if request is not None and limit is not None and parse_quantity(limit) < parse_quantity(request):
                raise ValueError(f"resources.limits.{name} must be >= resources.{name}")
        return self


# --- conditions -------------------------------------------------------------------------------

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """A Kubernetes-style condition (metav1.Condition shape)."""

    type: str = Field(max_length=316, pattern=r"^[A-Za-z]([A-Za-z0-9_.\-/]*[A-Za-z0-9_])?$")
    status: ConditionStatus
    reason: str = Field(default="", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: Timestamp | None = None
    observed_generation: int | None = Field(default=None, ge=0)


# Condition types.
COND_READY = "Ready"
COND_VALIDATED = "Validated"
COND_QUANTIZED = "Quantized"
COND_RENDERED = "Rendered"
COND_AVAILABLE = "Available"
COND_PROGRESSING = "Progressing"
COND_DEGRADED = "Degraded"
COND_PAUSED = "Paused"
COND_RUNNING = "Running"
COND_CONCLUDED = "Concluded"
COND_SAMPLE_RATIO_MISMATCH = "SampleRatioMismatch"


def condition_moved(before: Mapping[str, Any] | Condition | None, status: str, reason: str) -> bool:
    """Whether setting a condition to (`status`, `reason`) is a transition from `before` (none
    yet, or another status or reason): Events are posted only on one."""
    if before is None:
        return True
    if isinstance(before, Condition):
        return (before.status, before.reason) != (status, reason)
    return (before.get("status"), before.get("reason")) != (status, reason)


def get_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def is_condition_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.get("status") == "True"


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Return a new condition list with `type` set; other conditions keep their order.

    `lastTransitionTime` only changes when `status` changes, as Kubernetes conventions ask, so
    a reconcile that re-states the same condition does not make it look new."""
    if status not in ("True", "False", "Unknown"):
        raise ValueError(f"condition {type}: status must be True, False or Unknown, not {status!r}")
    stamp = iso(now or utcnow())
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions or ():
        entry = dict(cond)
        if entry.get("type") == type:
            found = True
            keep_time = entry.get("status") == status and entry.get("lastTransitionTime")
            entry = {
                "type": type,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": entry["lastTransitionTime"] if keep_time else stamp,
            }
            if generation is not None:
                entry["observedGeneration"] = generation
        out.append(entry)
    if not found:
        entry = {"type": type, "status": status, "reason": reason, "message": message}
        entry["lastTransitionTime"] = stamp
        if generation is not None:
            entry["observedGeneration"] = generation
        out.append(entry)
    return out


def conditions_equal(a: Sequence[Mapping[str, Any]] | None, b: Sequence[Mapping[str, Any]] | None) -> bool:
    """True when both lists say the same (ignoring order), so a patch can be skipped."""

    def key(c: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            c.get(k)
            for k in ("type", "status", "reason", "message", "lastTransitionTime", "observedGeneration")
        )

    return sorted(map(key, a or ()), key=str) == sorted(map(key, b or ()), key=str)


CONDITIONS_SCHEMA_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def conditions_field() -> Any:
    return Field(default_factory=list, max_length=32, json_schema_extra=CONDITIONS_SCHEMA_EXTRA)


# --- metrics and analysis ---------------------------------------------------------------------

MetricPreset = Literal["wer", "cer", "latency-p95", "latency-p99", "error-rate", "confidence", "rtf"]
METRIC_PRESETS: tuple[str, ...] = MetricPreset.__args__  # type: ignore[attr-defined]
Direction = Literal["lower-is-better", "higher-is-better"]
# Placeholders a custom query may use; the analysis engine substitutes them.
QUERY_PLACEHOLDERS = ("namespace", "service", "model", "variant", "language", "start", "interval")
# Presets where a larger value is better; the default direction follows the preset.
HIGHER_IS_BETTER_PRESETS = frozenset({"confidence"})
# Presets whose values are fractions in [0, 1]; every preset is >= 0.
UNIT_INTERVAL_PRESETS = ("error-rate", "confidence")
_NEVER_MET_NEGATIVE = "thresholdRange.max must be >= 0 for a preset (its values are never negative)"
_NEVER_MET_ABOVE_ONE = "thresholdRange.min must be <= 1 for presets error-rate and confidence (fractions)"


class ThresholdRange(ApiModel):
    """Absolute bounds a metric must stay within (Flagger naming)."""

    min: float | None = None
    """Lowest acceptable value."""
    max: float | None = None
    """Highest acceptable value."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.min) || has(self.max)",
                    "message": "thresholdRange needs min or max",
                },
                {
                    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "message": "thresholdRange.min must be <= thresholdRange.max",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("thresholdRange needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("thresholdRange.min must be <= thresholdRange.max")
        return self


SliceKey = Literal["noise", "speaker", "language", "languagePair"]
_SLICE_PRESETS = "slice needs a preset other than error-rate (the evaluator exports those per slice)"


class MetricSpec(ApiModel):
    """One analysis metric: a preset or a custom PromQL query, and the rules it must satisfy."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$", max_length=63)
    """Unique name of the metric in its list (used by templateMetrics and in status)."""
    preset: MetricPreset | None = None
    """A built-in measurement: wer, cer, latency-p95, latency-p99, error-rate, confidence or rtf."""
    query: str | None = Field(default=None, min_length=1, max_length=4096)
    """Custom PromQL; may use {{namespace}} {{service}} {{model}} {{variant}} {{language}}
    {{start}} {{interval}}."""
    threshold_range: ThresholdRange | None = None
    max_relative_increase: float | None = Field(
        default=None, ge=0, le=100, description="relative to the baseline, e.g. 0.05 = +5%"
    )
    non_inferiority_margin: float | None = Field(
        default=None, ge=0, description="in metric units, e.g. 0.005 = 0.5 WER points"
    )
    direction: Direction | None = Field(
        default=None, description="lower-is-better (default; higher-is-better for the confidence preset)"
    )
    min_samples: int = Field(default=200, ge=1, le=100_000_000)
    """Samples (utterances or requests) per arm before a verdict; fewer gives Inconclusive."""
    slice: SliceKey | None = None
    """Judge the metric per value of this evaluation-set label (noise: clean / noisy, speaker,
    language, languagePair), each value against the same rule, Holm-corrected with every other rule: one
    regressed slice fails the analysis. Presets exported by the evaluator only (not error-rate)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.preset) != has(self.query)",
                    "message": "exactly one of preset or query must be set",
                },
                {
                    "rule": "!has(self.slice) || (has(self.preset) && self.preset != 'error-rate')",
                    "message": _SLICE_PRESETS,
                    "fieldPath": ".slice",
                },
                {
                    "rule": "!has(self.preset) || !has(self.thresholdRange) || !has(self.thresholdRange.max)"
                    " || self.thresholdRange.max >= 0.0",
                    "message": _NEVER_MET_NEGATIVE,
                    "fieldPath": ".thresholdRange.max",
                },
                {
                    "rule": "!has(self.preset) || !(self.preset in " + repr(list(UNIT_INTERVAL_PRESETS)) + ")"
                    " || !has(self.thresholdRange) || !has(self.thresholdRange.min)"
                    " || self.thresholdRange.min <= 1.0",
                    "message": _NEVER_MET_ABOVE_ONE,
                    "fieldPath": ".thresholdRange.min",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.preset is None) == (self.query is None):
            raise ValueError("exactly one of preset or query must be set")
        if self.slice is not None and (self.preset is None or self.preset == "error-rate"):
            raise ValueError(_SLICE_PRESETS)
        tr = self.threshold_range
        if self.preset is not None and tr is not None:
            if tr.max is not None and tr.max < 0:
                raise ValueError(_NEVER_MET_NEGATIVE)
            if self.preset in UNIT_INTERVAL_PRESETS and tr.min is not None and tr.min > 1:
                raise ValueError(_NEVER_MET_ABOVE_ONE)
        return self

    def effective_direction(self) -> str:
        if self.direction:
            return self.direction
        return "higher-is-better" if self.preset in HIGHER_IS_BETTER_PRESETS else "lower-is-better"

    def has_rule(self) -> bool:
        return (
            self.threshold_range is not None
            or self.max_relative_increase is not None
            or self.non_inferiority_margin is not None
        )


UNIQUE_NAMES_RULE = "self.all(x, self.exists_one(y, y.name == x.name))"


class PrometheusSpec(ApiModel):
    """Which of the Prometheus servers the operator's administrator allows to use."""

    source: DNS_LABEL | None = None
    """Name of a Prometheus source configured in the operator's settings (`prometheusSources`);
    the operator-wide default when empty."""
    address: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#@\s]+(/[^?#\s]*)?$",
        max_length=512,
        description="Prometheus base URL; only used when it is the operator's default address, one of"
        " its prometheusSources or listed in its prometheusAllowedUrls (else the analysis errors)",
    )
    timeout: Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)] = Field(
        default="10s",
        json_schema_extra={
            "x-kubernetes-validations": [duration_bounds_rule("prometheus.timeout", "1s", "5m")]
        },
    )
    """Query timeout (1s to 5m)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.source) && has(self.address))",
                    "message": "prometheus.source and prometheus.address are exclusive",
                    "fieldPath": ".address",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.source is not None and self.address is not None:
            raise ValueError("prometheus.source and prometheus.address are exclusive")
        if not 1.0 <= parse_duration(self.timeout) <= 300.0:
            raise ValueError("prometheus.timeout must be at least 1s and at most 5m")
        return self


NoDataPolicy = Literal["Pause", "Fail", "Ignore"]


class AnalysisSpec(ApiModel):
    """How a rollout is judged between steps."""

    interval: bounded_duration("analysis.interval", "1s", "24h") = "1m"  # type: ignore[valid-type]
    """Time between two checks."""
    metrics: list[MetricSpec] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": UNIQUE_NAMES_RULE, "message": "analysis.metrics names must be unique"},
                {
                    "rule": "self.all(m, has(m.thresholdRange) || has(m.maxRelativeIncrease)"
                    " || has(m.nonInferiorityMargin))",
                    "message": "each analysis metric needs thresholdRange, maxRelativeIncrease"
                    " or nonInferiorityMargin",
                },
            ]
        },
    )
    """What is measured and the rule each must satisfy."""
    failure_limit: int = Field(default=0, ge=0, le=1000)
    """Failed checks tolerated before rolling back."""
    inconclusive_limit: int = Field(default=0, ge=0, le=1000, description="0 = wait without limit")
    consecutive_success_limit: int = Field(default=1, ge=1, le=1000)
    """Consecutive passed checks needed to pass an analysis step."""
    no_data_policy: NoDataPolicy = "Pause"
    """What Prometheus returning no data means: Pause (wait, default), Fail or Ignore."""
    confidence: float = Field(
        default=0.95, ge=0.5, lt=1.0, json_schema_extra=fractional_minimum("confidence", 0.5)
    )
    """Confidence level of the sequential tests (1 - alpha)."""
    prometheus: PrometheusSpec | None = None
    """Where to query; the operator-wide Prometheus when empty."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_unique([m.name for m in self.metrics], "analysis.metrics names")
        for i, m in enumerate(self.metrics):
            if not m.has_rule():
                raise ValueError(
                    f"analysis.metrics[{i}] ({m.name}) needs thresholdRange, maxRelativeIncrease"
                    " or nonInferiorityMargin"
                )
        return self

    def interval_seconds(self) -> float:
        return parse_duration(self.interval)

    def metric(self, name: str) -> MetricSpec | None:
        return next((m for m in self.metrics if m.name == name), None)


def exactly_one_rule(fields: Sequence[str], message: str) -> dict[str, str]:
    """The CEL rule "exactly one of these fields is set" (camelCase names), with its message."""
    count = " + ".join(f"(has(self.{name}) ? 1 : 0)" for name in fields)
    return {"rule": f"{count} == 1", "message": message}


def require_exactly_one(model: BaseModel, fields: Sequence[str], message: str) -> None:
    """The same rule checked in Python (snake_case attribute names)."""
    if sum(getattr(model, name) is not None for name in fields) != 1:
        raise ValueError(message)


def check_unique(values: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} must be unique; {v!r} appears twice")
        seen.add(v)
