from pathlib import Path

import model_signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stt_operator.artifacts.integrity import build_manifest, integrity_step, sha256_file


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "1").mkdir(parents=True)
    (root / "1" / "model.onnx").write_bytes(b"onnx" * 100)
    (root / "config.pbtxt").write_text('name: "asr"\n')
    return root


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / "signing.key"
    public = tmp_path / "signing.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def test_manifest_is_sorted_deterministic_and_sees_every_file(model_dir: Path) -> None:
    manifest = build_manifest(model_dir)
    assert [f.path for f in manifest.files] == ["1/model.onnx", "config.pbtxt"]
    assert manifest.files[0].sha256 == sha256_file(model_dir / "1" / "model.onnx")
    assert manifest.total_bytes == 400 + 12
    assert build_manifest(model_dir).digest == manifest.digest
    (model_dir / "config.pbtxt").write_text('name: "asr2"\n')
    assert build_manifest(model_dir).digest != manifest.digest


def test_wrong_digest_names_both(model_dir: Path) -> None:
    result, _ = integrity_step(model_dir, "a" * 64, "B" * 64, "model.tar.gz")
    assert result.result == "failed"
    assert result.message == f"sha256 mismatch: model.tar.gz is {'a' * 64}, source.sha256 pins {'b' * 64}"


def test_unpinned_digest_is_a_visible_waiver_with_the_digest_to_pin(model_dir: Path) -> None:
    result, _ = integrity_step(model_dir, "c" * 64, None, "model.onnx")
    # The step ran (manifest); only the pin check is waived, and the waiver is named.
    assert result.result == "passed"
    assert result.details["waiver"] == "DigestNotPinned"
    assert "digest check waived (DigestNotPinned)" in result.message
    assert "c" * 64 in result.message


def test_openssf_signature_verifies_offline_and_catches_tampering(
    model_dir: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    private, public = keys
    signature = tmp_path / "model.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(model_dir, signature)
    digest = "d" * 64
    ok, _ = integrity_step(model_dir, digest, digest, "repo", signature, public)
    assert ok.result == "passed", ok.message
    assert "OpenSSF model signature verified" in ok.message

    (model_dir / "1" / "model.onnx").write_bytes(b"evil" * 100)
    bad, _ = integrity_step(model_dir, digest, digest, "repo", signature, public)
    assert bad.result == "failed"
    assert bad.message.startswith("signature model.sig does not verify:")

    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    wrong_key = tmp_path / "other.pub"
    wrong_key.write_bytes(
        other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(model_dir, signature)
    wrong, _ = integrity_step(model_dir, digest, digest, "repo", signature, wrong_key)
    assert wrong.result == "failed"
