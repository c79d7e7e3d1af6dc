"""Init-container step: fetch an STTModel artifact and lay out Triton's model repository.

    python -m stt_operator.triton.materialize --uri s3://bucket/asr.onnx --sha256 <hex> \\
        --model asr --config /config/config.pbtxt --repository /models [--version 1]

The artifact is fetched with the project's own fetcher (digest pinned, size limited,
credentials from a mounted Secret directory) and unpacked safely when it is an archive. A
single file becomes the backend's default file name (`model.onnx`, `model.plan`, ...); a
directory (a Python model with its data, or an unpacked archive) is copied as the version
directory's content.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from stt_operator.models import model_source
from stt_operator.triton.config import (
    DEFAULT_MODEL_FILENAME,
    ONNX_FILE_PARAMETER,
    parse_config_pbtxt,
    with_instance_kind,
)
from stt_operator.triton.repository import FileContent, write_model

ONNX_RUNNER = "onnx_runner"  # stt_operator/models/onnx_runner/model.py


def version_files(artifact: Path, backend: str, onnx_file: str | None = None) -> dict[str, FileContent]:
    """What goes into `<model>/<version>/` for a fetched (and unpacked) artifact.

    `onnx_file` set (the rendered config's `onnx_file` parameter: an ONNX model on the Python
    backend) means the built-in ONNX runner serves it: a single file is laid out under that
    name, and the runner's `model.py` is added unless the artifact brings its own."""
    if artifact.is_dir():
        files: dict[str, FileContent] = {}
        for path in sorted(artifact.rglob("*")):
            if path.is_symlink():
                raise ValueError(f"artifact {artifact}: symlink {path.relative_to(artifact)} is not allowed")
            if path.is_file():
                files[path.relative_to(artifact).as_posix()] = path
        if not files:
            raise ValueError(f"artifact {artifact}: directory is empty")
    elif onnx_file:
        files = {onnx_file: artifact}
    else:
        return {DEFAULT_MODEL_FILENAME[backend]: artifact}
    if onnx_file:
        if onnx_file not in files:
            raise ValueError(f"artifact {artifact}: no {onnx_file} for the ONNX runner to load")
        files.setdefault(DEFAULT_MODEL_FILENAME["python"], model_source(ONNX_RUNNER) / "model.py")
    return files


def onnx_runner_file(config: object) -> str | None:
    """The ONNX file the built-in runner loads, when the config serves ONNX on the Python backend."""
    if getattr(config, "backend", "") != "python":
        return None
    parameter = getattr(config, "parameters", {}).get(ONNX_FILE_PARAMETER)
    return parameter.string_value if parameter is not None and parameter.string_value else None


def served_versions(config: object, default: int = 1) -> list[int]:
    """Version directories the rendered config needs: a `specific` version policy serves exactly
    its listed versions (each must exist, or Triton never reports the model ready); `latest`
    and `all` serve whatever is present, so the one artifact goes under `default`."""
    policy = getattr(config, "version_policy", None)
    if policy is not None and policy.WhichOneof("policy_choice") == "specific":
        return sorted(set(policy.specific.versions))
    return [default]


def materialize(
    uri: str,
    model: str,
    config_text: str,
    repository: Path,
    *,
    sha256: str | None = None,
    version: int = 1,
    archive: str | None = None,
    credentials_dir: str | None = None,
    max_bytes: int | None = None,
    instance_kind: str | None = None,
) -> Path:
    from stt_operator.artifacts.archives import prepare
    from stt_operator.artifacts.fetch import Credentials, FetchOptions, fetch, verify_digest

    if instance_kind:  # a pod without GPUs serves a KIND_GPU model on CPU instances
        config_text = with_instance_kind(config_text, instance_kind)
    config = parse_config_pbtxt(config_text)
    if config.name and config.name != model:
        raise ValueError(f"--config: model name {config.name!r} does not match --model {model!r}")
    options = FetchOptions(credentials=Credentials.from_dir(credentials_dir))
    if max_bytes:
        options = FetchOptions(max_bytes=max_bytes, credentials=options.credentials)
    # The download lands inside the repository volume: in the init container it is the only
    # writable place (read-only root filesystem, no /tmp). A dot-directory Triton never loads.
    repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=repository) as tmp:
        result = fetch(uri, Path(tmp) / "download", options)
        verify_digest(result, sha256)
        artifact = prepare(result.path, archive, Path(tmp))
        files = version_files(artifact, config.backend or "python", onnx_runner_file(config))
        for served in served_versions(config, version):
            target = repository / model / str(served)
            if target.exists():
                shutil.rmtree(target)  # idempotent: a restarted init container starts clean
            write_model(repository, model, config_text, files, served)
        return repository / model


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m stt_operator.triton.materialize", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--uri", required=True)
    ap.add_argument("--model", required=True, help="Triton model name")
    ap.add_argument("--config", required=True, help="path of the rendered config.pbtxt")
    ap.add_argument("--repository", required=True)
    ap.add_argument("--sha256")
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--archive", choices=["none", "tar", "tar.gz", "zip"])
    ap.add_argument("--credentials-dir")
    ap.add_argument("--max-bytes", type=int)
    ap.add_argument(
        "--instance-kind", choices=["KIND_CPU", "KIND_GPU"], help="rewrite the config's instance groups"
    )
    a = ap.parse_args(argv)
    try:
        config_text = Path(a.config).read_text()
        path = materialize(
            a.uri,
            a.model,
            config_text,
            Path(a.repository),
            sha256=a.sha256,
            version=a.version,
            archive=a.archive,
            credentials_dir=a.credentials_dir,
            max_bytes=a.max_bytes,
            instance_kind=a.instance_kind,
        )
    except Exception as exc:  # the init container's termination message names the cause
        print(f"materialize: {exc}", file=sys.stderr)
        termination_log = Path("/dev/termination-log")
        if termination_log.exists():
            termination_log.write_text(str(exc)[:4000])
        return 1
    print(f"model repository entry ready: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
