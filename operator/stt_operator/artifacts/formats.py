"""Step 1: what the artifact is, judged by its content, not its name.

Nothing here loads a model: ONNX is parsed as protobuf without external data, zip-based
PyTorch files are read as a zip index, pickles and HDF5 are recognised by magic bytes, and a
Triton `model.py` is parsed with `ast` (never imported).
"""

from __future__ import annotations

import ast
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from stt_operator.artifacts.report import StepResult

FORMATS = ("onnx", "torchscript", "pytorch", "tensorflow-savedmodel", "tensorrt-plan", "python")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib")
MAX_SCAN_DEPTH = 4


@dataclass
class Detected:
    """The detected format and the file (or directory, for SavedModel) that holds the model."""

    format: str | None
    path: Path | None
    message: str
    problems: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)


def _head(path: Path, n: int = 64) -> bytes:
    with path.open("rb") as handle:
        return handle.read(n)


def is_pickle(head: bytes) -> bool:
    # Protocol 2+ pickles start with PROTO (0x80) and the protocol number.
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def is_hdf5(head: bytes) -> bool:
    return head.startswith(b"\x89HDF\r\n\x1a\n")


def is_tensorrt_plan(head: bytes) -> bool:
    # Serialized engines carry a 4-byte tag near the start ("ptrt" in older, "ftrt" in newer
    # releases); without the tensorrt package that tag is the only content signal there is.
    return head[:4] == b"ptrt" or b"ftrt" in head[:32]


def zip_kind(path: Path) -> str | None:
    """'torchscript' (constants.pkl / code/), 'pytorch' (data.pkl), 'keras' (config.json) or None."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "pytorch"
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return "keras"
    return None


def onnx_problem(path: Path) -> str | None:
    """None if the file parses as an ONNX ModelProto with a graph, else why not."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:
        return f"{path.name}: not a valid ONNX protobuf (truncated or corrupt): {exc}"
    if not model.HasField("graph") or not model.graph.node:
        return f"{path.name}: ONNX protobuf without a graph"
    if model.ir_version <= 0:
        return f"{path.name}: ONNX model without an ir_version"
    return None


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto serialisers write ir_version (field 1, varint => tag 0x08) first.
    return head[:1] == b"\x08" and len(head) > 2


def python_model_problem(path: Path) -> str | None:
    """None if `model.py` defines `class TritonPythonModel` with an `execute` method."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as exc:
        return f"{path.name}: not valid Python source: {exc}"
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "TritonPythonModel":
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            if "execute" not in methods:
                return f"{path.name}: TritonPythonModel has no execute() method"
            return None
    return f"{path.name}: no class TritonPythonModel"


def classify_file(path: Path) -> str | None:
    """The format of one file by its content, or None when it is no model file."""
    if path.name == "model.py":
        return "python"
    try:
        head = _head(path)
    except OSError:
        return None
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return zip_kind(path)
    if is_pickle(head):
        return "pytorch" if path.suffix.lower() in PICKLE_SUFFIXES else "pickle"
    if is_hdf5(head):
        return "keras"
    if path.suffix.lower() in (".plan", ".engine") and is_tensorrt_plan(head):
        return "tensorrt-plan"
    if path.suffix.lower() == ".onnx" or _looks_like_onnx(head):
        return "onnx" if path.suffix.lower() == ".onnx" or onnx_problem(path) is None else None
    return None


def _candidates(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    found: list[Path] = []
    base_depth = len(root.parts)
    for path in sorted(root.rglob("*")):
        if len(path.parts) - base_depth > MAX_SCAN_DEPTH or path.is_symlink() or not path.is_file():
            continue
        found.append(path)
    return found


def detect(root: Path) -> Detected:
    """Find the model in a file or a (Triton model repository style) directory."""
    if root.is_dir():
        for saved in sorted(root.rglob("saved_model.pb")):
            return Detected(
                "tensorflow-savedmodel", saved.parent, f"TensorFlow SavedModel at {saved.parent.name}/"
            )
    by_format: dict[str, list[Path]] = {}
    for path in _candidates(root):
        kind = classify_file(path)
        if kind:
            by_format.setdefault(kind, []).append(path)
    # A Python model often ships an ONNX file it runs itself: model.py wins then.
    for fmt in ("python", "onnx", "torchscript", "pytorch", "tensorrt-plan", "keras", "pickle"):
        if fmt in by_format:
            path = by_format[fmt][0]
            rel = path.relative_to(root).as_posix() if root.is_dir() else path.name
            return Detected(fmt, path, f"{fmt} model at {rel}")
    return Detected(None, None, f"no recognisable model file in {root.name}")


def format_step(root: Path, declared: str | None) -> tuple[StepResult, Detected]:
    """Step 1: detect, check the detected file is well formed, compare with spec.format."""
    detected = detect(root)
    if detected.format is None or detected.path is None:
        return StepResult.failed("format", detected.message, findings=[detected.message]), detected
    problem: str | None = None
    if detected.format == "onnx":
        problem = onnx_problem(detected.path)
    elif detected.format == "python":
        problem = python_model_problem(detected.path)
    elif detected.format == "tensorrt-plan" and not is_tensorrt_plan(_head(detected.path)):
        problem = f"{detected.path.name}: no TensorRT engine tag in the header"
    elif detected.format in ("keras", "pickle"):
        problem = f"{detected.path.name}: a {detected.format} file is not a format Triton serves ({FORMATS})"
    if problem:
        return StepResult.failed("format", problem, findings=[problem], detected=detected.format), detected
    if declared and declared != detected.format:
        message = (
            f"spec.format is {declared!r} but the content of {detected.path.name} is {detected.format!r}"
        )
        return StepResult.failed("format", message, findings=[message], detected=detected.format), detected
    return StepResult.passed("format", detected.message, detected=detected.format), detected
