"""Operator-wide settings: command-line flags, environment and an optional YAML file.

Precedence: flag > environment (STT_OPERATOR_*) > config file > default. The file is what
the Helm chart's values render (retention, concurrency limits, default durations).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stt_operator.builders.placement import Images, Placement
from stt_operator.images import DEFAULT_JOBS_IMAGE, DEFAULT_OPERATOR_IMAGE, DEFAULT_TRITON_IMAGE
from stt_operator.services.notify import NotificationSettings

log = logging.getLogger(__name__)

# Keys older settings files may carry. Renamed ones are read under their new name; removed ones
# never did anything and are dropped with a warning, so an old file still starts the operator.
RENAMED = {"analytics_retention": "analytics_window"}
REMOVED = {
    "revision_history_limit": "the history kept is each ModelDeployment's spec.rollback.revisionHistoryLimit",
    "default_abtest_duration": "an ABTest without spec.duration runs 24h (the CRD's default)",
}


class OperatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    namespaces: list[str] = Field(default_factory=list, description="empty = all namespaces")
    peering: str | None = Field(None, description="Kopf peering object name (HA); None = standalone")
    liveness_port: int = 8080
    metrics_port: int = 9090
    # Prometheus is reached only at addresses the administrator configures here: a custom
    # resource names a source or an allowed address, never an arbitrary URL (SSRF).
    prometheus_url: str | None = Field(
        None, description="default Prometheus for analysis and analytics; None = both are off"
    )
    prometheus_sources: dict[str, str] = Field(
        default_factory=dict, description="named Prometheus servers spec.analysis.prometheus.source may use"
    )
    prometheus_allowed_urls: list[str] = Field(
        default_factory=list, description="extra addresses spec.analysis.prometheus.address may name"
    )
    scope_custom_queries: bool = Field(
        True, description="enforce the object's namespace on every selector of a custom PromQL query"
    )
    triton_image: str = DEFAULT_TRITON_IMAGE
    operator_image: str = Field(DEFAULT_OPERATOR_IMAGE, description="this operator's own image")
    jobs_image: str = Field(DEFAULT_JOBS_IMAGE, description="validation/quantization Jobs and evaluators")
    fetch_image: str | None = Field(
        None, description="Triton's fetch-model init container; None = the Jobs' image"
    )
    jobs_placement: Placement = Field(
        default_factory=Placement, description="node selector / tolerations of Jobs and evaluators"
    )
    job_cpu: str = Field("2", pattern=r"^[0-9]+(\.[0-9]+)?m?$", description="validation/quantization Job CPU")
    job_memory: str = Field(
        "4Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)?$", description="and memory (requests = limits)"
    )
    serving_placement: Placement = Field(
        default_factory=Placement, description="node selector / tolerations added to Triton pods"
    )
    capacity_preflight: bool = Field(
        True,
        description="before a canary/preview/new revision is created, check that its pods fit on the"
        " nodes they may use (reads Nodes and the pods bound to them)",
    )
    smoke_test_default: bool = Field(
        False,
        description="smoke-transcribe each new revision before it gets weight when its ModelDeployment"
        " leaves spec.smokeTest.enabled empty (the built-in utterance is English)",
    )
    reconcile_interval_s: float = Field(
        10.0, gt=0, description="longest wait between looks at a rollout or A/B test in flight"
    )
    workers: int = Field(
        32, ge=1, le=128, description="reconciles running at the same time (they wait on API calls)"
    )
    shutdown_timeout_s: float = Field(
        20.0, gt=0, description="after SIGTERM the process exits within this, whatever the apiserver does"
    )
    peering_lifetime_s: int = Field(
        20, ge=5, description="HA: a replica that stops renewing is presumed dead after this"
    )
    watch_timeout_s: int = Field(
        60,
        ge=10,
        le=1800,
        description="each watch stream is renewed after this many seconds (resuming where it"
        " stopped), so a stream the apiserver keeps open but stops feeding delays events by at most"
        " this",
    )
    log_watch_streams: bool = Field(
        False, description="log each watch stream's start and stop (diagnosing late events)"
    )
    log_burst: int = Field(10, ge=1, description="log lines of one kind allowed per log_period_s")
    log_period_s: float = Field(60.0, gt=0)
    max_concurrent_abtests: int = Field(5, ge=1)
    analytics_window: str = Field(
        "7d",
        pattern=r"^[0-9]+[smhdwy]$",
        description="how far back STTModel.status.analytics looks (a PromQL range; nothing is stored)",
    )
    analytics_interval_s: float = Field(
        60.0, gt=0, description="how often STTModel.status.analytics refreshes"
    )
    default_analysis_interval: str = "1m"
    log_format: str = Field("text", pattern="^(text|json)$")
    validation_required_steps: list[
        Literal["format", "architecture", "dependencies", "security", "integrity", "performance", "digest"]
    ] = Field(
        default_factory=lambda: ["security", "integrity"],
        description="validation steps that must run (not be skipped) for any STTModel to become Ready; "
        "an STTModel's spec.validation.requiredSteps adds to these",
    )
    notifications: NotificationSettings = Field(
        default_factory=NotificationSettings, description="webhook receivers (docs/notifications.md)"
    )

    @field_validator("prometheus_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None  # Helm renders an unset address as ""

    @field_validator("prometheus_url", "prometheus_allowed_urls", "prometheus_sources")
    @classmethod
    def _http_urls(cls, value: Any) -> Any:
        urls = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
        for url in urls:
            if url is not None and not str(url).startswith(("http://", "https://")):
                raise ValueError(f"Prometheus address {url!r} must start with http:// or https://")
        return value

    @property
    def prometheus_configured(self) -> bool:
        return bool(self.prometheus_url or self.prometheus_sources)

    def prometheus_for(self, source: str | None = None, address: str | None = None) -> str:
        """The Prometheus URL an object may use (its source / address or the default); raises
        PromQueryError (not-allowed / not-configured) otherwise, before any request."""
        from stt_operator.analysis.prom import resolve_prometheus

        return resolve_prometheus(
            default_url=self.prometheus_url,
            sources=self.prometheus_sources,
            allowed_urls=self.prometheus_allowed_urls,
            source=source,
            address=address,
        )

    @property
    def fetcher_image(self) -> str:
        return self.fetch_image or self.jobs_image

    def images(self) -> Images:
        """The images and placements every builder of pods takes."""
        return Images(
            triton=self.triton_image,
            fetcher=self.fetcher_image,
            jobs=self.jobs_image,
            serving_placement=self.serving_placement,
            jobs_placement=self.jobs_placement,
        )

    @classmethod
    def load(cls, config_file: str | None = None, **overrides: Any) -> OperatorSettings:
        values: dict[str, Any] = {}
        path = config_file or os.environ.get("STT_OPERATOR_CONFIG")
        if path:
            try:
                loaded = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ValueError(f"settings file {path}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise ValueError(f"settings file {path}: expected a mapping at the top level")
            values.update({k.replace("-", "_"): v for k, v in loaded.items()})
        for old, new in RENAMED.items():
            if old in values:
                log.warning("setting %s is now %s", old, new)
                values.setdefault(new, values.pop(old))
        for old, why in REMOVED.items():
            if values.pop(old, None) is not None:
                log.warning("setting %s is ignored: %s", old, why)
        for name in cls.model_fields:
            if name == "notifications":
                continue  # a structure: only from the settings file
            env = os.environ.get(f"STT_OPERATOR_{name.upper()}")
            if env is not None:
                if name in ("namespaces", "prometheus_allowed_urls", "validation_required_steps"):
                    values[name] = [v for v in env.split(",") if v]
                elif name == "prometheus_sources":
                    values[name] = dict(kv.split("=", 1) for kv in env.split(",") if "=" in kv)
                elif name.endswith("_placement"):
                    values[name] = yaml.safe_load(env)  # JSON or YAML mapping
                else:
                    values[name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
