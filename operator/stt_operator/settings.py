"""Operator-wide settings: command-line flags, environment and an optional YAML file.

Precedence: flag > environment (STT_OPERATOR_*) > config file > default. The file is what
the Helm chart's values render (retention, concurrency limits, default durations).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
DEFAULT_OPERATOR_IMAGE = "ghcr.io/stt-operator/stt-operator:0.1.0"


class OperatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    namespaces: list[str] = Field(default_factory=list, description="empty = all namespaces")
    peering: str | None = Field(None, description="Kopf peering object name (HA); None = standalone")
    liveness_port: int = 8080
    metrics_port: int = 9090
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    triton_image: str = DEFAULT_TRITON_IMAGE
    operator_image: str = DEFAULT_OPERATOR_IMAGE
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
    log_burst: int = Field(10, ge=1, description="log lines of one kind allowed per log_period_s")
    log_period_s: float = Field(60.0, gt=0)
    revision_history_limit: int = Field(10, ge=1)
    max_concurrent_abtests: int = Field(5, ge=1)
    analytics_retention: str = Field("7d", pattern=r"^[0-9]+[smhdwy]$", description="PromQL window")
    analytics_interval_s: float = Field(
        60.0, gt=0, description="how often STTModel.status.analytics refreshes"
    )
    default_analysis_interval: str = "1m"
    default_abtest_duration: str = "24h"
    log_format: str = Field("text", pattern="^(text|json)$")

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
        for name in cls.model_fields:
            env = os.environ.get(f"STT_OPERATOR_{name.upper()}")
            if env is not None:
                values[name] = env.split(",") if name == "namespaces" else env
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
