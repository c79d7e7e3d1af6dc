"""`stt-operator validate` / `quantize` end to end on local files (file:// sources)."""

import io
import json
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import onnx
import pytest
import yaml

from stt_harness import samples
from stt_operator.artifacts.integrity import sha256_file
from stt_operator.artifacts.jobs import parse_termination_message
from stt_operator.cli import main as cli


def run(tmp_path: Path, spec: dict, *extra: str, command: str = "validate") -> tuple[int, dict, str]:
    spec_file = tmp_path / "sttmodel.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {"apiVersion": "stt.dev/v1alpha1", "kind": "STTModel", "metadata": {"name": "asr"}, "spec": spec}
        )
    )
    report, term = tmp_path / "out" / "report.json", tmp_path / "termination-log"
    code = cli(
        [
            command,
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
    body = json.loads(report.read_text()) if report.exists() and report.read_text() else {}
    return code, body, term.read_text()


def steps(body: dict) -> dict[str, tuple[str, str]]:
    return {s["name"]: (s["result"], s["message"]) for s in body["steps"]}


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "src" / "model.onnx"
    model.parent.mkdir()
    onnx.save(samples.keyed_ctc_model(), str(model))
    return model, samples.write_keyed_evalset(tmp_path / "evalset")


def valid_spec(model: Path, evalset: Path, **kw) -> dict:
    return samples.ctc_spec(
        f"file://{model}",
        sha256_file(model),
        validation={"evaluationSet": {"uri": f"file://{evalset}"}, "thresholds": {"maxWer": 0.05}},
        **kw,
    )


def test_good_model_passes_all_six_steps(tmp_path: Path, keyed: tuple[Path, Path], capsys) -> None:
    model, evalset = keyed
    code, body, term = run(tmp_path, valid_spec(model, evalset))
    assert code == 0, capsys.readouterr().out
    assert body["passed"] is True
    assert [s["name"] for s in body["steps"]] == [
        "format",
        "architecture",
        "dependencies",
        "security",
        "integrity",
        "performance",
    ]
    assert all(s["result"] == "passed" for s in body["steps"]), body["steps"]
    assert body["metrics"]["wer"] == 0.0
    assert len(term.encode()) <= 4096
    result = parse_termination_message(term)
    assert result.ok and result.status["artifact"]["digest"] == "sha256:" + sha256_file(model)
    assert "validation of asr (onnx): PASSED" in capsys.readouterr().out


def test_archive_source_is_unpacked_and_pinned_by_the_archive_digest(tmp_path: Path, keyed) -> None:
    model, evalset = keyed
    archive = tmp_path / "asr.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(model, arcname="asr/1/model.onnx")
        info = tarfile.TarInfo("asr/config.pbtxt")
        info.size = 11
        tf.addfile(info, io.BytesIO(b'name: "asr"'))
    spec = valid_spec(model, evalset)
    spec["source"] = {"uri": f"file://{archive}", "sha256": sha256_file(archive)}
    code, body, _ = run(tmp_path, spec)
    assert code == 0, body
    assert [f["path"] for f in body["artifact"]["files"]] == ["1/model.onnx", "config.pbtxt"]


def test_wrong_digest_fails_integrity_and_blocks_the_run(tmp_path: Path, keyed) -> None:
    model, evalset = keyed
    spec = valid_spec(model, evalset)
    spec["source"]["sha256"] = "0" * 64
    code, body, term = run(tmp_path, spec)
    assert code == 1
    result, message = steps(body)["integrity"]
    assert result == "failed"
    assert message == f"sha256 mismatch: model.onnx is {sha256_file(model)}, source.sha256 pins {'0' * 64}"
    assert steps(body)["performance"] == (
        "skipped",
        "not run: integrity failed; an unverified model is never run",
    )
    assert parse_termination_message(term).reason == "ValidationFailed"


def test_io_contradicting_the_spec(tmp_path: Path, keyed) -> None:
    model, evalset = keyed
    spec = valid_spec(model, evalset)
    spec["io"]["outputs"][0]["name"] = "transcript_logits"
    code, body, _ = run(tmp_path, spec)
    assert code == 1
    result, message = steps(body)["architecture"]
    assert result == "failed"
    assert (
        "spec output transcript_logits (TYPE_FP32 [-1, 5]) not found in the model; model outputs: logits"
        in message
    )


def test_malicious_pickle_model_through_the_cli_never_executes(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    model = tmp_path / "src" / "model.pt"
    model.parent.mkdir()
    with zipfile.ZipFile(model, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": Payload()}, protocol=2))
    spec = samples.ctc_spec(
        f"file://{model}", sha256_file(model), format="pytorch", triton={"backend": "python"}
    )
    code, body, _ = run(tmp_path, spec)
    assert code == 1
    result, message = steps(body)["security"]
    assert result == "failed"
    assert "model.pt!archive/data.pkl: dangerous global (picklescan): posix.system" in message
    assert not marker.exists()


def test_zip_slip_archive_is_refused(tmp_path: Path, keyed) -> None:
    model, evalset = keyed
    archive = tmp_path / "asr.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(model, "asr/model.onnx")
        zf.writestr("../../../escaped.txt", "x")
    spec = valid_spec(model, evalset)
    spec["source"] = {"uri": f"file://{archive}", "sha256": sha256_file(archive)}
    code, body, _ = run(tmp_path, spec)
    assert code == 1
    assert steps(body)["security"][1].startswith(
        "archive refused: zip entry '../../../escaped.txt': path traversal"
    )
    assert not (tmp_path / "escaped.txt").exists()


def test_missing_artifact_is_a_fetch_failure_and_invalid_spec_is_a_usage_error(tmp_path: Path, keyed) -> None:
    model, evalset = keyed
    spec = valid_spec(model, evalset)
    spec["source"]["uri"] = f"file://{tmp_path}/nope.onnx"
    code, body, term = run(tmp_path, spec)
    assert code == 3
    assert steps(body)["fetch"][1].endswith("nope.onnx does not exist")
    assert parse_termination_message(term).reason == "FetchFailed"
    spec["format"] = "caffe"
    code, _, term = run(tmp_path, spec)
    assert code == 2
    assert parse_termination_message(term).reason == "InvalidSpec"
    assert "spec.format" in parse_termination_message(term).message


def test_quantize_cli_publishes_an_accepted_model(tmp_path: Path, keyed, capsys) -> None:
    model, evalset = keyed
    out = tmp_path / "published" / "asr-int8.onnx"
    spec = valid_spec(
        model,
        evalset,
        quantization={
            "enabled": True,
            "mode": "dynamic-int8",
            "outputUri": f"file://{out}",
            "maxWerIncrease": 0.0,
        },
    )
    code, body, term = run(tmp_path, spec, "--threads", "1", command="quantize")
    assert code == 0, capsys.readouterr().out
    assert body["accepted"] is True
    assert body["floatWer"] == 0.0 and body["quantizedWer"] == 0.0
    assert body["outputDigest"] == sha256_file(out)
    result = parse_termination_message(term, kind="quantize")
    assert result.ok and result.status["quantization"]["outputUri"] == f"file://{out}"


def test_signed_model_verifies_offline_through_the_cli(tmp_path: Path, keyed) -> None:
    import model_signing
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    model, evalset = keyed
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / "key.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    mounted = tmp_path / "signing-secret"  # a mounted Secret: one file per key
    mounted.mkdir()
    (mounted / "publicKey").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    signature = tmp_path / "model.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(model, signature)
    spec = valid_spec(model, evalset)
    spec["validation"]["signature"] = {
        "publicKeySecretRef": {"name": "k"},
        "signatureUri": f"file://{signature}",
    }

    code, body, _ = run(tmp_path, spec, "--public-key", str(mounted))
    assert code == 0, body
    assert "OpenSSF model signature verified" in steps(body)["integrity"][1]

    code, body, _ = run(tmp_path, spec)
    assert code == 1
    assert steps(body)["integrity"] == (
        "failed",
        "validation.signature is set but no public key was mounted (--public-key)",
    )

    other = tmp_path / "other.onnx"
    onnx.save(samples.ctc_onnx_model(), str(other))
    spec["source"] = {"uri": f"file://{other}", "sha256": sha256_file(other)}
    code, body, _ = run(tmp_path, spec, "--public-key", str(mounted))
    assert code == 1
    assert steps(body)["integrity"][1].startswith("signature model.sig does not verify")


def test_reused_work_dir_never_mixes_in_files_of_an_earlier_run(tmp_path: Path, keyed) -> None:
    model, evalset = keyed
    archive = tmp_path / "asr.tar.gz"

    def pack(with_pickle: bool) -> dict:
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(model, arcname="asr/1/model.onnx")
            if with_pickle:
                data = pickle.dumps({"f": fractions_fraction()}, protocol=2)
                info = tarfile.TarInfo("asr/1/extra.pkl")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        spec = valid_spec(model, evalset)
        spec["source"] = {"uri": f"file://{archive}", "sha256": sha256_file(archive)}
        return spec

    code, body, _ = run(tmp_path, pack(with_pickle=True))
    assert code == 1 and "extra.pkl" in steps(body)["security"][1]
    code, body, _ = run(tmp_path, pack(with_pickle=False))
    assert code == 0, steps(body)
    assert [f["path"] for f in body["artifact"]["files"]] == ["1/model.onnx"]


def fractions_fraction():
    import fractions

    return fractions.Fraction(1, 3)
