"""Fetch a model artifact from its `source.uri` into a local directory.

Every scheme streams into a `.part` file while hashing (sha256) and counting bytes, so a
size limit stops a download early and the digest is known the moment the last byte lands.
Schemes: `file://`, `pvc://<claim>/<path>` (the claim is mounted under a root directory in
the Job pod), `http(s)://` (retries with backoff, Range resume), `s3://` (boto3, any
S3-compatible endpoint) and `gs://` (the GCS JSON API over HTTPS with a bearer token).

Credentials come from a directory of files (a mounted Secret, one key per file) or the
environment; they are never logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlparse

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
DEFAULT_MAX_BYTES = 20 * 1024**3
DEFAULT_PVC_ROOT = "/mnt/pvc"
SCHEMES = ("file", "pvc", "http", "https", "s3", "gs")


class FetchError(Exception):
    """A fetch failed; the message names the URI and the reason (never a credential)."""


class SizeLimitExceeded(FetchError):
    pass


class UnsafeSource(Exception):
    """A local source holds what must never be copied or opened: FIFOs, sockets, device files,
    hard links. A verdict (the security step fails), not a transient fetch error."""

    def __init__(self, uri: str, problems: list[str]) -> None:
        super().__init__(f"{uri}: " + "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""))
        self.problems = problems


class DigestMismatch(FetchError):
    pass


@dataclass(frozen=True)
class Credentials:
    """What a referenced Secret may hold, by key name. Any field may be empty."""

    values: Mapping[str, str] = field(default_factory=dict)

    def get(self, *keys: str) -> str | None:
        for key in keys:
            value = self.values.get(key)
            if value:
                return value.strip()
        return None

    @classmethod
    def from_dir(cls, directory: str | Path | None) -> Credentials:
        """A mounted Secret: one file per key. Hidden entries (`..data`) are Kubernetes' own."""
        if not directory:
            return cls({})
        root = Path(directory)
        if not root.is_dir():
            raise FetchError(f"credentials directory {root} does not exist or is not a directory")
        values = {
            p.name: p.read_text()
            for p in sorted(root.iterdir())
            if not p.name.startswith(".") and p.is_file()
        }
        return cls(values)


@dataclass(frozen=True)
class FetchOptions:
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = 30.0
    retries: int = 4
    backoff_s: float = 0.5
    pvc_root: str = DEFAULT_PVC_ROOT
    credentials: Credentials = field(default_factory=Credentials)


@dataclass(frozen=True)
class FetchResult:
    path: Path
    sha256: str
    size_bytes: int
    uri: str


class _Sink:
    """Writes chunks to a file while hashing and enforcing the size limit."""

    def __init__(self, handle: BinaryIO, max_bytes: int, uri: str, hasher: Any | None = None) -> None:
        self.handle = handle
        self.max_bytes = max_bytes
        self.uri = uri
        self.hasher = hasher or hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise SizeLimitExceeded(f"{self.uri}: more than maxSizeBytes={self.max_bytes} bytes")
        self.hasher.update(chunk)
        self.handle.write(chunk)


def parse_uri(uri: str) -> tuple[str, str, str]:
    """(scheme, authority, path) with a clear error for anything unsupported."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme not in SCHEMES:
        raise FetchError(
            f"source.uri {uri!r}: unsupported scheme {scheme or '(none)'!r}; use one of {SCHEMES}"
        )
    if scheme in ("s3", "gs") and (not parsed.netloc or not parsed.path.strip("/")):
        raise FetchError(f"source.uri {uri!r}: expected {scheme}://<bucket>/<path>")
    if scheme == "pvc" and not parsed.netloc:  # `pvc://<claim>` alone names the claim's root
        raise FetchError(f"source.uri {uri!r}: expected pvc://<claim>[/<path>]")
    return scheme, parsed.netloc, unquote(parsed.path)


def target_in(uri: str, name: str) -> str:
    """Where a file called `name` goes when published to `uri`: inside it when `uri` names a
    folder (a trailing '/', or a bare `pvc://<claim>`, the claim's root), else `uri` itself."""
    if uri.endswith("/"):
        return uri + name
    scheme, _, path = parse_uri(uri)
    return f"{uri}/{name}" if scheme == "pvc" and not path.strip("/") else uri


def local_path_for(uri: str, pvc_root: str = DEFAULT_PVC_ROOT) -> Path | None:
    """The local path of a `file://` or `pvc://` URI, None for remote schemes."""
    scheme, authority, path = parse_uri(uri)
    if scheme == "file":
        return Path(authority + path) if authority and authority != "localhost" else Path(path)
    if scheme == "pvc":
        relative = Path(path.lstrip("/"))
        if ".." in relative.parts:
            raise FetchError(f"source.uri {uri!r}: '..' is not allowed in a pvc:// path")
        return Path(pvc_root) / authority / relative
    return None


def fetch(uri: str, dest_dir: str | Path, options: FetchOptions | None = None) -> FetchResult:
    """Download `uri` into `dest_dir` (file name from the URI); returns path, digest and size.

    A local directory (file:// or pvc:// pointing at a model repository folder) is copied as
    a tree; its `sha256` is then the manifest digest (see integrity.manifest_digest).
    """
    options = options or FetchOptions()
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    scheme, authority, path = parse_uri(uri)
    name = Path(path).name or "artifact"
    target = dest / name
    local = local_path_for(uri, options.pvc_root)
    if local is not None:
        return _fetch_local(uri, local, target, options)
    if scheme in ("http", "https"):
        return _fetch_http(uri, target, options, headers=_http_auth_headers(options.credentials))
    if scheme == "s3":
        return _fetch_s3(uri, authority, path.lstrip("/"), target, options)
    return _fetch_gcs(uri, authority, path.lstrip("/"), target, options)


def _finish(part: Path, target: Path, sink: _Sink, uri: str) -> FetchResult:
    os.replace(part, target)
    return FetchResult(path=target, sha256=sink.hasher.hexdigest(), size_bytes=sink.size, uri=uri)


def _special(mode: int) -> str | None:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        return f"special file (mode {oct(mode)})"
    return None


def walk_local_source(uri: str, source: Path, max_bytes: int) -> list[tuple[Path, os.stat_result]]:
    """Every entry under a folder source, judged by lstat before anything is opened: a copy
    would hide hard links (the copy has one link) and block on a FIFO. Raises UnsafeSource
    listing every FIFO, socket, device and hard-linked file, SizeLimitExceeded over
    `max_bytes`. Symlinks are kept for the security step to judge; they are never followed."""
    entries: list[tuple[Path, os.stat_result]] = []
    problems: list[str] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = path.relative_to(source).as_posix()
            kind = _special(st.st_mode)
            if kind:
                problems.append(f"{rel}: {kind} in the model folder")
                continue
            if stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    problems.append(
                        f"{rel}: hard link ({st.st_nlink} links) may alias a file outside the model folder"
                    )
                total += st.st_size
                if total > max_bytes:
                    raise SizeLimitExceeded(f"{uri}: more than maxSizeBytes={max_bytes} bytes")
            entries.append((path, st))
    if problems:
        raise UnsafeSource(uri, problems)
    return entries


def _copy_regular(path: Path, st: os.stat_result, dest: Path) -> None:
    """Copy one file checked by lstat; O_NOFOLLOW|O_NONBLOCK and an fstat comparison refuse a
    file swapped for a link or FIFO after the walk."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
            raise UnsafeSource(str(path), [f"{path.name}: changed while being copied"])
        with os.fdopen(fd, "rb", closefd=False) as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    finally:
        os.close(fd)


def _fetch_local(uri: str, source: Path, target: Path, options: FetchOptions) -> FetchResult:
    try:
        top = os.lstat(source)
    except FileNotFoundError:
        raise FetchError(f"source.uri {uri!r}: {source} does not exist") from None
    if stat.S_ISLNK(top.st_mode):
        if not source.exists():
            raise FetchError(f"source.uri {uri!r}: {source} is a dangling symbolic link")
        top = os.stat(source)
    kind = _special(top.st_mode)
    if kind:
        raise UnsafeSource(uri, [f"{source.name}: the source is a {kind}"])
    if stat.S_ISDIR(top.st_mode):
        from stt_operator.artifacts.integrity import build_manifest

        if target.exists():
            shutil.rmtree(target)
        entries = walk_local_source(uri, source, options.max_bytes)
        target.mkdir(parents=True)
        for path, st in entries:
            dest = target / path.relative_to(source)
            if stat.S_ISDIR(st.st_mode):
                dest.mkdir(exist_ok=True)
            elif stat.S_ISLNK(st.st_mode):
                # Kept as a link so the security step can judge where it points.
                os.symlink(os.readlink(path), dest)
            else:
                _copy_regular(path, st, dest)
        manifest = build_manifest(target)
        return FetchResult(path=target, sha256=manifest.digest, size_bytes=manifest.total_bytes, uri=uri)
    part = target.with_name(target.name + ".part")
    try:
        with source.open("rb") as src, part.open("wb") as out:
            sink = _Sink(out, options.max_bytes, uri)
            while chunk := src.read(CHUNK):
                sink.write(chunk)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return _finish(part, target, sink, uri)


# --- HTTP(S) ---------------------------------------------------------------------------


def _http_auth_headers(credentials: Credentials) -> dict[str, str]:
    token = credentials.get("token", "bearerToken")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = credentials.get("username"), credentials.get("password")
    if user and password:
        import base64

        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _retryable_status(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


def _fetch_http(
    uri: str,
    target: Path,
    options: FetchOptions,
    headers: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Stream with retries; on a broken connection resume with `Range` when the server allows.

    The hash object carries over between attempts, so a resumed download is hashed exactly
    once per byte; a server that ignores Range (200 instead of 206) restarts from zero.
    """
    import requests

    part = target.with_name(target.name + ".part")
    hasher = hashlib.sha256()
    received = 0
    last_error: str = ""
    try:
        with part.open("wb") as out:
            for attempt in range(options.retries + 1):
                if attempt:
                    delay = options.backoff_s * 2 ** (attempt - 1)
                    log.info("retrying %s in %.1fs (attempt %d): %s", uri, delay, attempt + 1, last_error)
                    sleep(delay)
                # identity encoding: byte counts and Range offsets then refer to the file itself.
                request_headers = {"Accept-Encoding": "identity", **(headers or {})}
                if received:
                    request_headers["Range"] = f"bytes={received}-"
                try:
                    with requests.get(
                        uri, headers=request_headers, stream=True, timeout=options.timeout_s
                    ) as response:
                        if _retryable_status(response.status_code):
                            last_error = f"HTTP {response.status_code}"
                            continue
                        if response.status_code >= 400:
                            raise FetchError(f"{uri}: HTTP {response.status_code} {response.reason}")
                        if received and response.status_code != 206:
                            # No resume support: start over with a fresh hash.
                            out.seek(0)
                            out.truncate()
                            hasher, received = hashlib.sha256(), 0
                        declared = response.headers.get("Content-Length")
                        start = received
                        if declared and start + int(declared) > options.max_bytes:
                            raise SizeLimitExceeded(
                                f"{uri}: Content-Length {declared} exceeds maxSizeBytes={options.max_bytes}"
                            )
                        sink = _Sink(out, options.max_bytes, uri, hasher)
                        sink.size = start
                        for chunk in response.iter_content(CHUNK):
                            sink.write(chunk)
                        received = sink.size
                        if declared and received - start < int(declared):
                            last_error = f"short read: {received - start} of {declared} bytes"
                            continue
                        out.flush()
                        os.replace(part, target)
                        return FetchResult(
                            path=target, sha256=hasher.hexdigest(), size_bytes=received, uri=uri
                        )
                except (
                    requests.ConnectionError,
                    requests.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                ) as exc:
                    # Keep what arrived (every written byte is already hashed); the next attempt
                    # asks for the rest.
                    received = out.tell()
                    last_error = type(exc).__name__
    except BaseException:
        # Nothing half-written is left behind for a later step to pick up.
        part.unlink(missing_ok=True)
        raise
    part.unlink(missing_ok=True)
    raise FetchError(f"{uri}: gave up after {options.retries + 1} attempts ({last_error})")


# --- S3 ----------------------------------------------------------------------------------


def s3_client_kwargs(credentials: Credentials, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """boto3 client arguments from the Secret's keys, falling back to the standard env vars."""
    env = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {}
    endpoint = credentials.get("endpoint", "endpointUrl", "AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    region = credentials.get("region", "AWS_REGION", "AWS_DEFAULT_REGION") or env.get(
        "AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-east-1")
    )
    kwargs["region_name"] = region
    key = credentials.get("accessKeyId", "AWS_ACCESS_KEY_ID")
    secret = credentials.get("secretAccessKey", "AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs["aws_access_key_id"] = key
        kwargs["aws_secret_access_key"] = secret
        token = credentials.get("sessionToken", "AWS_SESSION_TOKEN")
        if token:
            kwargs["aws_session_token"] = token
    return kwargs


def _fetch_s3(uri: str, bucket: str, key: str, target: Path, options: FetchOptions) -> FetchResult:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    config = Config(
        connect_timeout=options.timeout_s,
        read_timeout=options.timeout_s,
        retries={"max_attempts": options.retries + 1, "mode": "standard"},
    )
    client = boto3.client("s3", config=config, **s3_client_kwargs(options.credentials))
    part = target.with_name(target.name + ".part")
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] > options.max_bytes:
            raise SizeLimitExceeded(
                f"{uri}: object is {head['ContentLength']} bytes, over maxSizeBytes={options.max_bytes}"
            )
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with part.open("wb") as out:
            sink = _Sink(out, options.max_bytes, uri)
            for chunk in body.iter_chunks(CHUNK):
                sink.write(chunk)
    except ClientError as exc:
        part.unlink(missing_ok=True)
        code = exc.response.get("Error", {}).get("Code", "error")
        raise FetchError(f"{uri}: S3 {code}: {exc.response.get('Error', {}).get('Message', '')}") from exc
    except BotoCoreError as exc:
        part.unlink(missing_ok=True)
        raise FetchError(f"{uri}: S3 request failed: {exc}") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return _finish(part, target, sink, uri)


# --- GCS ---------------------------------------------------------------------------------

GCS_API = "https://storage.googleapis.com"


def _gcs_token(credentials: Credentials) -> str | None:
    """An OAuth token: a ready one from the Secret, or one minted from a service-account key."""
    token = credentials.get("token", "accessToken")
    if token:
        return token
    key_json = credentials.get("serviceAccountKey", "key.json", "credentials.json")
    if not key_json:
        return None
    import json

    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    info = json.loads(key_json)
    creds = service_account.Credentials.from_service_account_info(
        info, scopes=["https://www.googleapis.com/auth/devstorage.read_only"]
    )
    creds.refresh(Request())
    return str(creds.token)


def gcs_media_url(bucket: str, obj: str, api_base: str = GCS_API) -> str:
    return f"{api_base.rstrip('/')}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(obj, safe='')}?alt=media"


def _fetch_gcs(uri: str, bucket: str, obj: str, target: Path, options: FetchOptions) -> FetchResult:
    # STORAGE_EMULATOR_HOST is the variable Google's own clients honour for a local endpoint.
    api_base = options.credentials.get("endpoint") or os.environ.get("STORAGE_EMULATOR_HOST") or GCS_API
    headers: dict[str, str] = {}
    token = _gcs_token(options.credentials)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    result = _fetch_http(gcs_media_url(bucket, obj, api_base), target, options, headers=headers)
    return FetchResult(path=result.path, sha256=result.sha256, size_bytes=result.size_bytes, uri=uri)


def iter_file_chunks(path: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while data := handle.read(chunk):
            yield data


def verify_digest(result: FetchResult, expected: str | None) -> None:
    """Raise DigestMismatch naming both digests when a pinned digest does not match."""
    if expected and result.sha256 != expected.lower():
        raise DigestMismatch(
            f"{result.uri}: sha256 {result.sha256} does not match source.sha256 {expected.lower()}"
        )


def publish(path: Path, uri: str, options: FetchOptions | None = None) -> str:
    """Upload one file to `uri` (the quantized artifact's `outputUri`); returns its sha256.

    A URI ending in '/' (or a bare `pvc://<claim>`) names a folder: the file keeps its name
    inside it.
    """
    options = options or FetchOptions()
    uri = target_in(uri, path.name)
    scheme, authority, remote = parse_uri(uri)
    digest = hashlib.sha256()
    for chunk in iter_file_chunks(path):
        digest.update(chunk)
    local = local_path_for(uri, options.pvc_root)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(local.name + ".part")
        shutil.copyfile(path, part)
        os.replace(part, local)
    elif scheme == "s3":
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client("s3", **s3_client_kwargs(options.credentials))
        try:
            client.upload_file(str(path), authority, remote.lstrip("/"))
        except (BotoCoreError, ClientError) as exc:
            raise FetchError(f"{uri}: S3 upload failed: {exc}") from exc
    else:
        import requests

        headers = _http_auth_headers(options.credentials)
        target = uri
        if scheme == "gs":
            api = options.credentials.get("endpoint") or os.environ.get("STORAGE_EMULATOR_HOST") or GCS_API
            token = _gcs_token(options.credentials)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            target = (
                f"{api.rstrip('/')}/upload/storage/v1/b/{quote(authority, safe='')}/o"
                f"?uploadType=media&name={quote(remote.lstrip('/'), safe='')}"
            )
        with path.open("rb") as body:
            method = requests.post if scheme == "gs" else requests.put
            response = method(target, data=body, headers=headers, timeout=options.timeout_s)
        if response.status_code >= 300:
            raise FetchError(f"{uri}: upload failed with HTTP {response.status_code}")
    return digest.hexdigest()
