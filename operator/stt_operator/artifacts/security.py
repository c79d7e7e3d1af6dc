"""Step 4: is the artifact safe to load? Decided without loading it.

- Pickles (`.pt/.pth/.bin/.ckpt/.pkl`, the `*.pkl` entries of PyTorch/TorchScript zips, NumPy
  object arrays): `picklescan` lists every global the pickle would import (it disassembles,
  never unpickles) and rates it with its denylist; on top of that an allowlist: any global
  that is not a known tensor-rebuilding helper or one of `validation.security.
  allowedPickleGlobals` fails the step, so an unknown class is as unwelcome as `os.system`.
- NumPy `.npy`/`.npz`: the header is parsed (numpy.lib.format); an object dtype is flagged and
  its pickle payload scanned.
- ONNX external data: each tensor's `location` must be relative, stay inside the model
  directory after `realpath`, and be neither a symlink nor a hard link; only then does
  `onnx.checker.check_model(path, full_check=True)` run.
- TensorFlow SavedModel: risky ops (`ReadFile`, `WriteFile`, `PyFunc`…) are found as NodeDef
  `op` fields in `saved_model.pb` without tensorflow: the protobuf encodes them as tag 0x12,
  a length byte and the name, which is searched in a memory map.
- Keras: `Lambda` layers (arbitrary Python) in `.keras` configs, `.h5` model configs and
  `keras_metadata.pb`.
- Triton Python models run their code by design; calls that spawn processes or evaluate
  strings are still flagged.
- Any symlink leaving the model directory, and device files, fail the step.
"""

from __future__ import annotations

import ast
import fnmatch
import io
import json
import mmap
import os
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from stt_operator.artifacts.formats import PICKLE_SUFFIXES, is_hdf5, is_pickle
from stt_operator.artifacts.report import StepResult

# Globals a tensor checkpoint legitimately needs. Everything else must be allowed in the spec.
DEFAULT_ALLOWED_GLOBALS: tuple[str, ...] = (
    "collections.OrderedDict",
    "collections.defaultdict",
    "builtins.set",
    "builtins.frozenset",
    "builtins.slice",
    "builtins.complex",
    "builtins.bytearray",
    "_codecs.encode",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._tensor._rebuild_from_type_v2",
    "torch.*Storage",
    "torch.storage.UntypedStorage",
    "torch.Size",
    "torch.float*",
    "torch.bfloat16",
    "torch.int*",
    "torch.uint8",
    "torch.bool",
    "torch.complex*",
    "torch.device",
    "torch.serialization._get_layout",
    "torch.strided",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.dtypes.*DType",
)

TF_RISKY_OPS = (
    "ReadFile",
    "WriteFile",
    "PyFunc",
    "PyFuncStateless",
    "EagerPyFunc",
    "MatchingFiles",
    "ShellCommand",
)
PYTHON_RISKY_CALLS = (
    "os.system",
    "os.popen",
    "os.exec*",
    "os.spawn*",
    "subprocess.*",
    "eval",
    "exec",
    "compile",
    "__import__",
    "pickle.load*",
    "socket.*",
)
ZIP_PICKLE_SUFFIXES = (".pkl",)
# `.bin` is also what raw tensors (ONNX external data) are called: only its content decides.
SUFFIX_IS_PICKLE = tuple(s for s in PICKLE_SUFFIXES if s != ".bin")


@dataclass
class SecurityFinding:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def is_allowed(global_name: str, allowed: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(global_name, pattern) for pattern in allowed)


# --- pickles ------------------------------------------------------------------------------


def scan_pickle_stream(stream: IO[bytes], label: str, allowed: tuple[str, ...]) -> list[SecurityFinding]:
    """Globals of every pickle in `stream` against the allowlist; picklescan does the parsing."""
    from picklescan.scanner import SafetyLevel, scan_pickle_bytes

    findings = []
    problem = _pickle_parse_error(stream)
    if problem:
        # Fail closed: what cannot be disassembled cannot be vouched for.
        findings.append(SecurityFinding(label, f"pickle could not be parsed (corrupt or crafted): {problem}"))
    result = scan_pickle_bytes(stream, label, multiple_pickles=True)
    if result.scan_err and not result.globals and not problem:
        findings.append(SecurityFinding(label, "pickle could not be parsed (corrupt or crafted)"))
    seen: set[str] = set()
    for g in result.globals:
        name = f"{g.module}.{g.name}"
        if name in seen:
            continue
        seen.add(name)
        dangerous = g.safety == SafetyLevel.Dangerous
        if dangerous or not is_allowed(name, allowed):
            why = "dangerous global (picklescan)" if dangerous else "global not in the allowlist"
            findings.append(
                SecurityFinding(label, f"{why}: {name} would be imported and may run code when loaded")
            )
    return findings


def _pickle_parse_error(stream: IO[bytes]) -> str | None:
    """Disassemble the first pickle with the standard library (no execution); the reason if
    it is malformed. The stream is rewound for the scanner."""
    import pickletools

    start = stream.tell()
    try:
        for _ in pickletools.genops(stream):
            pass
    except (ValueError, EOFError) as exc:
        return str(exc)[:200]
    finally:
        stream.seek(start)
    return None


def _scan_npy(stream: IO[bytes], label: str, allowed: tuple[str, ...]) -> list[SecurityFinding]:
    import numpy.lib.format as npformat

    try:
        version = npformat.read_magic(stream)
        reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        _shape, _fortran, dtype = reader(stream)
    except ValueError as exc:
        return [SecurityFinding(label, f"not a valid .npy header: {exc}")]
    if not dtype.hasobject:
        return []
    # The payload of an object array is a pickle: report the dtype, then what it imports.
    findings = [
        SecurityFinding(
            label, f"NumPy object array (dtype {dtype}) is stored as a pickle; needs allow_pickle"
        )
    ]
    return findings + scan_pickle_stream(stream, label, allowed)


def _scan_zip(path: Path, rel: str, allowed: tuple[str, ...]) -> list[SecurityFinding]:
    findings: list[SecurityFinding] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                label = f"{rel}!{info.filename}"
                if info.filename.endswith(ZIP_PICKLE_SUFFIXES):
                    with zf.open(info) as member:
                        findings += scan_pickle_stream(member, label, allowed)
                elif info.filename.endswith(".npy"):
                    with zf.open(info) as member:
                        findings += _scan_npy(member, label, allowed)
    except zipfile.BadZipFile as exc:
        findings.append(SecurityFinding(rel, f"corrupt zip container: {exc}"))
    return findings


def scan_file_pickles(path: Path, rel: str, allowed: tuple[str, ...]) -> list[SecurityFinding]:
    with path.open("rb") as handle:
        head = handle.read(8)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        if path.suffix.lower() in (*PICKLE_SUFFIXES, ".npz", ".pt2", ".zip", ".keras") or path.suffix == "":
            return _scan_zip(path, rel, allowed)
        return []
    if head.startswith(b"\x93NUMPY"):
        with path.open("rb") as handle:
            return _scan_npy(handle, rel, allowed)
    if is_pickle(head) or path.suffix.lower() in SUFFIX_IS_PICKLE:
        with path.open("rb") as handle:
            return scan_pickle_stream(handle, rel, allowed)
    return []


# --- ONNX external data ------------------------------------------------------------------


def _onnx_tensors(model: object) -> list:
    """Every TensorProto that may carry external data: initializers and tensor attributes,
    in the main graph and all subgraphs."""
    from onnx import AttributeProto

    tensors = []
    stack = [model.graph]  # type: ignore[attr-defined]
    while stack:
        graph = stack.pop()
        tensors.extend(graph.initializer)
        tensors.extend(s.values for s in graph.sparse_initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR:
                    tensors.append(attr.t)
                elif attr.type == AttributeProto.TENSORS:
                    tensors.extend(attr.tensors)
                elif attr.type == AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)
    return tensors


def external_data_findings(model_path: Path) -> list[SecurityFinding]:
    import onnx
    from onnx import TensorProto

    rel = model_path.name
    model = onnx.load(str(model_path), load_external_data=False)
    base = model_path.parent.resolve()
    findings: list[SecurityFinding] = []
    for tensor in _onnx_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        where = f"tensor {tensor.name!r} external data location {location!r}"
        if not location:
            findings.append(SecurityFinding(rel, f"tensor {tensor.name!r} is external but has no location"))
            continue
        if (
            os.path.isabs(location)
            or location.startswith(("\\", "/"))
            or (len(location) > 1 and location[1] == ":")
        ):
            findings.append(SecurityFinding(rel, f"{where} is an absolute path"))
            continue
        candidate = model_path.parent / location
        if ".." in Path(location.replace("\\", "/")).parts:
            findings.append(SecurityFinding(rel, f"{where} uses '..' and points outside the model directory"))
            continue
        if any(p.is_symlink() for p in _path_chain(model_path.parent, candidate)):
            findings.append(SecurityFinding(rel, f"{where} is (or passes through) a symbolic link"))
            continue
        real = Path(os.path.realpath(candidate))
        if not real.is_relative_to(base):
            findings.append(SecurityFinding(rel, f"{where} resolves to {real}, outside the model directory"))
            continue
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            findings.append(SecurityFinding(rel, f"{where} does not exist"))
            continue
        if not stat.S_ISREG(st.st_mode):
            findings.append(SecurityFinding(rel, f"{where} is not a regular file"))
            continue
        if st.st_nlink > 1:
            findings.append(
                SecurityFinding(
                    rel, f"{where} is a hard link ({st.st_nlink} links) and may alias a file elsewhere"
                )
            )
            continue
        offset, length = int(info.get("offset", 0) or 0), int(info.get("length", 0) or 0)
        if offset + length > st.st_size:
            findings.append(
                SecurityFinding(
                    rel, f"{where}: offset {offset} + length {length} beyond its {st.st_size} bytes"
                )
            )
    if findings:
        return findings
    try:
        onnx.checker.check_model(str(model_path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as exc:
        first = " ".join(str(exc).split())[:300]
        findings.append(SecurityFinding(rel, f"onnx.checker.check_model(full_check=True) failed: {first}"))
    return findings


def _path_chain(base: Path, target: Path) -> list[Path]:
    """`target` and each of its parents up to (not including) `base`."""
    chain = [target]
    parent = target.parent
    while parent != base and base in parent.parents:
        chain.append(parent)
        parent = parent.parent
    return chain


# --- TensorFlow / Keras ------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tf_risky_ops(path: Path) -> list[str]:
    """Risky op names used by NodeDefs in a GraphDef/SavedModel protobuf (field 2 = `op`)."""
    if path.stat().st_size == 0:
        return []
    found = []
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for op in TF_RISKY_OPS:
            needle = b"\x12" + _varint(len(op)) + op.encode()
            index = data.find(needle)
            # The next byte must end the field (a new tag), not continue a longer name.
            while index != -1:
                end = index + len(needle)
                if end >= len(data) or not (chr(data[end]).isalnum() or data[end] == ord("_")):
                    found.append(op)
                    break
                index = data.find(needle, index + 1)
    return found


LAMBDA_MARKERS = (b'"class_name": "Lambda"', b'"class_name":"Lambda"')


def _file_contains(path: Path, needles: tuple[bytes, ...]) -> bool:
    if path.stat().st_size == 0:
        return False
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return any(data.find(n) != -1 for n in needles)


def _json_has_lambda(node: object) -> bool:
    if isinstance(node, dict):
        if node.get("class_name") == "Lambda":
            return True
        return any(_json_has_lambda(v) for v in node.values())
    if isinstance(node, list):
        return any(_json_has_lambda(v) for v in node)
    return False


def keras_lambda(path: Path) -> bool:
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as zf, zf.open("config.json") as cfg:
                return _json_has_lambda(json.load(io.TextIOWrapper(cfg, encoding="utf-8")))
        except (KeyError, zipfile.BadZipFile, json.JSONDecodeError):
            return False
    return _file_contains(path, LAMBDA_MARKERS)


# --- Python models -----------------------------------------------------------------------


def python_risky_calls(source: str) -> list[str]:
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if not name:
            continue
        head, _, rest = name.partition(".")
        full = aliases.get(head, head) + (f".{rest}" if rest else "")
        if any(fnmatch.fnmatchcase(full, p) for p in PYTHON_RISKY_CALLS):
            found.append(f"{full} (line {node.lineno})")
    return found


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


# --- the step ----------------------------------------------------------------------------


def _tree_findings(root: Path) -> list[SecurityFinding]:
    """Symlinks leaving the tree and special files anywhere in it."""
    findings = []
    base = root.resolve()
    for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
        rel = path.relative_to(root).as_posix() if root.is_dir() else path.name
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            real = Path(os.path.realpath(path))
            if not real.is_relative_to(base):
                findings.append(
                    SecurityFinding(rel, f"symbolic link points outside the model directory ({real})")
                )
        elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            findings.append(SecurityFinding(rel, "device, FIFO or socket file in the model directory"))
    return findings


def security_step(
    root: Path, fmt: str | None, model_path: Path | None, allowed_globals: Iterable[str] = ()
) -> StepResult:
    allowed = (*DEFAULT_ALLOWED_GLOBALS, *allowed_globals)
    findings = _tree_findings(root)
    files = (
        [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    )
    scanned = {"pickle": 0, "onnx": 0, "tensorflow": 0, "keras": 0, "python": 0}
    for path in files:
        rel = path.relative_to(root).as_posix() if root.is_dir() else path.name
        suffix = path.suffix.lower()
        with path.open("rb") as handle:
            head = handle.read(16)
        if (
            suffix in (*SUFFIX_IS_PICKLE, ".npy", ".npz")
            or (suffix == ".bin" and head[:2] == b"PK")
            or is_pickle(head)
            or head.startswith(b"\x93NUMPY")
            or (head[:2] == b"PK" and fmt in ("pytorch", "torchscript"))
        ):
            scanned["pickle"] += 1
            findings += scan_file_pickles(path, rel, allowed)
        if suffix == ".onnx" and (fmt == "onnx" or path == model_path):
            scanned["onnx"] += 1
            try:
                findings += [
                    SecurityFinding(f"{rel}" if f.path == path.name else f.path, f.message)
                    for f in external_data_findings(path)
                ]
            except Exception as exc:  # a corrupt protobuf: format step says so; refuse here too
                findings.append(SecurityFinding(rel, f"ONNX file cannot be parsed for inspection: {exc}"))
        if path.name in ("saved_model.pb",) or (suffix == ".pb" and fmt == "tensorflow-savedmodel"):
            scanned["tensorflow"] += 1
            for op in tf_risky_ops(path):
                findings.append(
                    SecurityFinding(rel, f"TensorFlow graph uses risky op {op} (file system / Python access)")
                )
        if suffix in (".keras", ".h5", ".hdf5") or path.name == "keras_metadata.pb" or is_hdf5(head):
            scanned["keras"] += 1
            if keras_lambda(path):
                findings.append(
                    SecurityFinding(rel, "Keras Lambda layer: arbitrary Python code runs on load")
                )
        if suffix == ".py":
            scanned["python"] += 1
            try:
                risky = python_risky_calls(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError) as exc:
                findings.append(SecurityFinding(rel, f"Python source cannot be parsed: {exc}"))
                continue
            findings += [SecurityFinding(rel, f"calls {call}") for call in risky]
    counts = {k: v for k, v in scanned.items() if v}
    if findings:
        texts = [str(f) for f in findings]
        message = f"{len(findings)} finding(s): " + "; ".join(texts[:3]) + (" …" if len(texts) > 3 else "")
        return StepResult.failed("security", message, findings=texts, scanned=counts)
    what = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no loadable content"
    return StepResult.passed(
        "security", f"no findings ({what} file(s) scanned, nothing loaded)", scanned=counts
    )
