"""`STTModel` (short name `sttm`): one model artifact plus how to serve, validate and quantize it."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from stt_operator.api.common import (
    UNIQUE_NAMES_RULE,
    ApiModel,
    Condition,
    CustomResource,
    Language,
    LanguagePair,
    LocalObjectRef,
    ResourcesSpec,
    Sha256,
    ShortText,
    StatusModel,
    Timestamp,
    bounded_duration,
    check_unique,
    conditions_field,
    exactly_one_rule,
    parse_duration,
    require_exactly_one,
)

ModelFormat = Literal["onnx", "torchscript", "pytorch", "tensorflow-savedmodel", "tensorrt-plan", "python"]
TritonBackend = Literal["onnxruntime", "python", "pytorch", "tensorrt"]
ArchiveType = Literal["none", "tar", "tar.gz", "zip"]
DataType = Literal[
    "TYPE_FP32",
    "TYPE_INT16",
    "TYPE_STRING",
    "TYPE_INT64",
    "TYPE_FP16",
    "TYPE_INT32",
    "TYPE_BOOL",
    "TYPE_UINT8",
]
TensorRole = Literal["audio", "audio-length", "sample-rate", "transcript", "logits", "confidence", "other"]
QuantizationMode = Literal["dynamic-int8", "static-int8", "fp16"]
InstanceKind = Literal["KIND_GPU", "KIND_CPU"]

# The Triton backend each format is served by by default, and the backends it may use at all
# (a Python model can wrap any artifact). TensorFlow's backend is deprecated upstream, so a
# SavedModel must be wrapped by a Python model (or converted to ONNX).
DEFAULT_BACKEND: dict[str, str] = {
    "onnx": "onnxruntime",
    "torchscript": "pytorch",
    "pytorch": "pytorch",
    "tensorrt-plan": "tensorrt",
    "python": "python",
}
ALLOWED_BACKENDS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime", "tensorrt", "python"),
    "torchscript": ("pytorch", "python"),
    "pytorch": ("pytorch", "python"),
    "tensorflow-savedmodel": ("python",),
    "tensorrt-plan": ("tensorrt",),
    "python": ("python",),
}
# Every scheme needs what it addresses: an absolute file path, a PVC name, a bucket and a key
# (the fetcher takes no bare bucket), a host.
URI_PATTERN = (
    r"^(file:///[^\s]*"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(/[^\s]*)?"
    r"|(s3|gs)://[a-z0-9]([a-z0-9._-]{0,220}[a-z0-9])?/[^\s]*[^\s/][^\s]*"
    r"|https?://[^/?#@\s]+([/?#][^\s]*)?)$"
)
# A `.` or `..` path segment (also percent-encoded) would leave the claim, bucket or folder.
TRAVERSAL_PATTERN = r"/([.]|%2[eE])([.]|%2[eE])?(/|[?#]|$)"
_TRAVERSAL_MSG = "must not contain '.' or '..' path segments"


def _uri_field(description: str | None = None, what: str = "uri", **kwargs: Any) -> Any:
    return Field(
        pattern=URI_PATTERN,
        max_length=2048,
        description=description,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"!self.matches('{TRAVERSAL_PATTERN}')", "message": f"{what} {_TRAVERSAL_MSG}"}
            ]
        },
        **kwargs,
    )


def check_no_traversal(uri: str | None, what: str) -> None:
    if uri is not None and re.search(TRAVERSAL_PATTERN, uri):
        raise ValueError(f"{what} {_TRAVERSAL_MSG}")


TENSOR_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:/\-]*$"


def _cel_map(mapping: dict[str, tuple[str, ...]]) -> str:
    items = ", ".join(f"'{k}': [{', '.join(repr(v) for v in vals)}]" for k, vals in mapping.items())
    return "{" + items + "}"


# --- spec -------------------------------------------------------------------------------------


class SourceSpec(ApiModel):
    """Where the artifact comes from and how to check it."""

    uri: str = _uri_field(
        "file:///<path>, pvc://<claim>/<path>, http(s)://<host>/, s3://<bucket>/ or gs://<bucket>/"
        " location of the artifact",
        "source.uri",
    )
    sha256: Sha256 | None = Field(default=None, description="pinned digest of the artifact file or archive")
    secret_ref: LocalObjectRef | None = Field(default=None, description="credentials for s3/gs/http")
    archive: ArchiveType | None = Field(
        default=None, description="archive type; detected from the name when empty"
    )
    max_size_bytes: int | None = Field(default=None, ge=1, le=1 << 40)
    """Refuse artifacts larger than this."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.secretRef) || !(self.uri.startsWith('file://')"
                    " || self.uri.startsWith('pvc://'))",
                    "message": "source.secretRef is only for http(s)://, s3:// and gs:// URIs",
                    "fieldPath": ".secretRef",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_no_traversal(self.uri, "source.uri")
        if self.secret_ref is not None and self.uri.startswith(("file://", "pvc://")):
            raise ValueError("source.secretRef is only for http(s)://, s3:// and gs:// URIs")
        return self

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]


class TensorSpec(ApiModel):
    """One input or output tensor of the model's I/O contract."""

    name: str = Field(pattern=TENSOR_NAME_PATTERN, max_length=128)
    """Tensor name as the model declares it."""
    data_type: DataType
    """Triton data type."""
    dims: list[int] = Field(max_length=8, description="shape without the batch dim; -1 = dynamic")
    role: TensorRole = "other"
    """What the tensor carries: audio, audio-length, sample-rate, transcript, logits, confidence or other."""
    optional: bool = False
    """Triton input `optional: true`: clients may omit it. Only meaningful for inputs."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self.dims.all(d, d == -1 || d > 0)", "message": "dims entries must be -1 or > 0"}
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if any(d != -1 and d <= 0 for d in self.dims):
            raise ValueError("dims entries must be -1 or > 0")
        return self


# What clients and the evaluator send as audio (the validator checks the model against the same).
AUDIO_DATA_TYPES = ("TYPE_FP32", "TYPE_FP16", "TYPE_INT16")
_AUDIO_TYPE_MSG = "io.inputs: the audio tensor's dataType must be TYPE_FP32, TYPE_FP16 or TYPE_INT16"
_VOCAB_MSG = "io.vocabulary must have as many entries as the logits tensor's last dim (unless it is -1)"
_TENSOR_LIST_RULES = [{"rule": UNIQUE_NAMES_RULE, "message": "tensor names must be unique"}]


class IOSpec(ApiModel):
    """The model's I/O contract, checked by validation and used to render config.pbtxt."""

    inputs: list[TensorSpec] = Field(
        min_length=1, max_length=16, json_schema_extra={"x-kubernetes-validations": _TENSOR_LIST_RULES}
    )
    """Input tensors; exactly one has role audio."""
    outputs: list[TensorSpec] = Field(
        min_length=1, max_length=16, json_schema_extra={"x-kubernetes-validations": _TENSOR_LIST_RULES}
    )
    """Output tensors; a transcript, or logits plus vocabulary."""
    sample_rate: int = Field(default=16000, ge=8000, le=192000, description="Hz")
    vocabulary: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None,
        max_length=8192,
        description="tokens for CTC models whose output is logits",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.inputs.exists_one(t, t.role == 'audio')",
                    "message": "io.inputs must have exactly one tensor with role audio",
                    "fieldPath": ".inputs",
                },
                {
                    "rule": "self.outputs.exists(t, t.role == 'transcript') || (self.outputs.exists(t,"
                    " t.role == 'logits') && has(self.vocabulary) && size(self.vocabulary) > 0)",
                    "message": "io.outputs needs a transcript tensor, or a logits tensor plus io.vocabulary",
                    "fieldPath": ".outputs",
                },
                {
                    "rule": "self.outputs.all(t, !has(t.optional) || !t.optional)",
                    "message": "io.outputs must not set optional: only inputs may be optional",
                    "fieldPath": ".outputs",
                },
                {
                    "rule": "self.inputs.all(t, t.role != 'audio' || t.dataType in "
                    + repr(list(AUDIO_DATA_TYPES))
                    + ")",
                    "message": _AUDIO_TYPE_MSG,
                    "fieldPath": ".inputs",
                },
                {
                    "rule": "!has(self.vocabulary) || self.outputs.all(t, t.role != 'logits'"
                    " || size(t.dims) == 0 || t.dims[size(t.dims) - 1] == -1"
                    " || t.dims[size(t.dims) - 1] == size(self.vocabulary))",
                    "message": _VOCAB_MSG,
                    "fieldPath": ".vocabulary",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_unique([t.name for t in self.inputs], "io.inputs names")
        check_unique([t.name for t in self.outputs], "io.outputs names")
        optional_outputs = [t.name for t in self.outputs if t.optional]
        if optional_outputs:
            raise ValueError(
                f"io.outputs must not set optional: only inputs may be optional (set on {optional_outputs})"
            )
        if sum(t.role == "audio" for t in self.inputs) != 1:
            raise ValueError("io.inputs must have exactly one tensor with role audio")
        roles = {t.role for t in self.outputs}
        if "transcript" not in roles and not ("logits" in roles and self.vocabulary):
            raise ValueError("io.outputs needs a transcript tensor, or a logits tensor plus io.vocabulary")
        if any(t.role == "audio" and t.data_type not in AUDIO_DATA_TYPES for t in self.inputs):
            raise ValueError(_AUDIO_TYPE_MSG)
        if self.vocabulary is not None:
            for t in self.outputs:
                if t.role == "logits" and t.dims and t.dims[-1] not in (-1, len(self.vocabulary)):
                    raise ValueError(f"{_VOCAB_MSG} (vocabulary {len(self.vocabulary)}, logits {t.dims})")
        return self

    def tensor(self, role: str) -> TensorSpec | None:
        return next((t for t in [*self.inputs, *self.outputs] if t.role == role), None)


class DynamicBatching(ApiModel):
    enabled: bool = True
    """Let Triton batch requests on its own."""
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list, max_length=8)
    """Batch sizes Triton aims for (each <= maxBatchSize)."""
    max_queue_delay_microseconds: int = Field(default=0, ge=0, le=10_000_000)
    """How long a request may wait for a batch to fill."""


class InstanceGroup(ApiModel):
    kind: InstanceKind = "KIND_GPU"
    """Run on GPU or CPU."""
    count: int = Field(default=1, ge=1, le=64)
    """Model instances per device."""
    gpus: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, max_length=16)
    """GPU ids to use (KIND_GPU only); all visible when empty."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.kind == 'KIND_GPU' || !has(self.gpus)",
                    "message": "instanceGroup.gpus needs instanceGroup.kind KIND_GPU",
                    "fieldPath": ".gpus",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind != "KIND_GPU" and self.gpus is not None:
            raise ValueError("instanceGroup.gpus needs instanceGroup.kind KIND_GPU")
        return self


class LatestVersions(ApiModel):
    """Serve the newest versions."""

    num_versions: int = Field(default=1, ge=1, le=100)
    """Serve the newest N versions."""


class AllVersions(ApiModel):
    """Serve every version (Triton's `all {}`)."""


class SpecificVersions(ApiModel):
    """Serve the listed versions."""

    versions: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=32)
    """Serve exactly these versions."""


_POLICIES = ("latest", "all", "specific")
_POLICY_MSG = "versionPolicy needs exactly one of latest, all or specific"


class VersionPolicy(ApiModel):
    """Exactly one of latest, all, specific (Triton's version_policy)."""

    latest: LatestVersions | None = None
    all: AllVersions | None = None
    specific: SpecificVersions | None = None

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [exactly_one_rule(_POLICIES, _POLICY_MSG)]}
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        require_exactly_one(self, _POLICIES, _POLICY_MSG)
        return self


class TritonSpec(ApiModel):
    """How Triton serves the model (rendered into config.pbtxt)."""

    backend: TritonBackend | None = Field(default=None, description="derived from spec.format when empty")
    max_batch_size: int = Field(default=8, ge=0, le=1024)
    """Largest batch Triton sends the model; 0 disables batching."""
    dynamic_batching: DynamicBatching | None = None
    """Triton's dynamic batcher."""
    instance_group: InstanceGroup | None = None
    """Where and how many model instances run."""
    version_policy: VersionPolicy | None = None
    """Which model versions Triton serves (latest 1 when empty)."""
    warmup: bool = False
    """Send warm-up requests before the model reports ready."""
    tensorrt_fp16: bool = Field(default=False, description="ONNX Runtime TensorRT accelerator with FP16")
    image: str | None = Field(
        default=None, pattern=r"^[^\s]+$", max_length=512, description="Triton image override"
    )
    parameters: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=64,
        description="backend parameters (string -> string)",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self.all(k, size(k) > 0)", "message": "triton.parameters keys must not be empty"}
            ]
        },
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.dynamicBatching) || !self.dynamicBatching.enabled"
                    " || self.maxBatchSize > 0",
                    "message": "triton.dynamicBatching needs triton.maxBatchSize > 0",
                    "fieldPath": ".maxBatchSize",
                },
                {
                    "rule": "!has(self.dynamicBatching)"
                    " || self.dynamicBatching.preferredBatchSizes.all(b, b <= self.maxBatchSize)",
                    "message": "triton.dynamicBatching.preferredBatchSizes must be <= triton.maxBatchSize",
                    "fieldPath": ".dynamicBatching.preferredBatchSizes",
                },
                {
                    "rule": "!self.tensorrtFp16 || !has(self.instanceGroup)"
                    " || self.instanceGroup.kind == 'KIND_GPU'",
                    "message": "triton.tensorrtFp16 needs triton.instanceGroup.kind KIND_GPU",
                    "fieldPath": ".tensorrtFp16",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        db = self.dynamic_batching
        if db is not None and db.enabled and self.max_batch_size == 0:
            raise ValueError("triton.dynamicBatching needs triton.maxBatchSize > 0")
        if db is not None and any(b > self.max_batch_size for b in db.preferred_batch_sizes):
            raise ValueError("triton.dynamicBatching.preferredBatchSizes must be <= triton.maxBatchSize")
        ig = self.instance_group
        if self.tensorrt_fp16 and ig is not None and ig.kind != "KIND_GPU":
            raise ValueError("triton.tensorrtFp16 needs triton.instanceGroup.kind KIND_GPU")
        if any(not k for k in self.parameters):
            raise ValueError("triton.parameters keys must not be empty")
        return self


class EvaluationSet(ApiModel):
    """A labelled evaluation set: audio files plus a manifest of reference transcripts."""

    uri: str = _uri_field(what="evaluationSet.uri")
    """Location of the labelled audio (same schemes as source.uri)."""
    manifest: str | None = Field(
        default=None, max_length=1024, description="manifest path inside the set (JSONL/CSV)"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_no_traversal(self.uri, "evaluationSet.uri")
        return self


class ValidationThresholds(ApiModel):
    max_wer: float | None = Field(default=None, ge=0, le=10)
    """Highest word error rate accepted (0.1 = 10 %)."""
    max_cer: float | None = Field(default=None, ge=0, le=10)
    """Highest character error rate accepted."""
    max_latency_p95_ms: float | None = Field(default=None, gt=0)
    """Highest p95 latency per utterance, in ms."""
    max_real_time_factor: float | None = Field(default=None, gt=0)
    """Highest processing time / audio duration."""
    max_peak_memory_mi_b: float | None = Field(default=None, gt=0, alias="maxPeakMemoryMiB")
    """Highest peak memory while benchmarking, in MiB."""


class SecurityPolicy(ApiModel):
    allowed_pickle_globals: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=256
    )
    """Pickle globals (module.name) the security scan accepts besides the safe defaults."""


class SignatureSpec(ApiModel):
    public_key_secret_ref: LocalObjectRef
    """Secret holding the public key that signed the artifact."""
    signature_uri: str = _uri_field(what="signature.signatureUri")
    """Location of the detached signature."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_no_traversal(self.signature_uri, "signature.signatureUri")
        return self


ValidationStepName = Literal[
    "format", "architecture", "dependencies", "security", "integrity", "performance", "digest"
]


class ValidationSpec(ApiModel):
    enabled: bool = True
    """Run the validation Job (format, architecture, dependencies, security, integrity, performance)."""
    evaluation_set: EvaluationSet | None = None
    """Labelled audio for the performance step and the quantization gate."""
    thresholds: ValidationThresholds | None = None
    """Limits the performance step enforces."""
    security: SecurityPolicy | None = None
    """Security scan policy."""
    signature: SignatureSpec | None = None
    """Verify a detached signature of the artifact."""
    timeout: bounded_duration("validation.timeout", "1m", "24h") = "30m"  # type: ignore[valid-type]
    """Fail validation that runs longer than this (1m to 24h)."""
    required_steps: list[ValidationStepName] = Field(default_factory=list, max_length=7)
    """Steps that must run (not be skipped) for the model to become Ready, on top of the
    operator's `validationRequiredSteps` setting (default security, integrity). `digest`
    requires a pinned source.sha256 instead of the visible DigestNotPinned waiver."""

    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)


class QuantizationSpec(ApiModel):
    enabled: bool = False
    """Quantize the model (ONNX only) and keep it only if the accuracy gate passes."""
    mode: QuantizationMode = "dynamic-int8"
    """dynamic-int8, static-int8 (calibrated on the evaluation set) or fp16."""
    max_wer_increase: float = Field(default=0.005, ge=0, le=1, description="absolute WER increase allowed")
    output_uri: str | None = _uri_field(what="quantization.outputUri", default=None)
    """Where to store the quantized artifact; next to the source when empty."""
    exclude_op_types: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=lambda: ["Conv"],
        max_length=64,
        json_schema_extra={"default": ["Conv"]},
    )
    """ONNX op types left in full precision."""
    exclude_nodes: list[Annotated[str, Field(max_length=256)]] | None = Field(default=None, max_length=64)
    """ONNX node names (globs, e.g. `/frontend/*`) left in full precision."""
    calibration_samples: int | None = Field(default=None, ge=1, le=100_000)
    """Utterances used to calibrate static-int8."""


_TRT_CPU_MSG = (
    "triton.instanceGroup.kind KIND_CPU cannot serve format tensorrt-plan or triton.backend tensorrt"
    " (Triton's TensorRT backend runs only on a GPU)"
)
_GPU_IDS_MSG = (
    "triton.instanceGroup.gpus must name GPU ids below resources.gpu (default 1):"
    " a pod sees only its own GPUs, numbered from 0"
)
_NO_BATCH_DIMS_MSG = (
    "io: with triton.maxBatchSize 0 every tensor needs at least one dim (dims must not be empty)"
)
_GPU_MSG = "resources.gpu 0 needs triton.instanceGroup.kind KIND_CPU (KIND_GPU, the default, needs a GPU)"


class STTModelSpec(ApiModel):
    """One model artifact and how to serve, validate and quantize it."""

    language: Language = Field(description="BCP-47 tag, e.g. en-US")
    language_pair: LanguagePair | None = Field(
        default=None, description="speech translation, e.g. en-US>de-DE"
    )
    description: str | None = Field(default=None, max_length=1024)
    """Free text for people."""
    format: ModelFormat
    """Artifact format: onnx, torchscript, pytorch, tensorflow-savedmodel, tensorrt-plan or python."""
    source: SourceSpec
    """Where the artifact comes from and how to verify it."""
    io: IOSpec
    """The model's input/output contract."""
    triton: TritonSpec | None = None
    """How Triton serves the model (rendered into config.pbtxt)."""
    resources: ResourcesSpec | None = None
    """Resources of each serving pod."""
    validation: ValidationSpec | None = None
    """The validation pipeline (enabled by default)."""
    quantization: QuantizationSpec | None = None
    """Optional quantization with an accuracy gate."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.triton) || !has(self.triton.backend) || "
                    + _cel_map(ALLOWED_BACKENDS)
                    + "[self.format].exists(b, b == self.triton.backend)",
                    "message": "triton.backend does not fit spec.format (onnx: onnxruntime|tensorrt|python;"
                    " torchscript: pytorch|python; tensorrt-plan: tensorrt; python: python)",
                    "fieldPath": ".triton.backend",
                },
                {
                    "rule": "self.format != 'tensorflow-savedmodel'"
                    " || (has(self.triton) && has(self.triton.backend))",
                    "message": "format tensorflow-savedmodel needs triton.backend python (a Python model"
                    " that wraps it); Triton's TensorFlow backend is not supported, convert to ONNX",
                    "fieldPath": ".triton.backend",
                },
                {
                    "rule": "!has(self.quantization) || !self.quantization.enabled || self.format == 'onnx'",
                    "message": "quantization is only supported for format onnx",
                    "fieldPath": ".quantization.enabled",
                },
                {
                    "rule": "!has(self.triton) || !self.triton.tensorrtFp16 || self.format == 'onnx'",
                    "message": "triton.tensorrtFp16 is only for format onnx",
                    "fieldPath": ".triton.tensorrtFp16",
                },
                {
                    "rule": "!has(self.resources) || !has(self.resources.gpu) || self.resources.gpu > 0"
                    " || (has(self.triton) && has(self.triton.instanceGroup)"
                    " && self.triton.instanceGroup.kind == 'KIND_CPU')",
                    "message": _GPU_MSG,
                    "fieldPath": ".resources.gpu",
                },
                {
                    "rule": "!has(self.triton) || !has(self.triton.instanceGroup)"
                    " || self.triton.instanceGroup.kind != 'KIND_CPU'"
                    " || (self.format != 'tensorrt-plan'"
                    " && !(has(self.triton.backend) && self.triton.backend == 'tensorrt'))",
                    "message": _TRT_CPU_MSG,
                    "fieldPath": ".triton.instanceGroup.kind",
                },
                {
                    "rule": "!has(self.triton) || !has(self.triton.instanceGroup)"
                    " || !has(self.triton.instanceGroup.gpus) || self.triton.instanceGroup.gpus.all(g,"
                    " g < (has(self.resources) && has(self.resources.gpu) ? self.resources.gpu : 1))",
                    "message": _GPU_IDS_MSG,
                    "fieldPath": ".triton.instanceGroup.gpus",
                },
                {
                    "rule": "!has(self.triton) || !has(self.triton.maxBatchSize)"
                    " || self.triton.maxBatchSize > 0 || (self.io.inputs.all(t, size(t.dims) > 0)"
                    " && self.io.outputs.all(t, size(t.dims) > 0))",
                    "message": _NO_BATCH_DIMS_MSG,
                    "fieldPath": ".io",
                },
                {
                    "rule": "!has(self.quantization) || !self.quantization.enabled"
                    " || (has(self.validation) && self.validation.enabled"
                    " && has(self.validation.evaluationSet))",
                    "message": "quantization needs validation enabled with validation.evaluationSet"
                    " (the accuracy gate compares WER on it)",
                    "fieldPath": ".quantization.enabled",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        backend = self.triton.backend if self.triton is not None else None
        if backend is not None and backend not in ALLOWED_BACKENDS[self.format]:
            raise ValueError(f"triton.backend {backend} does not fit spec.format {self.format}")
        if self.format == "tensorflow-savedmodel" and backend is None:
            raise ValueError("format tensorflow-savedmodel needs triton.backend python")
        q = self.quantization
        if q is not None and q.enabled:
            if self.format != "onnx":
                raise ValueError("quantization is only supported for format onnx")
            v = self.validation
            if v is None or not v.enabled or v.evaluation_set is None:
                raise ValueError("quantization needs validation enabled with validation.evaluationSet")
        if self.triton is not None and self.triton.tensorrt_fp16 and self.format != "onnx":
            raise ValueError("triton.tensorrtFp16 is only for format onnx")
        if q is not None:
            check_no_traversal(q.output_uri, "quantization.outputUri")
        kind = (
            self.effective_triton().instance_group.kind
            if self.effective_triton().instance_group
            else "KIND_GPU"
        )
        if self.resources is not None and self.resources.gpu == 0 and kind != "KIND_CPU":
            raise ValueError(_GPU_MSG)
        if kind == "KIND_CPU" and (self.format == "tensorrt-plan" or backend == "tensorrt"):
            raise ValueError(_TRT_CPU_MSG)
        ig = self.effective_triton().instance_group
        pod_gpus = self.effective_resources().gpu
        if ig is not None and ig.gpus and max(ig.gpus) >= pod_gpus:
            raise ValueError(f"{_GPU_IDS_MSG} (ids {ig.gpus}, resources.gpu {pod_gpus})")
        unbatched = self.triton is not None and self.triton.max_batch_size == 0
        if unbatched and any(not t.dims for t in (*self.io.inputs, *self.io.outputs)):
            raise ValueError(_NO_BATCH_DIMS_MSG)
        return self

    def effective_backend(self) -> str:
        if self.triton is not None and self.triton.backend:
            return self.triton.backend
        return DEFAULT_BACKEND[self.format]

    def effective_triton(self) -> TritonSpec:
        return self.triton or TritonSpec()

    def effective_resources(self) -> ResourcesSpec:
        return self.resources or ResourcesSpec()

    def effective_validation(self) -> ValidationSpec:
        return self.validation or ValidationSpec()


# --- status -----------------------------------------------------------------------------------

STTModelPhase = Literal["Pending", "Validating", "Quantizing", "Ready", "Failed"]
PHASE_PENDING = "Pending"
PHASE_VALIDATING = "Validating"
PHASE_QUANTIZING = "Quantizing"
PHASE_READY = "Ready"
PHASE_FAILED = "Failed"
STTMODEL_PHASES: tuple[str, ...] = STTModelPhase.__args__  # type: ignore[attr-defined]

# Reasons for STTModel conditions and Events.
REASON_VALIDATION_STARTED = "ValidationStarted"
REASON_VALIDATION_PASSED = "ValidationPassed"
REASON_VALIDATION_FAILED = "ValidationFailed"
REASON_VALIDATION_SKIPPED = "ValidationSkipped"
REASON_VALIDATION_PASSED_WITH_WAIVERS = "ValidationPassedWithWaivers"
REASON_REQUIRED_STEP_SKIPPED = "RequiredStepSkipped"
REASON_QUANTIZATION_STARTED = "QuantizationStarted"
REASON_QUANTIZATION_PASSED = "QuantizationPassed"
REASON_QUANTIZATION_FAILED = "QuantizationFailed"
REASON_QUANTIZATION_DISABLED = "QuantizationDisabled"
REASON_CONFIG_RENDERED = "ConfigRendered"
REASON_RENDER_FAILED = "RenderFailed"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_MODEL_READY = "ModelReady"
REASON_JOB_FAILED = "JobFailed"

StepResult = Literal["passed", "failed", "skipped"]


class ArtifactFile(StatusModel):
    path: str = Field(max_length=1024)
    sha256: Sha256


class ArtifactStatus(StatusModel):
    digest: str | None = Field(default=None, max_length=128)
    size_bytes: int | None = Field(default=None, ge=0)
    files: list[ArtifactFile] = Field(default_factory=list, max_length=1024)


class ValidationStep(StatusModel):
    name: str = Field(max_length=63)
    result: StepResult
    message: ShortText = ""


class ValidationStatus(StatusModel):
    steps: list[ValidationStep] = Field(default_factory=list, max_length=32)
    skipped: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=32)
    """Steps that did not run; they never count as passed."""
    required_steps: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=16)
    """Steps that had to run for this verdict (operator setting + spec.validation.requiredSteps)."""
    waivers: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=16)
    """Checks waived for this model, e.g. DigestNotPinned (no source.sha256)."""
    wer: float | None = None
    cer: float | None = None
    latency_p95_ms: float | None = None
    real_time_factor: float | None = None
    peak_memory_mi_b: float | None = Field(default=None, alias="peakMemoryMiB")
    samples: int | None = Field(default=None, ge=0)
    completed_at: Timestamp | None = None
    job_name: str | None = Field(default=None, max_length=253)


class QuantizationStatus(StatusModel):
    mode: str | None = Field(default=None, max_length=32)
    baseline_wer: float | None = None
    quantized_wer: float | None = None
    wer_increase: float | None = None
    size_bytes: int | None = Field(default=None, ge=0)
    speedup: float | None = None
    output_uri: str | None = Field(default=None, max_length=2048)
    output_digest: str | None = Field(default=None, max_length=128)
    """sha256 of the quantized artifact; pinned in the derived STTModel's source."""
    job_name: str | None = Field(default=None, max_length=253)
    result: StepResult | None = None
    message: ShortText | None = None


class LanguageAnalytics(StatusModel):
    language: str = Field(max_length=71)
    language_pair: str | None = Field(default=None, max_length=71)
    """The model's spec.languagePair, so analytics and `kubectl stt compare` read per pair."""
    wer: float | None = None
    cer: float | None = None
    confidence: float | None = None
    latency_p95_ms: float | None = None
    throughput_rps: float | None = None
    success_rate: float | None = None
    requests: float | None = None
    gpu_utilization: float | None = None
    memory_bytes: float | None = None
    updated_at: Timestamp | None = None


class STTModelStatus(StatusModel):
    phase: STTModelPhase | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = conditions_field()
    artifact: ArtifactStatus | None = None
    validation: ValidationStatus | None = None
    quantization: QuantizationStatus | None = None
    triton_config_map: str | None = Field(default=None, max_length=253)
    quantized_model: str | None = Field(default=None, max_length=253)
    analytics: list[LanguageAnalytics] = Field(default_factory=list, max_length=64)
    message: ShortText | None = None


class STTModel(CustomResource):
    KIND: ClassVar[str] = "STTModel"
    PLURAL: ClassVar[str] = "sttmodels"
    SINGULAR: ClassVar[str] = "sttmodel"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("sttm",)
    PRINTER_COLUMNS: ClassVar[list[dict[str, Any]]] = [
        {"name": "Format", "type": "string", "jsonPath": ".spec.format"},
        {"name": "Language", "type": "string", "jsonPath": ".spec.language"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "WER", "type": "number", "jsonPath": ".status.validation.wer"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    spec: STTModelSpec
    status: STTModelStatus = Field(default_factory=STTModelStatus)
