import re
from pathlib import Path

import pytest

from stt_operator.artifacts.fetch import (
    Credentials,
    DigestMismatch,
    FetchError,
    FetchOptions,
    SizeLimitExceeded,
    fetch,
    gcs_media_url,
    local_path_for,
    parse_uri,
    publish,
    s3_client_kwargs,
    verify_digest,
)
from stt_operator.artifacts.integrity import build_manifest


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://host/model.onnx", "unsupported scheme 'ftp'"),
        ("model.onnx", "unsupported scheme '(none)'"),
        ("s3://bucket-only", "expected s3://<bucket>/<path>"),
        ("pvc:///no-claim", "expected pvc://<claim>[/<path>]"),
        ("pvc://claim/../../etc/passwd", "'..' is not allowed in a pvc:// path"),
    ],
)
def test_bad_uris_are_named(uri: str, message: str) -> None:
    with pytest.raises(FetchError, match=re.escape(message)):
        local_path_for(uri) if uri.startswith("pvc") else parse_uri(uri)


def test_local_paths_for_file_and_pvc() -> None:
    assert local_path_for("file:///models/a.onnx") == Path("/models/a.onnx")
    assert local_path_for("pvc://models/asr/1/model.onnx", "/mnt/pvc") == Path(
        "/mnt/pvc/models/asr/1/model.onnx"
    )
    assert local_path_for("s3://b/k") is None
    # A bare claim (what the API admits) is the claim's root: an evaluation set or model folder.
    assert local_path_for("pvc://evalset", "/mnt/pvc") == Path("/mnt/pvc/evalset")


def test_publishing_into_a_folder_or_a_claim_root(tmp_path: Path) -> None:
    from stt_operator.artifacts.fetch import target_in

    assert target_in("pvc://models", "m.onnx") == "pvc://models/m.onnx"
    assert target_in("pvc://models/int8/", "m.onnx") == "pvc://models/int8/m.onnx"
    assert target_in("pvc://models/int8.onnx", "m.onnx") == "pvc://models/int8.onnx"
    artifact = tmp_path / "m.onnx"
    artifact.write_bytes(b"int8")
    (tmp_path / "claims" / "models").mkdir(parents=True)
    publish(artifact, "pvc://models", FetchOptions(pvc_root=str(tmp_path / "claims")))
    assert (tmp_path / "claims" / "models" / "m.onnx").read_bytes() == b"int8"


def test_gcs_and_s3_settings_from_a_secret() -> None:
    assert gcs_media_url("my-bucket", "asr/v1/model.onnx") == (
        "https://storage.googleapis.com/storage/v1/b/my-bucket/o/asr%2Fv1%2Fmodel.onnx?alt=media"
    )
    creds = Credentials({"accessKeyId": "AK\n", "secretAccessKey": "SK", "endpoint": "http://minio:9000"})
    assert s3_client_kwargs(creds, environ={}) == {
        "endpoint_url": "http://minio:9000",
        "region_name": "us-east-1",
        "aws_access_key_id": "AK",
        "aws_secret_access_key": "SK",
    }
    assert s3_client_kwargs(Credentials(), environ={"AWS_REGION": "eu-west-1"}) == {
        "region_name": "eu-west-1"
    }


def test_pvc_directory_source_is_copied_with_links_kept_and_digested(tmp_path: Path) -> None:
    repo = tmp_path / "claims" / "models" / "asr"
    (repo / "1").mkdir(parents=True)
    (repo / "1" / "model.onnx").write_bytes(b"x" * 10)
    (repo / "link").symlink_to("/etc/hostname")
    options = FetchOptions(pvc_root=str(tmp_path / "claims"))
    result = fetch("pvc://models/asr", tmp_path / "dl", options)
    assert result.path.is_dir()
    assert (result.path / "link").is_symlink()
    assert result.sha256 == build_manifest(repo).digest
    with pytest.raises(SizeLimitExceeded):
        fetch(
            "pvc://models/asr", tmp_path / "dl2", FetchOptions(pvc_root=str(tmp_path / "claims"), max_bytes=5)
        )


def test_file_size_limit_digest_check_and_publish(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    src.write_bytes(b"y" * 100)
    with pytest.raises(SizeLimitExceeded, match="more than maxSizeBytes=50"):
        fetch(f"file://{src}", tmp_path / "dl", FetchOptions(max_bytes=50))
    assert list((tmp_path / "dl").iterdir()) == []
    result = fetch(f"file://{src}", tmp_path / "dl", FetchOptions())
    verify_digest(result, result.sha256.upper())
    with pytest.raises(
        DigestMismatch, match=f"sha256 {result.sha256} does not match source.sha256 {'0' * 64}"
    ):
        verify_digest(result, "0" * 64)
    assert publish(src, f"file://{tmp_path}/out/") == result.sha256
    assert (tmp_path / "out" / "m.onnx").read_bytes() == src.read_bytes()
