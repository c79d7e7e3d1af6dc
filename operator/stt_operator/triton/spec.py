"""The parts of an STTModel spec the Triton renderer reads, as structural types.

The renderer reads attributes by their snake_case names (`spec.triton.max_batch_size`,
`spec.io.inputs[0].data_type`), which is what the pydantic API models in `stt_operator.api`
expose. The small dataclasses here carry the same names so the pure renderer can be used and
tested on its own (and by the local Triton fixture) without building a whole STTModel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args

from stt_operator.api.sttmodel import DataType, TensorRole, TritonBackend

FORMAT_TO_BACKEND: dict[str, str] = {
    "onnx": "onnxruntime",
    "torchscript": "pytorch",
    "pytorch": "pytorch",
    "tensorrt-plan": "tensorrt",
    "python": "python",
}
# The API's enums are the one list of each; the renderer checks against the same values.
BACKENDS: tuple[str, ...] = get_args(TritonBackend)
DATA_TYPES: tuple[str, ...] = get_args(DataType)
ROLES: tuple[str, ...] = get_args(TensorRole)


@dataclass
class TensorSpec:
    name: str
    data_type: str
    dims: list[int]
    role: str = "other"
    optional: bool = False  # Triton `optional: true`: clients may omit this input


@dataclass
class IOSpec:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sample_rate: int = 16000
    vocabulary: list[str] | None = None


@dataclass
class DynamicBatching:
    enabled: bool = True
    preferred_batch_sizes: list[int] = field(default_factory=list)
    max_queue_delay_microseconds: int = 0


@dataclass
class InstanceGroup:
    kind: str = "KIND_GPU"
    count: int = 1
    gpus: list[int] | None = None


@dataclass
class LatestPolicy:
    num_versions: int = 1


@dataclass
class SpecificPolicy:
    versions: list[int] = field(default_factory=list)


@dataclass
class VersionPolicy:
    latest: LatestPolicy | None = None
    all: Any = None  # truthy (True or {}) selects "all versions"
    specific: SpecificPolicy | None = None


@dataclass
class TritonSpec:
    backend: str | None = None
    max_batch_size: int = 8
    dynamic_batching: DynamicBatching | None = None
    instance_group: InstanceGroup | None = None
    version_policy: VersionPolicy | None = None
    warmup: bool = False
    tensorrt_fp16: bool = False
    image: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


def resolve_backend(model_format: str | None, backend: str | None) -> str:
    """The Triton backend: `triton.backend` when set, else derived from `format`."""
    if backend:
        if backend not in BACKENDS:
            raise ValueError(f"triton.backend: {backend!r} is not one of {list(BACKENDS)}")
        return backend
    if model_format == "tensorflow-savedmodel":
        raise ValueError(
            "format: tensorflow-savedmodel has no supported Triton backend here "
            "(TensorFlow is deprecated upstream); convert the model to ONNX"
        )
    if model_format not in FORMAT_TO_BACKEND:
        raise ValueError(f"format: {model_format!r} is not one of {sorted(FORMAT_TO_BACKEND)}")
    return FORMAT_TO_BACKEND[model_format]
