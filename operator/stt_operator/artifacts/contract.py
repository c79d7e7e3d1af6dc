"""Step 2: the model's real inputs/outputs against the `io` contract of the STTModel spec.

Triton's convention applies: with `maxBatchSize > 0` the declared dims leave out the batch
dimension, so a model input of rank n+1 whose first axis is dynamic matches n declared dims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stt_operator.artifacts.report import StepResult

ROLES = ("audio", "audio-length", "sample-rate", "transcript", "logits", "confidence", "other")
AUDIO_TYPES = ("TYPE_FP32", "TYPE_FP16", "TYPE_INT16")
SAMPLE_RATE_KEYS = ("sample_rate", "sampling_rate", "sampleRate")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str
    dims: tuple[int, ...]
    role: str = "other"
    dynamic_axes: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.name} ({self.data_type} {list(self.dims)})"


@dataclass(frozen=True)
class IOContract:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sample_rate: int = 16000
    vocabulary: tuple[str, ...] = ()
    max_batch_size: int = 8

    def by_role(self, role: str, outputs: bool = False) -> TensorSpec | None:
        return next((t for t in (self.outputs if outputs else self.inputs) if t.role == role), None)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> IOContract:
        """Read `spec.io` (camelCase, as in YAML / `model_dump(by_alias=True)`)."""
        io = spec.get("io") or {}

        def tensors(key: str) -> tuple[TensorSpec, ...]:
            out = []
            for i, item in enumerate(io.get(key) or []):
                for required in ("name", "dataType", "dims"):
                    if required not in item:
                        raise ValueError(f"spec.io.{key}[{i}]: missing {required!r}")
                role = item.get("role", "other")
                if role not in ROLES:
                    raise ValueError(f"spec.io.{key}[{i}].role {role!r}: expected one of {ROLES}")
                out.append(
                    TensorSpec(item["name"], item["dataType"], tuple(int(d) for d in item["dims"]), role)
                )
            return tuple(out)

        triton = spec.get("triton") or {}
        return cls(
            inputs=tensors("inputs"),
            outputs=tensors("outputs"),
            sample_rate=int(io.get("sampleRate") or 16000),
            vocabulary=tuple(io.get("vocabulary") or ()),
            max_batch_size=int(triton.get("maxBatchSize", 8) or 0),
        )


def _onnx_type_map() -> dict[int, str]:
    from onnx import TensorProto as T

    return {
        T.FLOAT: "TYPE_FP32",
        T.FLOAT16: "TYPE_FP16",
        T.DOUBLE: "TYPE_FP64",
        T.INT8: "TYPE_INT8",
        T.INT16: "TYPE_INT16",
        T.INT32: "TYPE_INT32",
        T.INT64: "TYPE_INT64",
        T.UINT8: "TYPE_UINT8",
        T.BOOL: "TYPE_BOOL",
        T.STRING: "TYPE_STRING",
        T.BFLOAT16: "TYPE_BF16",
    }


@dataclass
class ModelSignature:
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


def onnx_signature(path: Path) -> ModelSignature:
    """Graph inputs (minus initializers) and outputs; dims are -1 where symbolic or unknown."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    types = _onnx_type_map()
    initializers = {i.name for i in model.graph.initializer}

    def convert(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        dims: list[int] = []
        dynamic: list[str] = []
        for axis, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(-1)
                dynamic.append(dim.dim_param or f"axis{axis}")
        return TensorSpec(
            value.name,
            types.get(tensor.elem_type, f"ONNX_{tensor.elem_type}"),
            tuple(dims),
            "other",
            tuple(dynamic),
        )

    return ModelSignature(
        inputs=[convert(v) for v in model.graph.input if v.name not in initializers],
        outputs=[convert(v) for v in model.graph.output],
        metadata={p.key: p.value for p in model.metadata_props},
    )


def _dims_problem(
    declared: TensorSpec, actual: TensorSpec, max_batch_size: int, label: str = "model"
) -> str | None:
    model_dims = list(actual.dims)
    if max_batch_size > 0 and len(model_dims) == len(declared.dims) + 1:
        if model_dims[0] not in (-1,) and model_dims[0] < max_batch_size:
            return (
                f"batch axis of {actual.name} is fixed to {model_dims[0]} but triton.maxBatchSize is "
                f"{max_batch_size}"
            )
        model_dims = model_dims[1:]
    if len(model_dims) != len(declared.dims):
        return f"rank differs: spec {declared.describe()} vs {label} {actual.describe()}" + (
            " (the batch axis is implicit when maxBatchSize > 0)" if max_batch_size > 0 else ""
        )
    for axis, (want, have) in enumerate(zip(declared.dims, model_dims, strict=True)):
        if want == -1 and have != -1:
            return (
                f"axis {axis} of {declared.name}: spec declares it dynamic (-1) but the {label} fixes it "
                f"to {have} "
                f"(spec {declared.describe()} vs {label} {actual.describe()})"
            )
        if want != -1 and have not in (-1, want):
            return (
                f"axis {axis} of {declared.name}: spec {want} vs {label} {have} "
                f"(spec {declared.describe()} vs {label} {actual.describe()})"
            )
    return None


def compare(contract: IOContract, signature: ModelSignature, label: str = "model") -> list[str]:
    """Every contradiction between contract and model, each naming both sides."""
    problems: list[str] = []
    for side, declared_list, actual_list in (
        ("input", contract.inputs, signature.inputs),
        ("output", contract.outputs, signature.outputs),
    ):
        actual_by_name = {t.name: t for t in actual_list}
        declared_names = {t.name for t in declared_list}
        model_list = ", ".join(t.describe() for t in actual_list) or "none"
        for declared in declared_list:
            actual = actual_by_name.get(declared.name)
            if actual is None:
                problems.append(
                    f"spec {side} {declared.describe()} not found in the {label}; "
                    f"{label} {side}s: {model_list}"
                )
                continue
            if actual.data_type != declared.data_type:
                problems.append(
                    f"{side} {declared.name}: spec dataType {declared.data_type} "
                    f"vs {label} {actual.data_type}"
                )
            dims = _dims_problem(declared, actual, contract.max_batch_size, label)
            if dims:
                problems.append(f"{side} {declared.name}: {dims}")
        if side == "input":
            for actual in actual_list:
                if actual.name not in declared_names:
                    problems.append(f"{label} input {actual.describe()} is not declared in spec.io.inputs")
    problems.extend(_role_problems(contract, signature, label))
    return problems


def _role_problems(contract: IOContract, signature: ModelSignature, label: str = "model") -> list[str]:
    problems: list[str] = []
    audio = contract.by_role("audio")
    if audio is None:
        problems.append("spec.io.inputs declares no input with role 'audio'")
    elif audio.data_type not in AUDIO_TYPES:
        problems.append(f"audio input {audio.name}: dataType {audio.data_type} is not one of {AUDIO_TYPES}")
    text_outputs = [t for t in contract.outputs if t.role in ("transcript", "logits")]
    if not text_outputs:
        problems.append("spec.io.outputs declares no output with role 'transcript' or 'logits'")
    logits = contract.by_role("logits", outputs=True)
    if logits is not None:
        actual = next((t for t in signature.outputs if t.name == logits.name), None)
        if not contract.vocabulary:
            problems.append(f"logits output {logits.name} needs spec.io.vocabulary to be decoded")
        elif actual is not None and actual.dims and actual.dims[-1] not in (-1, len(contract.vocabulary)):
            problems.append(
                f"logits output {logits.name}: {label} has {actual.dims[-1]} classes but spec.io.vocabulary "
                f"has {len(contract.vocabulary)} tokens"
            )
    for key in SAMPLE_RATE_KEYS:
        value = signature.metadata.get(key)
        if value and value.isdigit() and int(value) != contract.sample_rate:
            problems.append(
                f"sample rate: spec.io.sampleRate {contract.sample_rate} vs {label} metadata {key}={value}"
            )
    return problems


def config_signature(config_path: Path) -> tuple[ModelSignature, int]:
    """Tensors declared by a Triton `config.pbtxt` shipped in the artifact (dims without the
    batch axis, as the spec writes them) and its max_batch_size."""
    from tritonclient.grpc import model_config_pb2 as mc

    from stt_operator.triton.config import parse_config_pbtxt

    config = parse_config_pbtxt(config_path.read_text())

    def convert(t: Any) -> TensorSpec:
        dims = tuple(int(d) for d in t.dims)
        return TensorSpec(t.name, mc.DataType.Name(t.data_type), dims, "other", ())

    signature = ModelSignature(
        inputs=[convert(t) for t in config.input], outputs=[convert(t) for t in config.output]
    )
    return signature, int(config.max_batch_size)


def architecture_step(
    fmt: str | None, model_path: Path | None, contract: IOContract, root: Path | None = None
) -> tuple[StepResult, ModelSignature | None]:
    """Step 2. ONNX is inspected directly; other formats are checked through the
    `config.pbtxt` they ship, when they ship one; otherwise the step says why it cannot run."""
    config = _find_config(root) if fmt != "onnx" and root is not None and model_path is not None else None
    if config is not None:
        return _config_step(config, contract, root)
    if fmt != "onnx" or model_path is None:
        reasons = {
            "python": "a Python model's tensors are defined by its config.pbtxt, and none was shipped",
            "torchscript": "inspecting TorchScript signatures needs torch, not shipped in the validator",
            "pytorch": "a PyTorch state dict has no I/O signature; export to ONNX or TorchScript",
            "tensorflow-savedmodel": "reading SavedModel signatures needs tensorflow, not installed here",
            "tensorrt-plan": "reading a TensorRT engine needs tensorrt and a GPU",
        }
        return StepResult.skipped("architecture", reasons.get(fmt or "", "no model file to inspect")), None
    signature = onnx_signature(model_path)
    tensors = [*signature.inputs, *signature.outputs]
    details = {
        "inputs": [t.describe() for t in signature.inputs],
        "outputs": [t.describe() for t in signature.outputs],
        "dynamicAxes": {t.name: list(t.dynamic_axes) for t in tensors if t.dynamic_axes},
    }
    if not contract.inputs and not contract.outputs:
        return StepResult.failed(
            "architecture", "spec.io declares no inputs or outputs", **details
        ), signature
    problems = compare(contract, signature)
    if problems:
        message = f"{len(problems)} I/O contract mismatch(es): " + "; ".join(problems[:3])
        return StepResult.failed("architecture", message, findings=problems, **details), signature
    return (
        StepResult.passed(
            "architecture",
            f"inputs {', '.join(details['inputs'])}; outputs {', '.join(details['outputs'])} match spec.io",
            **details,
        ),
        signature,
    )


def _find_config(root: Path) -> Path | None:
    if root.is_file():
        return None
    found = sorted(root.rglob("config.pbtxt"), key=lambda p: len(p.parts))
    return found[0] if found else None


def _config_step(config: Path, contract: IOContract, root: Path) -> tuple[StepResult, ModelSignature | None]:
    rel = config.relative_to(root).as_posix()
    try:
        signature, max_batch = config_signature(config)
    except ValueError as exc:
        return StepResult.failed("architecture", str(exc), findings=[str(exc)]), None
    # config.pbtxt dims already leave the batch axis out, exactly like spec.io.
    unbatched = IOContract(contract.inputs, contract.outputs, contract.sample_rate, contract.vocabulary, 0)
    problems = compare(unbatched, signature, rel)
    if contract.max_batch_size != max_batch:
        problems.append(f"triton.maxBatchSize {contract.max_batch_size} vs {rel} max_batch_size {max_batch}")
    details = {
        "inputs": [t.describe() for t in signature.inputs],
        "outputs": [t.describe() for t in signature.outputs],
    }
    if problems:
        message = f"{len(problems)} I/O contract mismatch(es) with {rel}: " + "; ".join(problems[:3])
        return StepResult.failed("architecture", message, findings=problems, **details), signature
    return StepResult.passed("architecture", f"tensors declared in {rel} match spec.io", **details), signature


def contract_dict(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    """The `io` block for tensors (used to write a spec for a generated or quantized model)."""

    def one(t: TensorSpec) -> dict[str, Any]:
        return {"name": t.name, "dataType": t.data_type, "dims": list(t.dims), "role": t.role}

    return {"inputs": [one(t) for t in inputs], "outputs": [one(t) for t in outputs]}
