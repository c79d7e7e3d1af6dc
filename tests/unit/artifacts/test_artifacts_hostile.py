"""Hostile inputs (issue 10): every one ends in a verdict — a failed step with a reason in the
report and the termination message — never a traceback, a hang or an out-of-memory kill, and
no payload ever runs. Each payload would leave a marker file if it were executed."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from stt_harness import samples
from stt_operator.artifacts.integrity import sha256_file
from stt_operator.artifacts.jobs import parse_termination_message
from stt_operator.artifacts.security import (
    PYTHON_RISKY_CALLS,
    TF_RISKY_OPS,
    python_risky_calls,
    security_step,
)
from stt_operator.cli import main as cli


class _Touch:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def run(tmp_path: Path, spec: dict, *extra: str) -> tuple[int, dict, str]:
    spec_file = tmp_path / "sttmodel.yaml"
    spec_file.write_text(yaml.safe_dump({"metadata": {"name": "asr"}, "spec": spec}))
    report, term = tmp_path / "out" / "report.json", tmp_path / "termination-log"
    code = cli(
        [
            "validate",
            "--spec",
            str(spec_file),
            "--report",
            str(report),
            "--termination-log",
            str(term),
            "--work-dir",
            str(tmp_path / "work"),
            *extra,
        ]
    )
    return code, json.loads(report.read_text()), term.read_text()


def steps(body: dict) -> dict[str, tuple[str, str]]:
    return {s["name"]: (s["result"], s["message"]) for s in body["steps"]}


def onnx_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    onnx.save(samples.keyed_ctc_model(), str(root / "model.onnx"))
    return root


def folder_spec(root: Path, **kw) -> dict:
    return samples.ctc_spec(f"file://{root}", None, **kw)


def assert_verdict(code: int, body: dict, term: str, step: str, needle: str) -> None:
    assert code == 1, body
    result, message = steps(body)[step]
    assert result == "failed" and needle in message, message
    parsed = parse_termination_message(term)
    assert not parsed.ok and parsed.reason == "ValidationFailed"
    assert needle in parsed.message


# --- crashes that became verdicts --------------------------------------------------------


def test_fifo_inside_a_model_folder_is_a_verdict_not_a_crash_or_a_hang(tmp_path: Path) -> None:
    root = onnx_folder(tmp_path / "src")
    os.mkfifo(root / "weights.bin")  # opening it for reading would block forever
    code, body, term = run(tmp_path, folder_spec(root))
    assert_verdict(code, body, term, "security", "weights.bin: FIFO (named pipe) in the model folder")
    assert body["skipped"] == ["format", "architecture", "dependencies", "integrity", "performance"]


def test_fifo_as_the_source_itself(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    code, body, term = run(tmp_path, samples.ctc_spec(f"file://{fifo}", None))
    assert_verdict(code, body, term, "security", "the source is a FIFO (named pipe)")


def _set_zip_method(path: Path, method: int) -> None:
    """Rewrite the compression method of every entry (local headers and central directory)."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = 0
        while (at := data.find(signature, start)) != -1:
            data[at + offset : at + offset + 2] = struct.pack("<H", method)
            start = at + 4
    path.write_bytes(bytes(data))


def test_unsupported_compression_method_in_a_pytorch_zip(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    model = tmp_path / "src" / "model.pt"
    model.parent.mkdir()
    with zipfile.ZipFile(model, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": _Touch(marker)}, protocol=2))
        zf.writestr("archive/version", "3\n")
    _set_zip_method(model, 98)  # PPMd: zipfile cannot read it (NotImplementedError before)
    spec = samples.ctc_spec(
        f"file://{model}", sha256_file(model), format="pytorch", triton={"backend": "python"}
    )
    code, body, term = run(tmp_path, spec)
    assert_verdict(
        code, body, term, "security", "model.pt!archive/data.pkl: compression method 98 cannot be inspected"
    )
    assert not marker.exists()


def _binbytes8_bomb(path: Path, claimed: int) -> None:
    """A PyTorch-style zip whose data.pkl declares a `claimed`-byte BINBYTES8 argument and
    really holds that many zero bytes (deflated to almost nothing)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("archive/data.pkl", "w") as out:
        out.write(b"\x80\x04\x8e" + struct.pack("<Q", claimed))
        chunk = bytes(8 * 1024 * 1024)
        for _ in range(claimed // len(chunk)):
            out.write(chunk)
        out.write(b".")


def test_pickle_bomb_inside_a_zip_ends_in_a_verdict_within_the_memory_limit(tmp_path: Path) -> None:
    import tracemalloc

    model = tmp_path / "src" / "model.pt"
    model.parent.mkdir()
    _binbytes8_bomb(model, 256 * 1024 * 1024)
    assert model.stat().st_size < 2 * 1024 * 1024
    spec = samples.ctc_spec(
        f"file://{model}", sha256_file(model), format="pytorch", triton={"backend": "python"}
    )
    tracemalloc.start()
    try:
        # A 64 MiB container: scans may hold a quarter of it.
        code, body, term = run(tmp_path, spec, "--memory-bytes", str(64 * 1024**2))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_verdict(
        code,
        body,
        term,
        "security",
        "model.pt!archive/data.pkl: not inspected: model.pt!archive/data.pkl: needs more than 16777216 bytes",
    )
    assert peak < 48 * 1024**2, peak


def test_archive_bomb_stops_at_the_scratch_space_the_job_has(tmp_path: Path) -> None:
    keyed = onnx_folder(tmp_path / "m")
    archive = tmp_path / "asr.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(keyed / "model.onnx", "asr/model.onnx")
        with zf.open("asr/padding.bin", "w") as out:
            for _ in range(40):
                out.write(bytes(8 * 1024 * 1024))  # 320 MiB of zeros, ~320 KiB deflated
    spec = samples.ctc_spec(f"file://{archive}", sha256_file(archive))
    spec["source"]["archive"] = "zip"
    # maxSizeBytes is the 20 GiB default; the Job's 256 MiB scratch is what bounds unpacking.
    code, body, term = run(tmp_path, spec, "--scratch-bytes", str(256 * 1024**2))
    assert_verdict(code, body, term, "security", "unpacks to more than")
    limit = 256 * 1024**2 - archive.stat().st_size - 64 * 1024**2
    assert f"unpacks to more than {limit} bytes" in steps(body)["security"][1]
    assert not (tmp_path / "work" / "unpacked" / "asr.zip.d").exists()


def test_unexpected_error_inside_a_step_is_that_step_failing(tmp_path: Path, monkeypatch) -> None:
    from stt_operator.artifacts import validate_cli

    def broken(*_args, **_kwargs):
        raise RecursionError("maximum recursion depth exceeded while parsing")

    monkeypatch.setattr(validate_cli, "dependencies_step", broken)
    root = onnx_folder(tmp_path / "src")
    code, body, term = run(tmp_path, folder_spec(root))
    assert code == 1
    result, message = steps(body)["dependencies"]
    assert result == "failed"
    assert "RecursionError: maximum recursion depth exceeded while parsing" in message
    assert "dependencies:" in parse_termination_message(term).message


def test_top_level_guard_turns_any_crash_into_a_failed_verdict(tmp_path: Path, monkeypatch) -> None:
    from stt_operator.artifacts import validate_cli

    def broken(*_args, **_kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(validate_cli, "run_validation", broken)
    root = onnx_folder(tmp_path / "src")
    code, body, term = run(tmp_path, folder_spec(root))
    assert code == 1
    assert steps(body)["validator"] == (
        "failed",
        "validation could not complete (MemoryError: out of memory); the model is not trusted",
    )
    assert parse_termination_message(term).reason == "ValidationFailed"


# --- classes of payload that were missed -------------------------------------------------


def test_hard_linked_onnx_external_data_in_a_folder_source_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    model = samples.keyed_ctc_model()
    onnx.save_model(
        model, str(root / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    elsewhere = tmp_path / "elsewhere.bin"
    os.replace(root / "weights.bin", elsewhere)
    os.link(elsewhere, root / "weights.bin")  # the copy would have one link and pass
    code, body, term = run(tmp_path, folder_spec(root))
    assert_verdict(code, body, term, "security", "weights.bin: hard link (2 links)")


def test_hard_link_inside_an_unpacked_tar_is_refused(tmp_path: Path) -> None:
    import tarfile

    root = onnx_folder(tmp_path / "m")
    archive = tmp_path / "asr.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(root / "model.onnx", "asr/model.onnx")
        link = tarfile.TarInfo("asr/alias.onnx")
        link.type, link.linkname = tarfile.LNKTYPE, "asr/model.onnx"
        tf.addfile(link)
    spec = samples.ctc_spec(f"file://{archive}", sha256_file(archive))
    spec["source"]["archive"] = "tar"
    code, body, term = run(tmp_path, spec)
    assert_verdict(code, body, term, "security", "hard link (2 links)")


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("weights.dat", lambda m: pickle.dumps({"w": _Touch(m)}, protocol=0)),  # no PROTO header
        ("tokenizer.model", lambda m: pickle.dumps(_Touch(m), protocol=1)),
        ("vocab.json", lambda m: pickle.dumps([_Touch(m)], protocol=4)),
    ],
)
def test_pickles_not_named_like_pickles_are_found_by_content(tmp_path: Path, name: str, payload) -> None:
    marker = tmp_path / "PWNED"
    root = onnx_folder(tmp_path / "src")
    (root / name).write_bytes(payload(marker))
    code, body, term = run(tmp_path, folder_spec(root))
    assert_verdict(code, body, term, "security", f"{name}: dangerous global (picklescan): posix.system")
    assert not marker.exists()


def test_zip_pickles_and_npy_found_by_content_in_any_member(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    root = tmp_path / "m"
    root.mkdir()
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("state/blob", pickle.dumps(_Touch(marker), protocol=0))
    import io

    npy = io.BytesIO()
    np.save(npy, np.array([_Touch(marker)], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(root / "extras.dat", "w") as zf:
        zf.writestr("data/0", pickle.dumps(_Touch(marker), protocol=2))
        zf.writestr("data/arr", npy.getvalue())
        zf.write(inner, "nested.bin")
        zf.writestr("README", "(just text, not a pickle)\n")
    result = security_step(root, None, None)
    assert result.result == "failed"
    assert sorted(f.split(": ")[0] for f in result.findings) == [
        "extras.dat!data/0",
        "extras.dat!data/arr",
        "extras.dat!data/arr",
        "extras.dat!nested.bin!state/blob",
    ]
    assert not marker.exists()


def test_pickle_payloads_used_above_really_run_when_loaded(tmp_path: Path) -> None:
    """Control: the payload mechanism is real (unpickled in a child process, it touches)."""
    marker = tmp_path / "PWNED"
    blob = tmp_path / "p"
    blob.write_bytes(pickle.dumps(_Touch(marker), protocol=0))
    subprocess.run(
        [sys.executable, "-c", f"import pickle; pickle.loads(open({str(blob)!r}, 'rb').read())"], check=True
    )
    assert marker.exists()


# --- Python backend code -----------------------------------------------------------------

PY_PAYLOADS = {
    "torch.load": "import torch\nobj = torch.load(PATH)\n",
    "numpy.load": "import numpy as np\nobj = np.load(PATH, allow_pickle=True)\n",
    "pickle.loads": "import pickle\nobj = pickle.loads(open(PATH, 'rb').read())\n",
    "pickle.load": "from pickle import load as _l\nobj = _l(open(PATH, 'rb'))\n",
    "importlib.import_module": (
        "from importlib import import_module\nimport_module('os').system('touch ' + MARKER)\n"
    ),
    "__import__": "__import__('os').system('touch ' + MARKER)\n",
    "exec": "exec(\"import os; os.system('touch ' + MARKER)\")\n",
    "eval": "eval(\"__import__('os').system('touch ' + MARKER)\")\n",
    "marshal.loads": "import marshal\nexec(marshal.loads(BLOB))\n",
    "subprocess.run": "import subprocess\nsubprocess.run(['touch', MARKER])\n",
    "os.system": "import os\nos.system('touch ' + MARKER)\n",
    "getattr": "import os\ngetattr(os, 'system')('touch ' + MARKER)\n",
}


@pytest.mark.parametrize("call", sorted(PY_PAYLOADS))
def test_python_backend_payloads_are_flagged_and_never_imported(tmp_path: Path, call: str) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Touch(marker), protocol=2))
    root = tmp_path / "python-model" / "1"
    root.mkdir(parents=True)
    body = PY_PAYLOADS[call].replace("PATH", repr(str(evil))).replace("MARKER", repr(str(marker)))
    body = body.replace("BLOB", repr(b""))
    (root / "model.py").write_text(
        body + "\nclass TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
    )
    result = security_step(root.parent, "python", root / "model.py")
    assert result.result == "failed"
    assert any(f.startswith(f"1/model.py: calls {call}") for f in result.findings), result.findings
    assert not marker.exists()


def test_numpy_load_without_allow_pickle_and_plain_code_are_not_flagged() -> None:
    assert python_risky_calls("import numpy as np\nx = np.load('a.npy')\ny = np.zeros(3)\n") == []
    assert python_risky_calls("import numpy\nx = numpy.load('a.npy', allow_pickle=False)\n") == []
    assert python_risky_calls("import numpy\nx = numpy.load('a.npy', **opts)\n") == ["numpy.load (line 2)"]
    assert python_risky_calls("import importlib.util\n")[0].startswith("import importlib.util")
    assert {"torch.load", "numpy.load", "importlib.import_module", "marshal.load*"} <= set(PYTHON_RISKY_CALLS)


# --- TensorFlow graphs -------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _node(name: str, op: str, func: str | None = None, attrs: dict[str, bytes] | None = None) -> bytes:
    out = _field(1, name.encode()) + _field(2, op.encode())
    if func:  # attr {key: "f", value: AttrValue{func: NameAttrList{name}}}
        out += _field(5, _field(1, b"f") + _field(2, _field(10, _field(1, func.encode()))))
    for key, value in (attrs or {}).items():  # attr {key, value: AttrValue{s}}
        out += _field(5, _field(1, key.encode()) + _field(2, _field(2, value)))
    return out


def _saved_model(
    nodes: list[bytes],
    functions: dict[str, list[bytes]] | None = None,
    saver: tuple[str, str, str] | None = None,
) -> bytes:
    """SavedModel{meta_graphs{graph_def{node…, library{function{signature{name}, node_def…}}}, saver_def}}
    written field by field (tensorflow/core/protobuf/saved_model.proto, meta_graph.proto)."""
    library = b"".join(
        _field(1, _field(1, _field(1, name.encode())) + b"".join(_field(3, n) for n in body))
        for name, body in (functions or {}).items()
    )
    graph = b"".join(_field(1, n) for n in nodes) + (_field(2, library) if library else b"")
    meta = _field(2, graph)
    if saver:
        meta += _field(3, b"".join(_field(i + 1, v.encode()) for i, v in enumerate(saver)))
    return _field(2, meta)


@pytest.mark.parametrize("op", TF_RISKY_OPS)
def test_every_risky_tensorflow_op_fails_the_graph(tmp_path: Path, op: str) -> None:
    marker = tmp_path / "PWNED"
    root = tmp_path / "saved"
    (root / "variables").mkdir(parents=True)
    graph = [
        _node("path", "Const", attrs={"value": str(marker).encode()}),
        _node("x", "Placeholder"),
        _node("evil", op),
    ]
    (root / "saved_model.pb").write_bytes(_saved_model(graph))
    result = security_step(root, "tensorflow-savedmodel", root)
    assert result.result == "failed"
    assert f"saved_model.pb: TensorFlow graph uses risky op {op} (node evil)" in result.findings
    assert not marker.exists()


def test_saver_ops_pass_inside_the_saver_and_fail_outside(tmp_path: Path) -> None:
    root = tmp_path / "saved"
    (root / "variables").mkdir(parents=True)
    pb = root / "saved_model.pb"
    # TF2 layout: the saver nodes call traced save/restore functions.
    saver_fns = {
        "__inference__traced_save_45": [_node("SaveV2", "SaveV2"), _node("Merge", "MergeV2Checkpoints")],
        "__inference__traced_restore_60": [_node("RestoreV2", "RestoreV2")],
    }
    tf2 = [
        _node("saver_filename", "Placeholder"),
        _node("StatefulPartitionedCall_1", "StatefulPartitionedCall", func="__inference__traced_save_45"),
        _node("StatefulPartitionedCall_2", "StatefulPartitionedCall", func="__inference__traced_restore_60"),
    ]
    saver = ("saver_filename:0", "StatefulPartitionedCall_1:0", "StatefulPartitionedCall_2")
    pb.write_bytes(_saved_model(tf2, saver_fns, saver))
    assert security_step(root, "tensorflow-savedmodel", root).result == "passed"
    # The same SaveV2 in a function the serving graph calls writes wherever it is told.
    serving = {"__inference_serve_7": [_node("leak", "SaveV2")]}
    pb.write_bytes(
        _saved_model(
            [*tf2, _node("serve", "StatefulPartitionedCall", func="__inference_serve_7")],
            {**saver_fns, **serving},
            saver,
        )
    )
    result = security_step(root, "tensorflow-savedmodel", root)
    assert result.findings == [
        "saved_model.pb: TensorFlow graph uses risky op SaveV2 (function __inference_serve_7 node leak)"
    ]
    # TF1 layout: the saver's name scope.
    tf1 = [
        _node("save/SaveV2", "SaveV2"),
        _node("save/RestoreV2", "RestoreV2"),
        _node("save/restore_all", "NoOp"),
    ]
    pb.write_bytes(_saved_model(tf1, None, ("save/Const:0", "save/control_dependency:0", "save/restore_all")))
    assert security_step(root, "tensorflow-savedmodel", root).result == "passed"
    pb.write_bytes(
        _saved_model(
            [*tf1, _node("dump", "MergeV2Checkpoints")],
            None,
            ("save/Const:0", "save/control_dependency:0", "save/restore_all"),
        )
    )
    assert security_step(root, "tensorflow-savedmodel", root).findings == [
        "saved_model.pb: TensorFlow graph uses risky op MergeV2Checkpoints (node dump)"
    ]


def test_unparsable_saved_model_fails_closed(tmp_path: Path) -> None:
    root = tmp_path / "saved"
    root.mkdir()
    (root / "saved_model.pb").write_bytes(b"\x12\xff\xff\xff\xff\x0fgarbage")
    result = security_step(root, "tensorflow-savedmodel", root)
    assert result.result == "failed"
    assert "does not parse as a SavedModel protobuf" in result.message


def test_raw_tensor_bytes_that_disassemble_are_not_mistaken_for_pickles(tmp_path: Path) -> None:
    from stt_operator.artifacts.security import content_kind

    root = tmp_path / "m"
    root.mkdir()
    # "N." is NONE, STOP: a valid pickle that imports nothing, as random weights may start.
    (root / "weights.bin").write_bytes(b"N." + np.arange(1000, dtype=np.float32).tobytes())
    assert content_kind(root / "weights.bin") is None
    assert security_step(root, None, None).result == "passed"
    # A harmless first pickle does not hide a second one that imports.
    marker = tmp_path / "PWNED"
    (root / "weights.bin").write_bytes(b"N." + pickle.dumps(_Touch(marker), protocol=0))
    assert content_kind(root / "weights.bin") == "pickle"
    assert "posix.system" in security_step(root, None, None).message
    assert not marker.exists()


def test_a_long_argument_cannot_push_the_import_past_the_sniff_window(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    root = tmp_path / "m"
    root.mkdir()
    padding = b"B" + struct.pack("<I", 2 * 1024 * 1024) + bytes(2 * 1024 * 1024) + b"0"  # BINBYTES, POP
    (root / "weights.bin").write_bytes(b"(" + padding + b"1" + pickle.dumps(_Touch(marker), protocol=0))
    result = security_step(root, None, None)
    assert "weights.bin: dangerous global (picklescan): posix.system" in result.message
    assert not marker.exists()


def test_raw_tensor_storages_are_not_mistaken_for_pickles(tmp_path: Path) -> None:
    """A checkpoint's raw storages are random-looking bytes; whatever they start with ("N"
    then a BINBYTES opcode claiming gigabytes, say), they are not read as pickles."""
    rng = np.random.default_rng(7)
    root = tmp_path / "m"
    root.mkdir()
    with zipfile.ZipFile(root / "model.pt", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        zf.writestr("archive/data/0", b"NB\xff\xff\xff\x7f" + rng.random(4096, np.float32).tobytes())
        for i in range(1, 200):
            zf.writestr(f"archive/data/{i}", rng.standard_normal(2048).astype(np.float32).tobytes())
    (root / "raw.bin").write_bytes(b"(X\x00\x00\x00\x40" + rng.random(1024, np.float32).tobytes())
    result = security_step(root, "pytorch", root / "model.pt")
    assert result.result == "passed", result.findings


def test_arbitrary_bytes_always_get_a_verdict(tmp_path_factory) -> None:
    """Property: whatever bytes a file (or a zip member, or a saved_model.pb) holds, the
    security step returns a verdict; it never raises."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    prefixes = st.sampled_from([b"", b"\x80\x02", b"(", b"c", b"PK\x03\x04", b"\x93NUMPY", b"\x12\x05"])

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        prefix=prefixes,
        body=st.binary(max_size=512),
        name=st.sampled_from(["w.bin", "saved_model.pb", "m.py"]),
    )
    def check(prefix: bytes, body: bytes, name: str) -> None:
        root = tmp_path_factory.mktemp("fuzz")
        (root / name).write_bytes(prefix + body)
        with zipfile.ZipFile(root / "c.zip", "w") as zf:
            zf.writestr("member", prefix + body)
        result = security_step(root, None, None)
        assert result.result in ("passed", "failed")

    check()
