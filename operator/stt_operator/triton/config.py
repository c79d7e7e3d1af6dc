"""Render a Triton `config.pbtxt` from the `triton` and `io` parts of an STTModel spec.

The config is built as a `model_config_pb2.ModelConfig` message (Triton's own schema), so a
field name or enum typo fails here rather than at model load in the cluster, and printed with
protobuf text_format. Pure: no I/O.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf import text_format

from stt_operator.triton.spec import DATA_TYPES, ROLES, resolve_backend

_MODEL_CONFIG_MODULE = "tritonclient.grpc.model_config_pb2"


def _triton_model_config_schema() -> ModuleType:
    """Triton's generated `model_config_pb2`, without the gRPC client package around it.

    Importing it the usual way runs `tritonclient.grpc`'s package init, which loads grpcio and
    the inference service stubs (about 14 MB of resident memory the operator never uses). The
    module needs only protobuf, so it is loaded from its file under its usual name: a later
    `import tritonclient.grpc` in the same process finds it in `sys.modules` and does not
    register the schema twice."""
    if _MODEL_CONFIG_MODULE in sys.modules:
        return sys.modules[_MODEL_CONFIG_MODULE]
    package = importlib.util.find_spec("tritonclient")
    if package is None or not package.submodule_search_locations:
        raise ImportError("tritonclient is not installed (Triton's model configuration schema)")
    path = Path(next(iter(package.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location(_MODEL_CONFIG_MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load Triton's model configuration schema from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODEL_CONFIG_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODEL_CONFIG_MODULE]
        raise
    return module


mc: Any = _triton_model_config_schema()

# The file Triton loads from `<model>/<version>/` for each backend.
DEFAULT_MODEL_FILENAME: dict[str, str] = {
    "onnxruntime": "model.onnx",
    "pytorch": "model.pt",
    "tensorrt": "model.plan",
    "python": "model.py",
}
TRT_WORKSPACE_BYTES = 1 << 30
# The config parameter naming the ONNX file the Python-backend runner loads.
ONNX_FILE_PARAMETER = "onnx_file"


class ConfigError(ValueError):
    """A spec that cannot be rendered into a valid Triton model configuration."""


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or mapping access, so pydantic models, dataclasses and dicts all work."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        # Raw resource bodies use the camelCase wire names.
        if name in obj:
            return obj[name]
        head, *rest = name.split("_")
        return obj.get(head + "".join(w.capitalize() for w in rest), default)
    return getattr(obj, name, default)


def _tensor(t: Any, where: str, max_batch_size: int) -> tuple[str, int, list[int]]:
    name = _get(t, "name")
    if not name:
        raise ConfigError(f"{where}.name: must be a non-empty string")
    data_type = _get(t, "data_type")
    if data_type not in DATA_TYPES:
        raise ConfigError(f"{where}.dataType: {data_type!r} is not one of {list(DATA_TYPES)}")
    role = _get(t, "role", "other") or "other"
    if role not in ROLES:
        raise ConfigError(f"{where}.role: {role!r} is not one of {list(ROLES)}")
    dims = list(_get(t, "dims", []) or [])
    if not dims and max_batch_size == 0:
        raise ConfigError(f"{where}.dims: a model without batching needs at least one dimension")
    for d in dims:
        if not isinstance(d, int) or isinstance(d, bool) or d == 0 or d < -1:
            raise ConfigError(f"{where}.dims: {dims} must be positive integers or -1 (dynamic)")
    return name, mc.DataType.Value(data_type), dims


def _warmup(inputs: Sequence[Any], sample_rate: int, max_batch_size: int) -> mc.ModelWarmup:
    """One warm-up request of zeros: dynamic dims become one second of audio (or 1).

    Optional inputs are left out: a zero audio length, say, would warm up nothing."""
    warm = mc.ModelWarmup(name="zeros", batch_size=1 if max_batch_size > 0 else 0)
    for t in inputs:
        if _get(t, "optional", False):
            continue
        role = _get(t, "role", "other")
        dims = [(sample_rate if role == "audio" else 1) if d == -1 else d for d in _get(t, "dims", [])]
        warm.inputs[_get(t, "name")].CopyFrom(
            mc.ModelWarmup.Input(data_type=mc.DataType.Value(_get(t, "data_type")), dims=dims, zero_data=True)
        )
    return warm


def _version_policy(vp: Any) -> mc.ModelVersionPolicy | None:
    if vp is None:
        return None
    latest, all_, specific = _get(vp, "latest"), _get(vp, "all"), _get(vp, "specific")
    chosen = [n for n, v in (("latest", latest), ("all", all_), ("specific", specific)) if v is not None]
    if len(chosen) > 1:
        raise ConfigError(f"triton.versionPolicy: set exactly one of latest/all/specific, got {chosen}")
    if latest is not None:
        n = int(_get(latest, "num_versions", 1))
        if n < 1:
            raise ConfigError(f"triton.versionPolicy.latest.numVersions: must be >= 1, got {n}")
        return mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=n))
    if specific is not None:
        versions = [int(v) for v in _get(specific, "versions", [])]
        if not versions or any(v < 1 for v in versions):
            raise ConfigError(f"triton.versionPolicy.specific.versions: need versions >= 1, got {versions}")
        return mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(versions=versions))
    if all_ is not None and all_ is not False:
        return mc.ModelVersionPolicy(all=mc.ModelVersionPolicy.All())
    return None


def build_model_config(
    name: str,
    triton: Any,
    io: Any,
    *,
    model_format: str | None = None,
) -> mc.ModelConfig:
    """The `ModelConfig` message for model `name` from `spec.triton` and `spec.io`."""
    if not name:
        raise ConfigError("name: the Triton model name must be non-empty")
    backend = resolve_backend(model_format, _get(triton, "backend"))
    max_batch_size = int(_get(triton, "max_batch_size", 8) if triton is not None else 8)
    if max_batch_size < 0:
        raise ConfigError(f"triton.maxBatchSize: must be >= 0, got {max_batch_size}")

    cfg = mc.ModelConfig(name=name, backend=backend, max_batch_size=max_batch_size)
    cfg.default_model_filename = DEFAULT_MODEL_FILENAME[backend]

    inputs, outputs = list(_get(io, "inputs", []) or []), list(_get(io, "outputs", []) or [])
    if not inputs:
        raise ConfigError("io.inputs: at least one input tensor is required")
    if not outputs:
        raise ConfigError("io.outputs: at least one output tensor is required")
    seen: set[str] = set()
    for kind, tensors in (("inputs", inputs), ("outputs", outputs)):
        for i, t in enumerate(tensors):
            tname, dtype, dims = _tensor(t, f"io.{kind}[{i}]", max_batch_size)
            if tname in seen:
                raise ConfigError(f"io.{kind}[{i}].name: {tname!r} is used twice")
            seen.add(tname)
            optional = bool(_get(t, "optional", False))
            if optional and kind == "outputs":
                raise ConfigError(f"io.outputs[{i}].optional: only inputs may be optional")
            target = cfg.input.add() if kind == "inputs" else cfg.output.add()
            target.name, target.data_type = tname, dtype
            target.dims.extend(dims)
            if optional:
                target.optional = True

    dyn = _get(triton, "dynamic_batching")
    if dyn is not None and _get(dyn, "enabled", True):
        if max_batch_size == 0:
            raise ConfigError("triton.dynamicBatching: needs triton.maxBatchSize > 0")
        preferred = [int(b) for b in _get(dyn, "preferred_batch_sizes", []) or []]
        bad = [b for b in preferred if b < 1 or b > max_batch_size]
        if bad:
            raise ConfigError(
                f"triton.dynamicBatching.preferredBatchSizes: {bad} not in 1..maxBatchSize={max_batch_size}"
            )
        delay = int(_get(dyn, "max_queue_delay_microseconds", 0) or 0)
        if delay < 0:
            raise ConfigError(f"triton.dynamicBatching.maxQueueDelayMicroseconds: must be >= 0, got {delay}")
        cfg.dynamic_batching.CopyFrom(
            mc.ModelDynamicBatching(preferred_batch_size=preferred, max_queue_delay_microseconds=delay)
        )

    group = _get(triton, "instance_group")
    kind = _get(group, "kind", "KIND_GPU") or "KIND_GPU"
    if kind not in ("KIND_GPU", "KIND_CPU"):
        raise ConfigError(f"triton.instanceGroup.kind: {kind!r} is not KIND_GPU or KIND_CPU")
    count = int(_get(group, "count", 1) or 1)
    if count < 1:
        raise ConfigError(f"triton.instanceGroup.count: must be >= 1, got {count}")
    gpus = [int(g) for g in _get(group, "gpus", None) or []]
    if gpus and kind == "KIND_CPU":
        raise ConfigError("triton.instanceGroup.gpus: GPU ids make no sense with kind KIND_CPU")
    if any(g < 0 for g in gpus):
        raise ConfigError(f"triton.instanceGroup.gpus: GPU ids must be >= 0, got {gpus}")
    cfg.instance_group.add(
        count=count, kind=mc.ModelInstanceGroup.Kind.Value(kind), gpus=gpus, name=f"{name}-{kind.lower()}"
    )

    policy = _version_policy(_get(triton, "version_policy"))
    if policy is not None:
        cfg.version_policy.CopyFrom(policy)

    if _get(triton, "warmup", False):
        sample_rate = int(_get(io, "sample_rate", 16000) or 16000)
        cfg.model_warmup.append(_warmup(inputs, sample_rate, max_batch_size))

    if _get(triton, "tensorrt_fp16", False):
        if backend != "onnxruntime":
            raise ConfigError(
                f"triton.tensorrtFp16: the TensorRT FP16 accelerator is an ONNX Runtime option; "
                f"backend is {backend!r}"
            )
        if kind != "KIND_GPU":
            raise ConfigError("triton.tensorrtFp16: needs triton.instanceGroup.kind KIND_GPU")
        accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accel.parameters["precision_mode"] = "FP16"
        accel.parameters["max_workspace_size_bytes"] = str(TRT_WORKSPACE_BYTES)

    if model_format == "onnx" and backend == "python":
        # ONNX on the Python backend: the built-in runner (models/onnx_runner) loads this file;
        # the materializer lays the runner's model.py beside it (a Triton image without the
        # onnxruntime backend serves ONNX this way). A user parameter below may rename it.
        cfg.parameters[ONNX_FILE_PARAMETER].string_value = DEFAULT_MODEL_FILENAME["onnxruntime"]
    for key, value in sorted((_get(triton, "parameters", {}) or {}).items()):
        if not isinstance(key, str) or not key:
            raise ConfigError(f"triton.parameters: key {key!r} must be a non-empty string")
        cfg.parameters[key].string_value = str(value)
    return cfg


def render_config_pbtxt(name: str, triton: Any, io: Any, *, model_format: str | None = None) -> str:
    """The `config.pbtxt` text for model `name`."""
    return text_format.MessageToString(build_model_config(name, triton, io, model_format=model_format))


def parse_config_pbtxt(text: str) -> mc.ModelConfig:
    """Parse a `config.pbtxt` with Triton's schema; raises ConfigError naming the problem."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"config.pbtxt: {exc}") from exc


def with_instance_kind(config_text: str, kind: str) -> str:
    """`config_text` with every instance group of kind `kind` (KIND_CPU or KIND_GPU).

    Serving a KIND_GPU model on a pod without GPUs (a ModelDeployment's `resources.gpu: 0`)
    needs KIND_CPU instances, or Triton fails the load. GPU ids and GPU-only execution
    accelerators cannot be rewritten: the operator refuses such models before it gets here
    (`builders.revision.gpu_required_reason`), and this raises ConfigError naming them."""
    if kind not in ("KIND_GPU", "KIND_CPU"):
        raise ConfigError(f"instance kind {kind!r} is not KIND_GPU or KIND_CPU")
    cfg = parse_config_pbtxt(config_text)
    if kind == "KIND_CPU":
        if cfg.backend == "tensorrt" or cfg.platform == "tensorrt_plan":
            raise ConfigError("instance kind KIND_CPU: Triton's TensorRT backend runs only on a GPU")
        if any(g.gpus for g in cfg.instance_group):
            raise ConfigError("instance kind KIND_CPU: triton.instanceGroup.gpus pins GPU ids")
        if len(cfg.optimization.execution_accelerators.gpu_execution_accelerator):
            raise ConfigError("instance kind KIND_CPU: triton.tensorrtFp16 needs a GPU")
    value = mc.ModelInstanceGroup.Kind.Value(kind)
    if not cfg.instance_group:  # Triton's default is a GPU instance where GPUs exist
        cfg.instance_group.add(count=1, kind=value, name=f"{cfg.name}-{kind.lower()}")
    for group in cfg.instance_group:
        group.kind = value
    return text_format.MessageToString(cfg)


def render_for_model(name: str, spec: Any) -> str:
    """`config.pbtxt` from a whole STTModel spec (pydantic model or mapping)."""
    return render_config_pbtxt(
        name, _get(spec, "triton"), _get(spec, "io"), model_format=_get(spec, "format")
    )
