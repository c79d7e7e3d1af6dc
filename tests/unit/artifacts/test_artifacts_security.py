"""The malicious corpus: each case is flagged with a precise message and nothing executes."""

import collections
import fractions
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from stt_harness import samples
from stt_operator.artifacts.security import (
    ScanLimits,
    external_data_findings,
    python_risky_calls,
    security_step,
    tf_risky_ops,
)


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"state": _RunsShell(marker)}, protocol=2)


def test_pickle_calling_os_system_is_flagged_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.pt").write_bytes(_evil_pickle(marker))
    result = security_step(model, "pytorch", model / "model.pt")
    assert result.result == "failed"
    assert "model.pt: dangerous global (picklescan): posix.system would be imported" in result.message
    assert not marker.exists()


def test_torch_zip_checkpoint_with_malicious_data_pkl(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "m" / "model.pt"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _evil_pickle(marker))
        zf.writestr("archive/version", "3\n")
    result = security_step(path.parent, "pytorch", path)
    assert result.result == "failed"
    assert any("model.pt!archive/data.pkl: dangerous global" in f for f in result.findings)
    assert not marker.exists()


def test_allowlist_not_denylist_unknown_globals_fail_until_allowed(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "weights.pkl").write_bytes(pickle.dumps({"ratio": fractions.Fraction(1, 3)}, protocol=4))
    result = security_step(root, "pytorch", root / "weights.pkl")
    assert result.result == "failed"
    assert "global not in the allowlist: fractions.Fraction" in result.message
    allowed = security_step(root, "pytorch", root / "weights.pkl", allowed_globals=["fractions.*"])
    assert allowed.result == "passed", allowed.message


def test_tensor_checkpoint_with_numpy_arrays_passes(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    state = collections.OrderedDict(w=np.ones((4, 4), np.float32), b=np.zeros(4, np.float32))
    (root / "model.ckpt").write_bytes(pickle.dumps(state, protocol=2))
    result = security_step(root, "pytorch", root / "model.ckpt")
    assert result.result == "passed", result.message
    assert result.details["scanned"] == {"pickle": 1}


def test_numpy_object_array_is_flagged_and_its_pickle_scanned(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    root = tmp_path / "m"
    root.mkdir()
    array = np.empty(1, dtype=object)
    array[0] = _RunsShell(marker)
    np.save(root / "extra.npy", array, allow_pickle=True)
    np.save(root / "plain.npy", np.zeros((256, 256), np.float32))
    result = security_step(root, None, None)
    assert result.result == "failed"
    assert any("extra.npy: NumPy object array (dtype object)" in f for f in result.findings)
    assert any("extra.npy: dangerous global (picklescan): posix.system" in f for f in result.findings)
    assert not any("plain.npy" in f for f in result.findings)
    assert not marker.exists()


def _external_model(root: Path) -> Path:
    """A model whose weight lives in `weights.bin` next to it (real ONNX external data)."""
    model = samples.ctc_onnx_model(hidden=64)
    path = root / "model.onnx"
    root.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=1024)
    return path


def _relocate(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(path))


def test_external_data_inside_the_directory_passes_the_full_checker(tmp_path: Path) -> None:
    path = _external_model(tmp_path / "m")
    assert external_data_findings(path) == []
    assert security_step(path.parent, "onnx", path).result == "passed"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("dotdot", "external data location '../outside.bin' uses '..' and points outside"),
        ("absolute", "is an absolute path"),
        ("symlink", "external data location 'link.bin' is (or passes through) a symbolic link"),
        ("hardlink", "external data location 'hard.bin' is a hard link (2 links)"),
        ("missing", "external data location 'gone.bin' does not exist"),
    ],
)
def test_external_data_pointing_outside(tmp_path: Path, setup: str, message: str) -> None:
    path = _external_model(tmp_path / "m")
    secret = tmp_path / "outside.bin"
    secret.write_bytes((path.parent / "weights.bin").read_bytes())
    location = {
        "dotdot": "../outside.bin",
        "absolute": str(secret),
        "symlink": "link.bin",
        "hardlink": "hard.bin",
        "missing": "gone.bin",
    }[setup]
    if setup == "symlink":
        (path.parent / "link.bin").symlink_to(secret)
    if setup == "hardlink":
        os.link(secret, path.parent / "hard.bin")
    _relocate(path, location)
    findings = external_data_findings(path)
    assert len(findings) >= 1
    assert message in str(findings[0])
    assert findings[0].path == "model.onnx"
    result = security_step(path.parent, "onnx", path)
    assert result.result == "failed"


def test_truncated_onnx_is_refused_not_crashed_on(tmp_path: Path) -> None:
    good = samples.write_ctc_model(tmp_path / "m" / "model.onnx", hidden=64)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    result = security_step(good.parent, "onnx", good)
    assert result.result == "failed"
    assert "model.onnx: ONNX file cannot be parsed for inspection" in result.message


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([(number << 3) | 2, len(payload)]) + payload


def _saved_model(ops: list[str]) -> bytes:
    """SavedModel{meta_graphs: MetaGraphDef{graph_def: GraphDef{node: NodeDef{name, op}}}}."""
    nodes = b"".join(
        _field(1, _field(1, f"n{i}".encode()) + _field(2, op.encode())) for i, op in enumerate(ops)
    )
    return _field(2, _field(2, nodes))


def test_tensorflow_risky_ops_found_in_the_protobuf_without_tensorflow(tmp_path: Path) -> None:
    root = tmp_path / "saved"
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(_saved_model(["Placeholder", "ReadFile", "MatMul", "WriteFile"]))
    assert tf_risky_ops(root / "saved_model.pb") == ["ReadFile", "WriteFile"]
    result = security_step(root, "tensorflow-savedmodel", root)
    assert result.result == "failed"
    assert "saved_model.pb: TensorFlow graph uses risky op ReadFile" in result.message
    benign = tmp_path / "benign.pb"
    benign.write_bytes(_saved_model(["Placeholder", "ReadFileLike", "MatMul"]))
    assert tf_risky_ops(benign) == []


def test_keras_lambda_layer(tmp_path: Path) -> None:
    root = tmp_path / "k"
    root.mkdir()
    config = {"class_name": "Sequential", "config": {"layers": [{"class_name": "Lambda", "config": {}}]}}
    with zipfile.ZipFile(root / "model.keras", "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    result = security_step(root, None, None)
    assert result.result == "failed"
    assert "model.keras: Keras Lambda layer" in result.message


def test_python_model_risky_calls_are_named_with_lines() -> None:
    source = (
        "import subprocess as sp\nfrom os import system\n\ndef f():\n    sp.run(['ls'])\n    system('id')\n"
    )
    assert python_risky_calls(source) == ["subprocess.run (line 5)", "os.system (line 6)"]
    assert python_risky_calls("import numpy as np\nnp.zeros(3)\n") == []


def test_symlink_leaving_the_model_directory(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "config.pbtxt").symlink_to("/etc/passwd")
    result = security_step(root, None, None)
    assert result.result == "failed"
    assert "config.pbtxt: symbolic link points outside the model directory (/etc/passwd)" in result.message


def test_scanning_large_files_reads_headers_not_payloads(tmp_path: Path) -> None:
    import tracemalloc

    root = tmp_path / "big"
    root.mkdir()
    np.save(root / "weights.npy", np.zeros((4096, 4096), np.float32))  # 64 MiB
    pb = root / "saved_model.pb"
    with pb.open("wb") as handle:
        handle.write(_saved_model(["Placeholder"]))
        handle.write(bytes(64 * 1024 * 1024))
        handle.write(_saved_model(["PyFunc"]))
    tracemalloc.start()
    try:
        # The graph (64 MiB) is over the parse limit: the byte scan still finds the op, and
        # the uninspected graph is a finding of its own (fail closed).
        result = security_step(root, "tensorflow-savedmodel", root, limits=ScanLimits(16 * 1024**2))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.result == "failed"
    assert result.findings == [
        "saved_model.pb: TensorFlow graph uses risky op PyFunc (file system / Python access)",
        f"saved_model.pb: saved_model.pb is {pb.stat().st_size} bytes, over the 4194304-byte graph "
        "inspection limit (from the Job's memory); its graph was not inspected",
    ]
    assert peak < 2 * 1024 * 1024


def test_protocol_0_pickle_and_garbage_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    root = tmp_path / "m"
    root.mkdir()
    (root / "old.pkl").write_bytes(pickle.dumps(_RunsShell(marker), protocol=0))
    (root / "junk.pth").write_bytes(b"\x80\x04\x95garbage-that-is-not-a-pickle")
    result = security_step(root, None, None)
    assert any("old.pkl: dangerous global (picklescan): posix.system" in f for f in result.findings)
    assert any("junk.pth: pickle could not be parsed" in f for f in result.findings)
    assert not marker.exists()


def test_bin_files_are_judged_by_content(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    root = tmp_path / "hf"
    root.mkdir()
    with zipfile.ZipFile(root / "pytorch_model.bin", "w") as zf:
        zf.writestr("pytorch_model/data.pkl", _evil_pickle(marker))
    (root / "raw_tensor.bin").write_bytes(np.arange(1000, dtype=np.float32).tobytes())
    (root / "legacy.bin").write_bytes(_evil_pickle(marker))
    result = security_step(root, None, None)
    assert sorted(f.split(":")[0] for f in result.findings) == [
        "legacy.bin",
        "pytorch_model.bin!pytorch_model/data.pkl",
    ]
    assert not marker.exists()
