"""Model repository layout and the init container's materialise step (file:// artifacts)."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from stt_operator.artifacts.fetch import DigestMismatch
from stt_operator.triton.config import parse_config_pbtxt, render_config_pbtxt
from stt_operator.triton.materialize import main as materialize_main
from stt_operator.triton.materialize import materialize, version_files
from stt_operator.triton.repository import repository_layout, write_model
from stt_operator.triton.spec import IOSpec, TensorSpec, TritonSpec

IO = IOSpec(
    inputs=[TensorSpec("AUDIO", "TYPE_FP32", [-1], "audio")],
    outputs=[TensorSpec("TRANSCRIPT", "TYPE_STRING", [1], "transcript")],
)


def test_layout_is_model_config_plus_versioned_files() -> None:
    layout = repository_layout("asr", "cfg", {"model.onnx": b"x", "vocab/tokens.txt": "a"}, version=3)
    assert sorted(layout) == ["asr/3/model.onnx", "asr/3/vocab/tokens.txt", "asr/config.pbtxt"]
    assert layout["asr/config.pbtxt"] == "cfg"


@pytest.mark.parametrize(
    ("name", "files", "version", "message"),
    [
        ("../evil", {"model.py": "x"}, 1, "model name"),
        ("a/b", {"model.py": "x"}, 1, "model name"),
        ("asr", {"../model.py": "x"}, 1, "relative path"),
        ("asr", {"/etc/passwd": "x"}, 1, "relative path"),
        ("asr", {}, 1, "at least one file"),
        ("asr", {"model.py": "x"}, 0, "version"),
    ],
)
def test_layout_rejects_unsafe_or_empty_entries(name: str, files: dict, version: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        repository_layout(name, "cfg", files, version)


def test_write_model_copies_files_and_directories(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "assets").mkdir(parents=True)
    (src / "assets" / "lm.bin").write_bytes(b"\x00\x01")
    model_file = tmp_path / "model.py"
    model_file.write_text("print('hi')\n")
    out = write_model(
        tmp_path / "repo", "asr", "name: 'asr'", {"model.py": model_file, "assets": src / "assets"}
    )
    assert (out / "config.pbtxt").read_text() == "name: 'asr'"
    assert (out / "1" / "model.py").read_text() == "print('hi')\n"
    assert (out / "1" / "assets" / "lm.bin").read_bytes() == b"\x00\x01"


def test_version_files_names_a_single_artifact_after_the_backend(tmp_path: Path) -> None:
    f = tmp_path / "whatever.bin"
    f.write_bytes(b"onnx")
    assert version_files(f, "onnxruntime") == {"model.onnx": f}
    assert version_files(f, "tensorrt") == {"model.plan": f}


def _config(name: str = "asr", fmt: str = "onnx") -> str:
    return render_config_pbtxt(name, TritonSpec(), IO, model_format=fmt)


def test_materialize_single_file_with_pinned_digest(tmp_path: Path) -> None:
    artifact = tmp_path / "asr.onnx"
    artifact.write_bytes(b"not really onnx")
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    repo = tmp_path / "models"
    out = materialize(f"file://{artifact}", "asr", _config(), repo, sha256=digest)
    assert (out / "1" / "model.onnx").read_bytes() == b"not really onnx"
    assert parse_config_pbtxt((out / "config.pbtxt").read_text()).name == "asr"
    # Idempotent: a restarted init container gets the same result.
    materialize(f"file://{artifact}", "asr", _config(), repo, sha256=digest)
    assert sorted(p.name for p in (out / "1").iterdir()) == ["model.onnx"]


def test_materialize_writes_every_version_a_specific_policy_serves(tmp_path: Path) -> None:
    from stt_operator.triton.spec import LatestPolicy, SpecificPolicy, VersionPolicy

    artifact = tmp_path / "asr.onnx"
    artifact.write_bytes(b"onnx bytes")
    specific = TritonSpec(version_policy=VersionPolicy(specific=SpecificPolicy(versions=[3, 2])))
    config = render_config_pbtxt("asr", specific, IO, model_format="onnx")
    out = materialize(f"file://{artifact}", "asr", config, tmp_path / "models")
    # Triton reports the model ready only when every listed version loads.
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["2", "3"]
    assert (out / "3" / "model.onnx").read_bytes() == b"onnx bytes"
    latest = TritonSpec(version_policy=VersionPolicy(latest=LatestPolicy(num_versions=2)))
    config = render_config_pbtxt("asr", latest, IO, model_format="onnx")
    out = materialize(f"file://{artifact}", "asr", config, tmp_path / "latest")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["1"]
    # Nothing but the model is left in the repository (the download's scratch directory is gone).
    assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == ["asr"]


def test_materialize_unpacks_an_archive(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg" / "sphinx"
    pkg.mkdir(parents=True)
    (pkg / "model.py").write_text("# model\n")
    (pkg / "commands.jsgf").write_text("#JSGF V1.0;\n")
    archive = tmp_path / "sphinx.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(pkg, arcname="sphinx")
    out = materialize(f"file://{archive}", "asr", _config(fmt="python"), tmp_path / "models")
    assert sorted(p.name for p in (out / "1").iterdir()) == ["commands.jsgf", "model.py"]


def test_onnx_on_the_python_backend_is_served_by_the_built_in_runner(tmp_path: Path) -> None:
    """A Triton image without the onnxruntime backend serves ONNX through the Python backend:
    the config names the file and the materializer adds the runner's model.py beside it."""
    from stt_operator.models import model_source

    python = TritonSpec(backend="python")
    config = render_config_pbtxt("asr", python, IO, model_format="onnx")
    parsed = parse_config_pbtxt(config)
    assert parsed.backend == "python" and parsed.parameters["onnx_file"].string_value == "model.onnx"
    artifact = tmp_path / "quantized.onnx"
    artifact.write_bytes(b"onnx bytes")
    out = materialize(f"file://{artifact}", "asr", config, tmp_path / "models")
    assert sorted(p.name for p in (out / "1").iterdir()) == ["model.onnx", "model.py"]
    assert (out / "1" / "model.onnx").read_bytes() == b"onnx bytes"
    runner = (model_source("onnx_runner") / "model.py").read_text()
    assert (out / "1" / "model.py").read_text() == runner
    # A directory artifact keeps its own model.py; one without the ONNX file is refused.
    own = tmp_path / "own"
    own.mkdir()
    (own / "model.onnx").write_bytes(b"x")
    (own / "model.py").write_text("# custom\n")
    assert version_files(own, "python", "model.onnx")["model.py"] == own / "model.py"
    (own / "model.onnx").unlink()
    with pytest.raises(ValueError, match=r"no model\.onnx"):
        version_files(own, "python", "model.onnx")
    # Other formats on the Python backend are unchanged: no runner, no parameter.
    plain = parse_config_pbtxt(render_config_pbtxt("asr", python, IO, model_format="python"))
    assert "onnx_file" not in plain.parameters
    assert version_files(artifact, "python") == {"model.py": artifact}


def test_materialize_rejects_a_wrong_digest_and_a_wrong_name(tmp_path: Path) -> None:
    artifact = tmp_path / "asr.onnx"
    artifact.write_bytes(b"x")
    with pytest.raises(DigestMismatch, match="does not match"):
        materialize(f"file://{artifact}", "asr", _config(), tmp_path / "models", sha256="0" * 64)
    with pytest.raises(ValueError, match="does not match --model"):
        materialize(f"file://{artifact}", "other", _config(), tmp_path / "models")


def test_materialize_cli_reports_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.pbtxt"
    cfg.write_text(_config())
    rc = materialize_main(
        [
            "--uri",
            f"file://{tmp_path}/missing.onnx",
            "--model",
            "asr",
            "--config",
            str(cfg),
            "--repository",
            str(tmp_path / "m"),
        ]
    )
    assert rc == 1
    assert "missing.onnx" in capsys.readouterr().err
