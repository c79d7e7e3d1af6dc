"""The stt.dev/v1alpha1 API: pydantic models that are the source of truth for the CRDs.

Import the kinds from here: `from stt_operator.api import STTModel, ModelDeployment, ABTest`.
"""

from stt_operator.api.abtest import ABTest, ABTestSpec, ABTestStatus
from stt_operator.api.common import (
    API_VERSION_FULL,
    AnalysisSpec,
    Condition,
    MetricSpec,
    ModelRef,
    ResourcesSpec,
    SpecError,
    format_duration,
    get_condition,
    is_condition_true,
    parse_duration,
    set_condition,
)
from stt_operator.api.modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from stt_operator.api.sttmodel import STTModel, STTModelSpec, STTModelStatus

KINDS = (STTModel, ModelDeployment, ABTest)

__all__ = [
    "API_VERSION_FULL",
    "KINDS",
    "ABTest",
    "ABTestSpec",
    "ABTestStatus",
    "AnalysisSpec",
    "Condition",
    "MetricSpec",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelRef",
    "ResourcesSpec",
    "STTModel",
    "STTModelSpec",
    "STTModelStatus",
    "SpecError",
    "format_duration",
    "get_condition",
    "is_condition_true",
    "parse_duration",
    "set_condition",
]
