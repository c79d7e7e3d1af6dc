"""Step 4: is the artifact safe to load? Decided without loading it.

- Pickles, found by content whatever their name (protocol 2+ header, a protocol 0/1 stream
  that disassembles to STOP, every zip member that is one, NumPy object arrays):
  `picklescan` lists every global the pickle would import (it disassembles,
  never unpickles) and rates it with its denylist; on top of that an allowlist: any global
  that is not a known tensor-rebuilding helper or one of `validation.security.
  allowedPickleGlobals` fails the step, so an unknown class is as unwelcome as `os.system`.
- NumPy `.npy`/`.npz`: the header is parsed (numpy.lib.format); an object dtype is flagged and
  its pickle payload scanned.
- ONNX external data: each tensor's `location` must be relative, stay inside the model
  directory after `realpath`, and be neither a symlink nor a hard link; only then does
  `onnx.checker.check_model(path, full_check=True)` run.
- TensorFlow SavedModel: `saved_model.pb` is parsed with the protobuf subset schema of
  artifacts/tfproto.py (no tensorflow) and every NodeDef of the graph and its function library
  is checked: ops that run Python or touch files (TF_RISKY_OPS) anywhere, the V2 checkpoint ops
  outside the model's own saver. As a fallback for any `.pb`, op names are also found as NodeDef
  `op` fields (tag 0x12, a length byte and the name) in a memory map.
- Keras: `Lambda` layers (arbitrary Python) in `.keras` configs, `.h5` model configs and
  `keras_metadata.pb`.
- Triton Python models run their code by design; calls that spawn processes, evaluate
  strings, import dynamically or load pickles (`torch.load`, `numpy.load(allow_pickle=True)`)
  are still flagged, from the `ast` (the code is never imported).
- Any symlink leaving the model directory, hard links, and device files / FIFOs / sockets
  fail the step.
- Everything read into memory is bounded (`ScanLimits`, derived from the Job's memory): a
  pickle that claims a 4 GiB byte string is refused, not allocated.
"""

from __future__ import annotations

import ast
import fnmatch
import io
import json
import mmap
import os
import re
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from stt_operator.artifacts.formats import PICKLE_SUFFIXES, is_hdf5, is_pickle
from stt_operator.artifacts.report import StepResult

DEFAULT_MAX_READ_BYTES = 512 * 1024**2


class ScanLimitExceeded(Exception):
    """A scanned stream wanted more bytes in memory than the limits allow."""


@dataclass(frozen=True)
class ScanLimits:
    """How much of one scanned stream may be held in memory at once."""

    max_read_bytes: int = DEFAULT_MAX_READ_BYTES

    @classmethod
    def from_memory(cls, memory_bytes: int | None) -> ScanLimits:
        # A quarter of the container's memory: the scanner, Python and onnx share the rest.
        if not memory_bytes:
            return cls()
        return cls(max_read_bytes=max(16 * 1024**2, memory_bytes // 4))


class BoundedReader(io.RawIOBase):
    """A read-only view of a binary stream that refuses to hand out more than `limit` bytes in
    total. pickletools reads a declared argument length in one `read(n)`; refusing `n` here,
    before the underlying stream allocates it, is what keeps a crafted BINBYTES8 or a bomb
    member from filling memory. (No BufferedReader on top: it would allocate `n` itself.)"""

    def __init__(self, raw: IO[bytes], limit: int, label: str) -> None:
        super().__init__()
        self.raw, self.limit, self.label = raw, limit, label
        self.used = 0

    def _refuse(self) -> ScanLimitExceeded:
        return ScanLimitExceeded(
            f"{self.label}: needs more than {self.limit} bytes in memory to inspect "
            "(scan limit from the Job's memory; decompression bomb or crafted length?)"
        )

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.raw.seekable()

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = self.raw.seek(offset, whence)
        if whence == io.SEEK_SET:
            self.used = 0  # a rewind starts a new pass; each pass is bounded on its own
        elif whence == io.SEEK_CUR:
            self.used = max(0, self.used + offset)
        return position

    def read(self, n: int | None = -1) -> bytes:  # type: ignore[override]
        left = self.limit - self.used
        if n is None or n < 0:
            data = self.raw.read(left + 1)
            if len(data) > left:
                raise self._refuse()
        elif n > left:
            raise self._refuse()
        else:
            data = self.raw.read(n)
        self.used += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        # Text opcodes of protocol 0 end at a newline; a line longer than the budget is refused.
        left = self.limit - self.used
        line = self.raw.readline(left + 1)
        if len(line) > left:
            raise self._refuse()
        self.used += len(line)
        return line


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

# Op names as TensorFlow registers them (REGISTER_OP in tensorflow/core/ops: io_ops.cc,
# script_ops.cc, debug_ops.cc, array_ops.cc, summary_ops.cc, dataset_ops.cc). A served graph
# has no business with any of them: they read, write, list or memory-map files, write
# wherever `debug_urls` points, or run Python.
TF_RISKY_OPS = (
    # Python
    "PyFunc",
    "PyFuncStateless",
    "EagerPyFunc",
    # reading / listing / memory-mapping files
    "ReadFile",
    "MatchingFiles",
    "ImmutableConst",
    "WholeFileReader",
    "WholeFileReaderV2",
    "TextLineReader",
    "TextLineReaderV2",
    "FixedLengthRecordReader",
    "FixedLengthRecordReaderV2",
    "TFRecordReader",
    "TFRecordReaderV2",
    "LMDBReader",
    "Restore",
    "RestoreSlice",
    # writing files
    "WriteFile",
    "Save",
    "SaveSlices",
    "DatasetToTFRecord",
    "CreateSummaryFileWriter",
    "DebugIdentity",
    "DebugIdentityV2",
    "DebugNanCount",
    "DebugNumericSummary",
)
# The V2 checkpoint ops every SavedModel's own saver uses (its restore runs at load time with
# the loader's path). Outside the saver they write or read arbitrary paths, so they are
# flagged only where the protobuf shows they are not the saver's (see tf_graph_findings).
TF_SAVER_OPS = ("SaveV2", "RestoreV2", "MergeV2Checkpoints")
PYTHON_RISKY_CALLS = (
    "os.system",
    "os.popen",
    "os.exec*",
    "os.spawn*",
    "os.posix_spawn*",
    "os.fork*",
    "pty.spawn",
    "subprocess.*",
    "eval",
    "exec",
    "compile",
    "__import__",
    "builtins.eval",
    "builtins.exec",
    "builtins.__import__",
    "importlib.import_module",
    "importlib.__import__",
    "importlib.util.spec_from_file_location",
    "importlib.util.module_from_spec",
    "importlib.machinery.SourceFileLoader",
    "runpy.*",
    "pickle.load*",
    "pickle.Unpickler",
    "_pickle.load*",
    "cPickle.load*",
    "dill.load*",
    "cloudpickle.load*",
    "joblib.load",
    "shelve.open",
    "marshal.load*",
    "torch.load",
    "torch.jit.load",
    "torch.package.PackageImporter",
    "numpy.load",
    "pandas.read_pickle",
    "ctypes.*",
    "socket.*",
)
# Calls risky only with one keyword: numpy.load runs pickles only when allow_pickle=True.
PYTHON_RISKY_WITH_KEYWORD = {"numpy.load": ("allow_pickle", True)}
# Modules whose mere import in a model.py is worth a finding (dynamic code loading).
PYTHON_RISKY_IMPORTS = ("importlib", "marshal", "runpy")
# Names whose mere mention reaches the import machinery or builtins without a plain call.
PYTHON_RISKY_NAMES = ("__import__", "__builtins__", "__loader__")
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


def scan_pickle_stream(
    stream: IO[bytes], label: str, allowed: tuple[str, ...], limits: ScanLimits | None = None
) -> list[SecurityFinding]:
    """Globals of every pickle in `stream` against the allowlist; picklescan does the parsing.

    Reads go through a BoundedReader: a stream needing more memory than `limits` allow is a
    finding (fail closed), never an allocation."""
    from picklescan.scanner import SafetyLevel, scan_pickle_bytes

    limits = limits or ScanLimits()
    bounded = BoundedReader(stream, limits.max_read_bytes, label)
    findings = []
    try:
        problem = _pickle_parse_error(bounded)
        if problem:
            # Fail closed: what cannot be disassembled cannot be vouched for.
            findings.append(
                SecurityFinding(label, f"pickle could not be parsed (corrupt or crafted): {problem}")
            )
        result = scan_pickle_bytes(bounded, label, multiple_pickles=True)
    except ScanLimitExceeded as exc:
        return [SecurityFinding(label, f"not inspected: {exc}")]
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
    except (ValueError, EOFError, UnicodeDecodeError, OverflowError) as exc:
        return str(exc)[:200]
    finally:
        stream.seek(start)
    return None


# Opcodes a protocol 0/1 pickle can start with (MARK, GLOBAL, INST, EMPTY_*, NONE, scalars).
_PICKLE_V0_STARTS = frozenset(b"(c}])NIJKLFGSTUVX\x88\x89")


# Opcodes that bring a callable into a pickle, and those that call one: code runs on load
# only when both occur (REDUCE runs before STOP is ever reached, so STOP proves nothing).
_IMPORT_OPS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"})
_CALL_OPS = frozenset({"REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"})
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _imports(opcode_name: str, arg: object) -> bool:
    if opcode_name in ("GLOBAL", "INST"):
        # The text forms carry "module name": only importable identifiers count, so a text
        # file that starts with "class Model(...)" is not read as GLOBAL.
        module, _, name = str(arg).partition(" ")
        return bool(_DOTTED.match(module) and _DOTTED.match(name))
    return opcode_name in _IMPORT_OPS


# Length-prefixed arguments (pickletools' TAKEN_FROM_ARGUMENT* markers): width, signed.
_LENGTH_PREFIX = {-2: (1, False), -3: (4, True), -4: (4, False), -5: (8, False)}
_MAX_TEXT_ARG = 64 * 1024
_SNIFF_MAX_OPS = 1_000_000


def _walk_opcodes(stream: IO[bytes], size: int):  # type: ignore[no-untyped-def]
    """(opcode name, text argument or None) of a pickle stream, like pickletools.genops but
    never reading a length-prefixed argument: it is skipped with a seek, so a claimed 4 GiB
    BINBYTES8 costs nothing and cannot push what follows out of sight. Text arguments
    (GLOBAL, INST, protocol-0 numbers and strings) are read, bounded, and validated with
    pickletools' own readers. Raises ValueError / EOFError on what is not a pickle."""
    import pickletools

    code2op = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
    while code := stream.read(1):
        op = code2op.get(code)
        if op is None:
            raise ValueError(f"not a pickle opcode: {code!r}")
        arg = op.arg
        if arg is None:
            yield op.name, None
        elif arg.n >= 0:
            if len(stream.read(arg.n)) < arg.n:
                raise EOFError("truncated argument")
            yield op.name, None
        elif arg.n == -1:  # UP_TO_NEWLINE, one line or a "module\nname\n" pair
            lines = [stream.readline(_MAX_TEXT_ARG) for _ in range(2 if arg.name.endswith("_pair") else 1)]
            if not all(line.endswith(b"\n") for line in lines):
                raise ValueError("unterminated text argument")
            yield op.name, arg.reader(io.BytesIO(b"".join(lines)))
        else:
            width, signed = _LENGTH_PREFIX[arg.n]
            raw = stream.read(width)
            if len(raw) < width:
                raise EOFError("truncated length")
            length = int.from_bytes(raw, "little", signed=signed)
            if length < 0 or stream.tell() + length > size:
                raise EOFError("argument longer than the stream")
            stream.seek(length, io.SEEK_CUR)
            yield op.name, None


def sniff_pickle(head: bytes, open_stream, size: int) -> bool:  # type: ignore[no-untyped-def]
    """Is this content a pickle, whatever the file is called? Protocol 2+ carries a PROTO
    header; without one the stream is walked opcode by opcode (never loaded), across
    consecutive pickles (joblib and others read several), and counts as one when it imports
    a callable and calls it — what running code on load takes — or stays well formed for
    a million opcodes (fail closed). Raw tensor bytes that happen to disassemble ("N.") and
    text are not mistaken for one: random bytes break within a few opcodes."""
    if is_pickle(head):
        return True
    if not head or head[0] not in _PICKLE_V0_STARTS:
        return False
    imported = called = False
    with open_stream() as stream:
        try:
            for count, (name, arg) in enumerate(_walk_opcodes(stream, size), 1):
                imported = imported or _imports(name, arg)
                called = called or (imported and name in _CALL_OPS)
                if (imported and called) or count >= _SNIFF_MAX_OPS:
                    return True
        except (ValueError, EOFError, UnicodeDecodeError, OverflowError, OSError):
            return False
    return False


def _scan_npy(
    stream: IO[bytes], label: str, allowed: tuple[str, ...], limits: ScanLimits | None = None
) -> list[SecurityFinding]:
    import numpy.lib.format as npformat

    try:
        version = npformat.read_magic(stream)
        reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        _shape, _fortran, dtype = reader(stream)
    except (ValueError, SyntaxError, TypeError) as exc:
        return [SecurityFinding(label, f"not a valid .npy header: {exc}")]
    if not dtype.hasobject:
        return []
    # The payload of an object array is a pickle: report the dtype, then what it imports.
    findings = [
        SecurityFinding(
            label, f"NumPy object array (dtype {dtype}) is stored as a pickle; needs allow_pickle"
        )
    ]
    return findings + scan_pickle_stream(stream, label, allowed, limits)


TORCHSCRIPT_CLASS_GLOBALS = "__torch__.*"
ZIP_READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
MAX_ZIP_DEPTH = 2


def _scan_zip_file(
    zf: zipfile.ZipFile, rel: str, allowed: tuple[str, ...], limits: ScanLimits, depth: int
) -> list[SecurityFinding]:
    """Every member judged by its content (a pickle, a NumPy array or a nested zip), not by
    its name; members that cannot be read (unknown compression, encryption) are findings."""
    findings: list[SecurityFinding] = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        label = f"{rel}!{info.filename}"
        if info.compress_type not in ZIP_READABLE_METHODS:
            findings.append(
                SecurityFinding(
                    label,
                    f"compression method {info.compress_type} cannot be inspected (and PyTorch "
                    "cannot read it either)",
                )
            )
            continue
        if info.flag_bits & 0x1:
            findings.append(SecurityFinding(label, "encrypted zip member cannot be inspected"))
            continue
        with zf.open(info) as member:
            head = member.read(16)

        def opener(info: zipfile.ZipInfo = info) -> IO[bytes]:
            return zf.open(info)

        size = info.file_size

        if head.startswith(b"\x93NUMPY"):
            with zf.open(info) as member:
                findings += _scan_npy(member, label, allowed, limits)
        elif head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            if depth >= MAX_ZIP_DEPTH:
                findings.append(SecurityFinding(label, f"zip nested deeper than {MAX_ZIP_DEPTH} levels"))
                continue
            if info.file_size > limits.max_read_bytes:
                findings.append(
                    SecurityFinding(label, f"nested zip of {info.file_size} bytes is over the scan limit")
                )
                continue
            with zf.open(info) as member:
                data = BoundedReader(member, limits.max_read_bytes, label).read(info.file_size)
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as inner:
                    findings += _scan_zip_file(inner, label, allowed, limits, depth + 1)
            except zipfile.BadZipFile as exc:
                findings.append(SecurityFinding(label, f"corrupt nested zip: {exc}"))
        elif info.filename.endswith(ZIP_PICKLE_SUFFIXES) or sniff_pickle(head, opener, size):
            with zf.open(info) as member:
                findings += scan_pickle_stream(member, label, allowed, limits)
    return findings


def _scan_zip(
    path: Path, rel: str, allowed: tuple[str, ...], limits: ScanLimits | None = None
) -> list[SecurityFinding]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if any(n.endswith("constants.pkl") for n in names) and any("code/" in n for n in names):
                # TorchScript: `__torch__.*` globals name classes compiled from the archive's own
                # code/ by torch.jit (TorchScript, no Python import); nothing else is widened.
                allowed = (*allowed, TORCHSCRIPT_CLASS_GLOBALS)
            return _scan_zip_file(zf, rel, allowed, limits or ScanLimits(), 1)
    except (zipfile.BadZipFile, EOFError, zlib_error()) as exc:
        return [SecurityFinding(rel, f"corrupt zip container: {exc}")]
    except ScanLimitExceeded as exc:
        return [SecurityFinding(rel, f"not inspected: {exc}")]


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def content_kind(path: Path) -> str | None:
    """'zip', 'npy' or 'pickle' by the bytes of `path`, else None."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if sniff_pickle(head, lambda: path.open("rb"), path.stat().st_size):
        return "pickle"
    return None


def scan_file_pickles(
    path: Path, rel: str, allowed: tuple[str, ...], limits: ScanLimits | None = None
) -> list[SecurityFinding]:
    kind = content_kind(path)
    if kind == "zip":
        return _scan_zip(path, rel, allowed, limits)
    if kind == "npy":
        with path.open("rb") as handle:
            return _scan_npy(handle, rel, allowed, limits)
    if kind == "pickle" or path.suffix.lower() in SUFFIX_IS_PICKLE:
        with path.open("rb") as handle:
            return scan_pickle_stream(handle, rel, allowed, limits)
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


def tf_graph_findings(path: Path, limits: ScanLimits | None = None) -> list[str]:
    """Risky ops in every meta graph of a SavedModel, parsed with the subset schema of
    artifacts/tfproto.py: TF_RISKY_OPS anywhere, TF_SAVER_OPS outside the model's own saver.
    A file that does not parse, or is too large to parse within the memory limits (parsed
    messages take a few times the file's size), is a finding itself (fail closed)."""
    from google.protobuf.message import DecodeError

    from stt_operator.artifacts.tfproto import ops_outside_saver, parse_saved_model

    limit = (limits or ScanLimits()).max_read_bytes // 4
    size = path.stat().st_size
    if size > limit:
        return [
            f"saved_model.pb is {size} bytes, over the {limit}-byte graph inspection limit "
            "(from the Job's memory); its graph was not inspected"
        ]
    try:
        model = parse_saved_model(path)
    except (DecodeError, RecursionError, ValueError) as exc:
        return [f"saved_model.pb does not parse as a SavedModel protobuf ({exc})"]
    found = []
    for meta_graph in model.meta_graphs:
        for where, op in ops_outside_saver(meta_graph):
            if op in TF_RISKY_OPS or (op in TF_SAVER_OPS and not where.startswith("saver:")):
                found.append(f"TensorFlow graph uses risky op {op} ({where.removeprefix('saver:')})")
    return sorted(set(found))


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
    """Risky calls, dynamic imports and pickle loading in Python source, from its syntax tree
    (parsed, never imported or run). Names are resolved through the file's imports, so
    `from torch import load as l; l(x)` reads as `torch.load`."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.partition(".")[0]
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    aliases[top] = top
                if a.name.partition(".")[0] in PYTHON_RISKY_IMPORTS:
                    found.append(f"import {a.name} (dynamic code loading; line {node.lineno})")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if node.module.partition(".")[0] in PYTHON_RISKY_IMPORTS:
                found.append(f"from {node.module} import … (dynamic code loading; line {node.lineno})")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in PYTHON_RISKY_NAMES and not _is_call_target(tree, node):
            found.append(f"{node.id} referenced (line {node.lineno})")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if not name:
            continue
        head, _, rest = name.partition(".")
        full = aliases.get(head, head) + (f".{rest}" if rest else "")
        full = _canonical(full)
        if full in ("getattr", "builtins.getattr") and _getattr_risky(node):
            found.append(f"getattr(…, {node.args[1].value!r}) (line {node.lineno})")  # type: ignore[attr-defined]
            continue
        if not any(fnmatch.fnmatchcase(full, p) for p in PYTHON_RISKY_CALLS):
            continue
        keyword = PYTHON_RISKY_WITH_KEYWORD.get(full)
        if keyword and not _keyword_may_be(node, *keyword):
            continue
        found.append(f"{full} (line {node.lineno})")
    return found


def _canonical(name: str) -> str:
    """Common module aliases written the way the lists spell them."""
    for short, long in (("np.", "numpy."), ("pd.", "pandas."), ("posix.", "os.")):
        if name.startswith(short):
            return long + name[len(short) :]
    return name


def _is_call_target(tree: ast.AST, name: ast.Name) -> bool:
    return any(isinstance(n, ast.Call) and n.func is name for n in ast.walk(tree))


def _getattr_risky(node: ast.Call) -> bool:
    """getattr(obj, "system") and the like: a risky attribute fetched by a literal name."""
    if len(node.args) < 2 or not isinstance(node.args[1], ast.Constant):
        return False
    attr = node.args[1].value
    if not isinstance(attr, str):
        return False
    return any(
        fnmatch.fnmatchcase(attr, p.rpartition(".")[2]) for p in PYTHON_RISKY_CALLS if "*" not in p
    ) or attr in ("load", "loads", "system", "popen")


def _keyword_may_be(node: ast.Call, keyword: str, value: object) -> bool:
    """True unless the call visibly leaves `keyword` at a safe value (absent or a literal
    other than `value`); `**kwargs` counts as possibly set."""
    for kw in node.keywords:
        if kw.arg is None:
            return True
        if kw.arg == keyword:
            return not (isinstance(kw.value, ast.Constant) and kw.value.value != value)
    return False


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


# --- the step ----------------------------------------------------------------------------


def tree_findings(root: Path) -> list[SecurityFinding]:
    """Symlinks leaving the tree, hard links, and special files anywhere in it. Walks with
    lstat and never follows a link, so a FIFO or device is reported, never opened."""
    findings = []
    base = root.resolve()
    entries = [root]
    if root.is_dir() and not root.is_symlink():
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            entries += [Path(dirpath) / n for n in (*dirnames, *filenames)]
    for path in entries:
        rel = path.relative_to(root).as_posix() if path != root else path.name
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            real = Path(os.path.realpath(path))
            if not real.is_relative_to(base):
                findings.append(
                    SecurityFinding(rel, f"symbolic link points outside the model directory ({real})")
                )
        elif stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1 and path != root:
                findings.append(
                    SecurityFinding(
                        rel, f"hard link ({st.st_nlink} links): may alias a file outside the model"
                    )
                )
        elif not stat.S_ISDIR(st.st_mode):
            findings.append(SecurityFinding(rel, f"{special_kind(st.st_mode)} in the model directory"))
    return findings


def special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return f"special file (mode {oct(mode)})"


def _regular_files(root: Path) -> list[Path]:
    if root.is_file() and not root.is_symlink():
        return [root]
    files = []
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            path = Path(dirpath) / name
            if stat.S_ISREG(os.lstat(path).st_mode):
                files.append(path)
    return sorted(files)


def _step_guard(findings: list[SecurityFinding], rel: str, what: str, fn, *args):  # type: ignore[no-untyped-def]
    """Run one inspection; an unexpected error is a finding (fail closed), never a crash."""
    try:
        return fn(*args)
    except ScanLimitExceeded as exc:
        findings.append(SecurityFinding(rel, f"not inspected: {exc}"))
    except Exception as exc:  # hostile input may break any parser
        findings.append(
            SecurityFinding(rel, f"{what} could not be inspected ({type(exc).__name__}: {exc})"[:400])
        )
    return None


def security_step(
    root: Path,
    fmt: str | None,
    model_path: Path | None,
    allowed_globals: Iterable[str] = (),
    limits: ScanLimits | None = None,
) -> StepResult:
    allowed = (*DEFAULT_ALLOWED_GLOBALS, *allowed_globals)
    limits = limits or ScanLimits()
    findings = tree_findings(root)
    scanned = {"pickle": 0, "onnx": 0, "tensorflow": 0, "keras": 0, "python": 0}
    for path in _regular_files(root):
        rel = path.relative_to(root).as_posix() if root.is_dir() else path.name
        suffix = path.suffix.lower()
        with path.open("rb") as handle:
            head = handle.read(16)
        # By content: every zip, NumPy array and pickle, whatever the file is called.
        kind = _step_guard(findings, rel, "content", content_kind, path)
        if kind or suffix in SUFFIX_IS_PICKLE:
            scanned["pickle"] += 1
            findings += (
                _step_guard(findings, rel, "pickle", scan_file_pickles, path, rel, allowed, limits) or []
            )
        if suffix == ".onnx" and (fmt == "onnx" or path == model_path):
            scanned["onnx"] += 1
            try:
                findings += [
                    SecurityFinding(f"{rel}" if f.path == path.name else f.path, f.message)
                    for f in external_data_findings(path)
                ]
            except Exception as exc:  # a corrupt protobuf: format step says so; refuse here too
                findings.append(SecurityFinding(rel, f"ONNX file cannot be parsed for inspection: {exc}"))
        if path.name == "saved_model.pb" or (suffix == ".pb" and fmt == "tensorflow-savedmodel"):
            scanned["tensorflow"] += 1
            ops = _step_guard(findings, rel, "TensorFlow graph", tf_risky_ops, path) or []
            messages = {f"TensorFlow graph uses risky op {op} (file system / Python access)" for op in ops}
            if path.name == "saved_model.pb":
                graph = _step_guard(findings, rel, "SavedModel", tf_graph_findings, path, limits) or []
                messages |= set(graph)
            # One finding per op: the graph walk names where, the byte scan is the fallback.
            named = {m.split(" (")[0] for m in messages if "(file system" not in m}
            for message in sorted(messages):
                if "(file system" in message and message.split(" (")[0] in named:
                    continue
                findings.append(SecurityFinding(rel, message))
        if suffix in (".keras", ".h5", ".hdf5") or path.name == "keras_metadata.pb" or is_hdf5(head):
            scanned["keras"] += 1
            if _step_guard(findings, rel, "Keras config", keras_lambda, path):
                findings.append(
                    SecurityFinding(rel, "Keras Lambda layer: arbitrary Python code runs on load")
                )
        if suffix == ".py":
            scanned["python"] += 1
            try:
                risky = python_risky_calls(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError) as exc:
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
