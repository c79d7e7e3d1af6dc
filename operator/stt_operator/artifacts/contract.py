"""Step 2: the model's real inputs/outputs against the `io` contract of the STTModel spec.

Triton's convention applies: with `maxBatchSize > 0` the declared dims leave out the batch
dimension, so a model input of rank n+1 whose first axis is dynamic matches n declared dims.
"""

from __future__ import annotations

import re
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
    from stt_operator.triton.config import mc, parse_config_pbtxt

    config = parse_config_pbtxt(config_path.read_text())

    def convert(t: Any) -> TensorSpec:
        dims = tuple(int(d) for d in t.dims)
        return TensorSpec(t.name, mc.DataType.Name(t.data_type), dims, "other", ())

    signature = ModelSignature(
        inputs=[convert(t) for t in config.input], outputs=[convert(t) for t in config.output]
    )
    return signature, int(config.max_batch_size)


MAX_TORCHSCRIPT_CODE_BYTES = 16 * 1024**2
MAX_SAVED_MODEL_BYTES = 256 * 1024**2


def savedmodel_signature(model_dir: Path, key: str = "serving_default") -> ModelSignature:
    """Inputs/outputs of a SavedModel's serving signature, read from `saved_model.pb` with the
    protobuf subset of artifacts/tfproto.py (TensorFlow is neither needed nor run). The meta
    graph tagged `serve` wins; dims are -1 where unknown. Raises ValueError when absent."""
    from stt_operator.artifacts.tfproto import parse_saved_model, signature_io

    pb = model_dir / "saved_model.pb" if model_dir.is_dir() else model_dir
    if pb.stat().st_size > MAX_SAVED_MODEL_BYTES:
        raise ValueError(f"saved_model.pb is over {MAX_SAVED_MODEL_BYTES} bytes; signature not read")
    model = parse_saved_model(pb)
    graphs = sorted(model.meta_graphs, key=lambda g: "serve" not in g.meta_info_def.tags)
    for graph in graphs:
        io = signature_io(graph, key)
        if io is None:
            continue
        inputs, outputs = io

        def convert(t: Any) -> TensorSpec:
            dims = (-1,) if t.dims is None else tuple(d if d >= 0 else -1 for d in t.dims)
            return TensorSpec(t.name, t.data_type, dims, "other", ())

        return ModelSignature([convert(t) for t in inputs], [convert(t) for t in outputs])
    keys = sorted({e.key for g in model.meta_graphs for e in g.signature_def})
    raise ValueError(f"saved_model.pb has no {key!r} signature (signatures: {keys or 'none'})")


@dataclass(frozen=True)
class TorchScriptForward:
    """The top-level module's `forward` as TorchScript serialised it in the archive's code/."""

    inputs: tuple[tuple[str, str], ...]  # (argument name, annotation)
    outputs: tuple[str, ...] | None  # annotations of the returned tensors; None: not a tuple/tensor
    module: str


def torchscript_forward(path: Path) -> TorchScriptForward:
    """Read, never run: the top-level class comes from the first GLOBAL of `data.pkl`
    (disassembled with pickletools), its source from `code/<module path>.py` (parsed with
    `ast`). TorchScript code records argument names and types, not shapes or dtypes."""
    import ast
    import pickletools
    import zipfile

    from stt_operator.artifacts.security import BoundedReader

    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        data_pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if data_pkl is None:
            raise ValueError(f"{path.name}: no data.pkl in the TorchScript archive")
        prefix = data_pkl[: -len("data.pkl")]
        module = name = None
        strings: list[str] = []
        with zf.open(data_pkl) as raw:
            for opcode, arg, _pos in pickletools.genops(BoundedReader(raw, 64 * 1024**2, data_pkl)):
                if opcode.name == "GLOBAL":
                    module, _, name = str(arg).partition(" ")
                    break
                if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                    strings.append(str(arg))
                if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    module, name = strings[-2], strings[-1]
                    break
        if not module or not name or not module.startswith("__torch__"):
            raise ValueError(f"{path.name}: data.pkl does not start with a TorchScript module class")
        code_name = f"{prefix}code/{module.replace('.', '/')}.py"
        if code_name not in names:
            raise ValueError(f"{path.name}: {code_name} (the code of {module}.{name}) is missing")
        info = zf.getinfo(code_name)
        if info.file_size > MAX_TORCHSCRIPT_CODE_BYTES:
            raise ValueError(f"{code_name} is over {MAX_TORCHSCRIPT_CODE_BYTES} bytes")
        with zf.open(info) as raw:
            source = BoundedReader(raw, MAX_TORCHSCRIPT_CODE_BYTES, code_name).read(info.file_size)
    tree = ast.parse(source.decode("utf-8"))
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    forward = cls and next(
        (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "forward"), None
    )
    if forward is None:
        raise ValueError(f"{code_name}: class {name} has no forward()")
    args = [(a.arg, ast.unparse(a.annotation) if a.annotation else "") for a in forward.args.args[1:]]
    returns = forward.returns
    outputs: tuple[str, ...] | None = None
    if returns is not None:
        text = ast.unparse(returns)
        if isinstance(returns, ast.Subscript) and ast.unparse(returns.value) in ("Tuple", "typing.Tuple"):
            elements = returns.slice.elts if isinstance(returns.slice, ast.Tuple) else [returns.slice]
            outputs = tuple(ast.unparse(e) for e in elements)
        elif text in ("Tensor", "torch.Tensor"):
            outputs = (text,)
    return TorchScriptForward(tuple(args), outputs, f"{module}.{name}")


_INDEXED = re.compile(r"^.+__(\d+)$")


def _torchscript_problems(contract: IOContract, forward: TorchScriptForward) -> list[str]:
    """Arity and names against Triton's PyTorch backend conventions: an input is named like
    the forward argument or `<name>__<index>`; outputs are matched by `<name>__<index>` or
    by order."""
    problems: list[str] = []
    arg_names = [a for a, _ in forward.inputs]
    if len(contract.inputs) != len(arg_names):
        problems.append(
            f"spec.io.inputs declares {len(contract.inputs)} tensor(s) but {forward.module}.forward "
            f"takes {len(arg_names)} ({', '.join(arg_names) or 'none'})"
        )
    for declared in contract.inputs:
        match = _INDEXED.match(declared.name)
        if declared.name in arg_names:
            continue
        if match and int(match.group(1)) < len(arg_names):
            continue
        problems.append(
            f"spec input {declared.name} is neither a forward() argument ({', '.join(arg_names)}) "
            f"nor named <name>__<index> below {len(arg_names)}"
        )
    for _a, annotation in forward.inputs:
        if annotation and "Tensor" not in annotation:
            problems.append(f"forward() argument annotated {annotation}: Triton passes tensors only")
    if forward.outputs is None:
        problems.append(f"{forward.module}.forward returns no Tensor or Tuple of Tensors")
    else:
        if len(contract.outputs) != len(forward.outputs):
            problems.append(
                f"spec.io.outputs declares {len(contract.outputs)} tensor(s) but forward() returns "
                f"{len(forward.outputs)} ({', '.join(forward.outputs)})"
            )
        for declared in contract.outputs:
            match = _INDEXED.match(declared.name)
            if match and int(match.group(1)) >= len(forward.outputs):
                problems.append(f"spec output {declared.name}: forward() has no output {match.group(1)}")
    return problems


def _torchscript_step(model_path: Path, contract: IOContract) -> tuple[StepResult, ModelSignature | None]:
    try:
        forward = torchscript_forward(model_path)
    except (ValueError, SyntaxError, UnicodeDecodeError, EOFError, KeyError) as exc:
        message = f"TorchScript signature unreadable: {exc}"
        return StepResult.failed("architecture", message, findings=[message]), None
    details = {
        "module": forward.module,
        "inputs": [f"{a}: {t}" for a, t in forward.inputs],
        "outputs": list(forward.outputs or ()),
        "checked": "arity and names (TorchScript code records no shapes or dtypes)",
    }
    problems = _torchscript_problems(contract, forward) + _role_problems(
        contract, ModelSignature([], []), "model"
    )
    if problems:
        message = f"{len(problems)} I/O contract mismatch(es): " + "; ".join(problems[:3])
        return StepResult.failed("architecture", message, findings=problems, **details), None
    return (
        StepResult.passed(
            "architecture",
            f"{forward.module}.forward({', '.join(details['inputs'])}) -> "
            f"{', '.join(details['outputs'])} matches spec.io by arity and names "
            "(shapes and dtypes are not recorded in TorchScript code)",
            **details,
        ),
        None,
    )


def _savedmodel_step(model_path: Path, contract: IOContract) -> tuple[StepResult, ModelSignature | None]:
    from google.protobuf.message import DecodeError

    try:
        signature = savedmodel_signature(model_path)
    except (ValueError, DecodeError, OSError) as exc:
        message = f"SavedModel signature unreadable: {exc}"
        return StepResult.failed("architecture", message, findings=[message]), None
    return signature_verdict(
        contract, signature, "serving_default signature", "serving_default ", signature="serving_default"
    )


def signature_verdict(
    contract: IOContract, found: ModelSignature, source: str = "model", prefix: str = "", **extra: Any
) -> tuple[StepResult, ModelSignature]:
    """The architecture step for a signature read from the artifact (ONNX graph, SavedModel
    signature, TensorRT engine) against spec.io: passed, or failed with every mismatch found."""
    details = {
        "inputs": [t.describe() for t in found.inputs],
        "outputs": [t.describe() for t in found.outputs],
        **extra,
    }
    problems = compare(contract, found, source)
    if problems:
        message = f"{len(problems)} I/O contract mismatch(es): " + "; ".join(problems[:3])
        return StepResult.failed("architecture", message, findings=problems, **details), found
    summary = f"{prefix}inputs {', '.join(details['inputs'])}; outputs {', '.join(details['outputs'])}"
    return StepResult.passed("architecture", f"{summary} match spec.io", **details), found


def architecture_step(
    fmt: str | None, model_path: Path | None, contract: IOContract, root: Path | None = None
) -> tuple[StepResult, ModelSignature | None]:
    """Step 2. ONNX is inspected directly, a SavedModel through its serving signature, a
    TorchScript module through the forward() its archive's code/ declares, a TensorRT plan
    through the engine's bindings where TensorRT and a GPU are present (none of them is
    run); other formats through the `config.pbtxt` they ship, when they ship one; otherwise
    the step says why it cannot run."""
    if fmt == "tensorflow-savedmodel" and model_path is not None:
        return _savedmodel_step(model_path, contract)
    if fmt == "torchscript" and model_path is not None:
        return _torchscript_step(model_path, contract)
    config = _find_config(root) if fmt != "onnx" and root is not None and model_path is not None else None
    if fmt == "tensorrt-plan" and model_path is not None and model_path.is_file():
        from stt_operator.artifacts.trtplan import tensorrt_step  # imports this module

        def shipped() -> StepResult:
            assert config is not None and root is not None
            return _config_step(config, contract, root)[0]

        return tensorrt_step(model_path, contract, shipped_config=shipped if config is not None else None)
    if config is not None:
        return _config_step(config, contract, root)
    if fmt != "onnx" or model_path is None:
        reasons = {
            "python": "a Python model's tensors are defined by its config.pbtxt, and none was shipped",
            "pytorch": "a PyTorch state dict has no I/O signature; export to ONNX or TorchScript",
            "tensorrt-plan": "no TensorRT plan file to inspect",
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
    return signature_verdict(contract, signature, dynamicAxes=details["dynamicAxes"])


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
