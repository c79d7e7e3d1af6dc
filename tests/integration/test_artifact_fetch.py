"""Fetching artifacts from real servers on loopback: an HTTP file server (http.server with
Range support, serving real files) and an S3-compatible server (moto in server mode)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import onnx
import pytest
import yaml

from stt_harness import samples
from stt_operator.artifacts.fetch import (
    Credentials,
    FetchError,
    FetchOptions,
    SizeLimitExceeded,
    fetch,
    publish,
)
from stt_operator.artifacts.jobs import parse_termination_message
from stt_operator.cli import main as cli

pytestmark = pytest.mark.integration

FAST = {"retries": 3, "backoff_s": 0.01, "timeout_s": 2.0}


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.failures: dict[str, int] = {}  # path -> how many more times to misbehave
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        with self.server.lock:
            self.server.requests.append((path, self.headers.get("Range")))
            remaining = self.server.failures.get(path, 0)
            if remaining:
                self.server.failures[path] = remaining - 1
        if path.startswith("/private/") and self.headers.get("Authorization") != "Bearer s3cr3t":
            self.send_error(401)
            return
        file = self.server.root / path.rsplit("/", 1)[-1]
        if not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        if remaining and path.startswith("/unavailable/"):
            self.send_error(503)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not path.startswith("/norange/"):
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if remaining and path.startswith(("/broken/", "/norange/")):
            # Promise everything, send half, drop the connection.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "served"
    root.mkdir()
    server = FileServer(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _payload(root: Path, name: str = "model.onnx", size: int = 3 * 1024 * 1024 + 17) -> tuple[Path, str]:
    data = hashlib.sha256(b"seed").digest() * (size // 32 + 1)
    path = root / name
    path.write_bytes(data[:size])
    return path, hashlib.sha256(data[:size]).hexdigest()


def test_http_download_hashes_on_the_way(http_server: FileServer, tmp_path: Path) -> None:
    path, digest = _payload(http_server.root)
    result = fetch(f"{http_server.url}/files/model.onnx", tmp_path / "dl", FetchOptions(**FAST))
    assert result.sha256 == digest
    assert result.size_bytes == path.stat().st_size
    assert result.path.read_bytes() == path.read_bytes()
    assert not list((tmp_path / "dl").glob("*.part"))


def test_http_resumes_with_range_after_a_dropped_connection(http_server: FileServer, tmp_path: Path) -> None:
    _, digest = _payload(http_server.root)
    http_server.failures["/broken/model.onnx"] = 1
    result = fetch(f"{http_server.url}/broken/model.onnx", tmp_path / "dl", FetchOptions(**FAST))
    assert result.sha256 == digest
    ranges = [r for p, r in http_server.requests if p == "/broken/model.onnx"]
    assert ranges[0] is None
    assert ranges[1] is not None and int(ranges[1].split("=")[1].rstrip("-")) > 0


def test_http_restarts_when_the_server_ignores_range(http_server: FileServer, tmp_path: Path) -> None:
    _, digest = _payload(http_server.root)
    http_server.failures["/norange/model.onnx"] = 1
    result = fetch(f"{http_server.url}/norange/model.onnx", tmp_path / "dl", FetchOptions(**FAST))
    assert result.sha256 == digest


def test_http_retries_server_errors_and_gives_up_on_404(http_server: FileServer, tmp_path: Path) -> None:
    _, digest = _payload(http_server.root)
    http_server.failures["/unavailable/model.onnx"] = 2
    assert (
        fetch(f"{http_server.url}/unavailable/model.onnx", tmp_path / "a", FetchOptions(**FAST)).sha256
        == digest
    )
    assert sum(1 for p, _ in http_server.requests if p == "/unavailable/model.onnx") == 3
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(f"{http_server.url}/files/missing.onnx", tmp_path / "b", FetchOptions(**FAST))
    assert sum(1 for p, _ in http_server.requests if p == "/files/missing.onnx") == 1
    http_server.failures["/unavailable/model.onnx"] = 10
    with pytest.raises(FetchError, match=r"gave up after 4 attempts \(HTTP 503\)"):
        fetch(f"{http_server.url}/unavailable/model.onnx", tmp_path / "c", FetchOptions(**FAST))


def test_http_size_limit_and_bearer_token(http_server: FileServer, tmp_path: Path) -> None:
    _payload(http_server.root)
    with pytest.raises(SizeLimitExceeded, match="exceeds maxSizeBytes=1048576"):
        fetch(
            f"{http_server.url}/files/model.onnx", tmp_path / "a", FetchOptions(max_bytes=1024 * 1024, **FAST)
        )
    assert not list((tmp_path / "a").iterdir())
    with pytest.raises(FetchError, match="HTTP 401"):
        fetch(f"{http_server.url}/private/model.onnx", tmp_path / "b", FetchOptions(**FAST))
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("s3cr3t\n")
    options = FetchOptions(credentials=Credentials.from_dir(secret), **FAST)
    assert fetch(f"{http_server.url}/private/model.onnx", tmp_path / "c", options).size_bytes > 0


# --- S3 (moto server) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_secret(tmp_path: Path, s3_endpoint: str) -> Path:
    secret = tmp_path / "s3-secret"
    secret.mkdir()
    for key, value in {
        "accessKeyId": "AKIATESTING",
        "secretAccessKey": "testing-secret",
        "endpoint": s3_endpoint,
        "region": "us-east-1",
    }.items():
        (secret / key).write_text(value)
    return secret


def _s3(s3_endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIATESTING",
        aws_secret_access_key="testing-secret",
    )


def test_s3_fetch_size_limit_missing_key_and_publish(
    s3_endpoint: str, s3_secret: Path, tmp_path: Path
) -> None:
    client = _s3(s3_endpoint)
    client.create_bucket(Bucket="models")
    path, digest = _payload(tmp_path)
    client.upload_file(str(path), "models", "asr/v1/model.onnx")
    options = FetchOptions(credentials=Credentials.from_dir(s3_secret), **FAST)

    result = fetch("s3://models/asr/v1/model.onnx", tmp_path / "dl", options)
    assert (result.sha256, result.size_bytes) == (digest, path.stat().st_size)

    small = FetchOptions(max_bytes=1000, credentials=options.credentials, **FAST)
    with pytest.raises(SizeLimitExceeded, match="over maxSizeBytes=1000"):
        fetch("s3://models/asr/v1/model.onnx", tmp_path / "dl2", small)
    with pytest.raises(FetchError, match=r"s3://models/nope\.onnx: S3 (404|NoSuchKey)"):
        fetch("s3://models/nope.onnx", tmp_path / "dl3", options)

    assert publish(path, "s3://models/asr-int8/", options) == digest
    body = client.get_object(Bucket="models", Key="asr-int8/model.onnx")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest


def _tar_gz(entries: dict[str, Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for arcname, path in entries.items():
            tf.add(path, arcname=arcname)
    return buffer.getvalue()


def test_validate_job_command_against_s3(s3_endpoint: str, s3_secret: Path, tmp_path: Path) -> None:
    """The exact container command of a validation Job, with the Secret mounted as files."""
    client = _s3(s3_endpoint)
    client.create_bucket(Bucket="catalogue")
    model = tmp_path / "model.onnx"
    onnx.save(samples.keyed_ctc_model(), str(model))
    evalset = samples.write_keyed_evalset(tmp_path / "evalset")
    archive = _tar_gz({"asr/1/model.onnx": model})
    client.put_object(Bucket="catalogue", Key="asr.tar.gz", Body=archive)
    client.put_object(
        Bucket="catalogue",
        Key="evalsets/commands.tar.gz",
        Body=_tar_gz({f"commands/{p.relative_to(evalset)}": p for p in evalset.rglob("*") if p.is_file()}),
    )
    spec = samples.ctc_spec(
        "s3://catalogue/asr.tar.gz",
        hashlib.sha256(archive).hexdigest(),
        validation={
            "evaluationSet": {"uri": "s3://catalogue/evalsets/commands.tar.gz", "manifest": "manifest.jsonl"},
            "thresholds": {"maxWer": 0.0},
        },
    )
    spec["source"]["secretRef"] = {"name": "s3"}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    term = tmp_path / "termination-log"
    code = cli(
        [
            "validate",
            "--spec",
            str(spec_file),
            "--credentials-dir",
            str(s3_secret),
            "--model-name",
            "asr",
            "--report",
            str(tmp_path / "report.json"),
            "--termination-log",
            str(term),
        ]
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0, report
    assert {s["name"]: s["result"] for s in report["steps"]} == {
        "format": "passed",
        "architecture": "passed",
        "dependencies": "passed",
        "security": "passed",
        "integrity": "passed",
        "performance": "passed",
    }
    assert report["metrics"]["utterances"] == 4
    result = parse_termination_message(term.read_text())
    assert (
        result.ok and result.status["artifact"]["digest"] == "sha256:" + hashlib.sha256(archive).hexdigest()
    )


def test_gzip_bomb_over_http_ends_in_a_verdict_within_the_jobs_scratch(
    http_server: FileServer, tmp_path: Path
) -> None:
    """A 1 GiB tar member gzipped to about a megabyte, served by a real HTTP server, validated
    with the scratch size a Job passes (--scratch-bytes): refused at the limit, nothing left."""
    model = tmp_path / "model.onnx"
    onnx.save(samples.keyed_ctc_model(), str(model))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        tf.add(model, arcname="asr/model.onnx")
        info = tarfile.TarInfo("asr/padding.bin")
        info.size = 1024**3

        class Zeros(io.RawIOBase):
            left = info.size

            def readable(self) -> bool:
                return True

            def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        tf.addfile(info, io.BufferedReader(Zeros(), 1024 * 1024))
    bomb = http_server.root / "asr.tar.gz"
    bomb.write_bytes(buffer.getvalue())
    assert bomb.stat().st_size < 4 * 1024 * 1024
    spec = samples.ctc_spec(
        f"{http_server.url}/files/asr.tar.gz", hashlib.sha256(bomb.read_bytes()).hexdigest()
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    term, work = tmp_path / "termination-log", tmp_path / "work"
    scratch = 256 * 1024**2
    outputs = ["--report", str(tmp_path / "report.json"), "--termination-log", str(term)]
    code = cli(
        [
            "validate",
            "--spec",
            str(spec_file),
            *outputs,
            "--work-dir",
            str(work),
            "--scratch-bytes",
            str(scratch),
        ]
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 1, report
    security = next(s for s in report["steps"] if s["name"] == "security")
    limit = scratch - bomb.stat().st_size - 64 * 1024**2
    assert security["result"] == "failed"
    assert f"unpacks to more than {limit} bytes" in security["message"]
    result = parse_termination_message(term.read_text())
    assert not result.ok and result.reason == "ValidationFailed"
    assert sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) < scratch
