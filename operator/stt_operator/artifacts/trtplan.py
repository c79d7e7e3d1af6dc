"""Step 2 for a TensorRT plan: the engine's I/O tensors against the `io` contract, not run.

A plan is a serialized engine that only TensorRT itself can read, and TensorRT deserializes
an engine only with a CUDA GPU present (of the architecture, and with the TensorRT version,
that built it). So the check runs where the validator has the `tensorrt` Python package and a
GPU; anywhere else the step is skipped with the reason, which the STTModel's status lists and
`validation.requiredSteps: [architecture]` turns into a failure. Deserializing builds the
engine's description only: no inference is run and no plugin library is loaded by us.

Everything but the TensorRT calls is pure (`Binding`, `signature_from_bindings`,
`tensorrt_step` with an injected runtime loader) and tested without TensorRT; the real path
is tested by the `gpu`-marked test in tests/unit/artifacts/test_trtplan.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stt_operator.artifacts.contract import IOContract, ModelSignature, TensorSpec, signature_verdict
from stt_operator.artifacts.report import StepResult

# TensorRT DataType names -> Triton data types (what spec.io declares).
TRT_DATA_TYPES: dict[str, str] = {
    "FLOAT": "TYPE_FP32",
    "HALF": "TYPE_FP16",
    "BF16": "TYPE_BF16",
    "INT8": "TYPE_INT8",
    "UINT8": "TYPE_UINT8",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "BOOL": "TYPE_BOOL",
}
# A plan is read whole into memory to deserialize it; bigger ones are refused, not loaded.
MAX_PLAN_BYTES = 4 * 1024**3


class RuntimeUnavailable(Exception):
    """TensorRT cannot read plans here (no package, no GPU); the message says which."""


@dataclass(frozen=True)
class Binding:
    """One I/O tensor of an engine as TensorRT describes it."""

    name: str
    is_input: bool
    dtype: str  # TensorRT's DataType name, e.g. FLOAT
    shape: tuple[int, ...]  # -1 where dynamic; the batch axis included (explicit batch)


def signature_from_bindings(bindings: list[Binding]) -> ModelSignature:
    def convert(b: Binding) -> TensorSpec:
        dynamic = tuple(f"axis{i}" for i, d in enumerate(b.shape) if d < 0)
        dtype = TRT_DATA_TYPES.get(b.dtype, f"TRT_{b.dtype}")
        return TensorSpec(b.name, dtype, tuple(int(d) if d >= 0 else -1 for d in b.shape), "other", dynamic)

    return ModelSignature(
        inputs=[convert(b) for b in bindings if b.is_input],
        outputs=[convert(b) for b in bindings if not b.is_input],
    )


@dataclass(frozen=True)
class TensorRTRuntime:
    module: Any  # the imported `tensorrt`
    runtime: Any  # a tensorrt.Runtime


def load_runtime() -> TensorRTRuntime:
    """Import TensorRT and start a runtime; RuntimeUnavailable says why not."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]  # optional: GPU validator images
    except ImportError as exc:  # also a package whose native libraries are missing
        raise RuntimeUnavailable(
            f"the tensorrt Python package is not installed in the validator image ({exc})"
        ) from exc
    try:
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # CUDA initialisation failures surface as various errors
        raise RuntimeUnavailable(f"TensorRT could not start (no usable CUDA GPU?): {exc}") from exc
    if runtime is None:
        raise RuntimeUnavailable("TensorRT could not start a runtime (no usable CUDA GPU)")
    return TensorRTRuntime(trt, runtime)


def engine_bindings(rt: TensorRTRuntime, data: bytes) -> list[Binding]:
    """The engine's I/O tensors; ValueError when TensorRT cannot deserialize the plan."""
    trt = rt.module
    engine = rt.runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise ValueError(
            "TensorRT could not deserialize the plan: not an engine, or built by another TensorRT"
            " version or for another GPU architecture"
        )
    bindings = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        bindings.append(
            Binding(
                name=name,
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                dtype=engine.get_tensor_dtype(name).name,
                shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
            )
        )
    return bindings


def tensorrt_step(
    model_path: Path,
    contract: IOContract,
    *,
    loader: Callable[[], TensorRTRuntime] = load_runtime,
    shipped_config: Callable[[], StepResult] | None = None,
) -> tuple[StepResult, ModelSignature | None]:
    """The architecture step for format tensorrt-plan.

    `shipped_config` checks a config.pbtxt shipped next to the plan: without TensorRT its
    contradictions still fail the step, but its agreement is no proof (it is a declaration,
    not the engine), so the step stays skipped."""
    try:
        rt = loader()
    except RuntimeUnavailable as exc:
        reason = f"TensorRT plan bindings not checked: {exc}"
        if shipped_config is not None:
            declared = shipped_config()
            if declared.result == "failed":
                return declared, None
            reason += "; the shipped config.pbtxt agrees with spec.io, but it is not the engine"
        return StepResult.skipped("architecture", reason), None
    size = model_path.stat().st_size
    if size > MAX_PLAN_BYTES:
        message = f"TensorRT plan is {size} bytes, over the {MAX_PLAN_BYTES}-byte limit for reading it"
        return StepResult.failed("architecture", message, findings=[message]), None
    try:
        bindings = engine_bindings(rt, model_path.read_bytes())
    except ValueError as exc:
        return StepResult.failed("architecture", str(exc), findings=[str(exc)]), None
    signature = signature_from_bindings(bindings)
    version = str(getattr(rt.module, "__version__", ""))
    return signature_verdict(contract, signature, "TensorRT engine", "engine ", tensorrt=version)
