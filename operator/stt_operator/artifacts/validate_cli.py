"""`stt-operator validate`: the container command of an STTModel's validation Job.

Fetches the artifact (and evaluation set, and signature), unpacks it safely, runs the six
steps, writes the full JSON report to `--report`, a compact one to `--termination-log` (the
kubelet hands it to the operator) and a few-line summary to stdout.

Exit codes: 0 passed, 1 the model failed validation (a verdict: do not retry), 2 the spec or
arguments are invalid, 3 fetching failed (transient: the Job may retry).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stt_operator.artifacts import archives, fetch
from stt_operator.artifacts.contract import IOContract, architecture_step
from stt_operator.artifacts.dependencies import dependencies_step, triton_version_from_image
from stt_operator.artifacts.formats import format_step
from stt_operator.artifacts.integrity import build_manifest, integrity_step
from stt_operator.artifacts.performance import Sample, load_samples, performance_step
from stt_operator.artifacts.report import ArtifactInfo, StepResult, ValidationReport
from stt_operator.artifacts.security import security_step

log = logging.getLogger(__name__)

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_FETCH = 0, 1, 2, 3
SPEC_ENV = "STT_MODEL_SPEC"
NAME_ENV = "STT_MODEL_NAME"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
PUBLIC_KEY_NAMES = ("publicKey", "public.pem", "key.pub", "cosign.pub", "tls.crt")


class SpecError(ValueError):
    pass


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared with `stt-operator quantize`."""
    parser.add_argument("--spec", help=f"STTModel (or its spec) as YAML/JSON file; default: ${SPEC_ENV}")
    parser.add_argument("--model-name", default=os.environ.get(NAME_ENV), help="name for the report")
    parser.add_argument("--work-dir", help="scratch directory (default: a temporary one)")
    parser.add_argument("--credentials-dir", help="mounted Secret of source.secretRef (one file per key)")
    parser.add_argument("--pvc-root", default=fetch.DEFAULT_PVC_ROOT, help="where pvc:// claims are mounted")
    parser.add_argument(
        "--evalset", help="local evaluation set directory (overrides validation.evaluationSet)"
    )
    parser.add_argument("--max-utterances", type=int, help="evaluate at most this many utterances")
    parser.add_argument("--providers", help="onnxruntime providers, comma-separated (default: by device)")
    parser.add_argument("--report", help="write the full JSON report here")
    parser.add_argument(
        "--termination-log",
        default=DEFAULT_TERMINATION_LOG,
        help="write the compact report (<= 4 KiB) here; ignored when the path's folder does not exist",
    )
    parser.add_argument("--max-archive-files", type=int, default=archives.ArchiveLimits.max_files)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--public-key", help="public key file or mounted Secret folder for signature checks")
    parser.add_argument(
        "--signature", help="local signature file (overrides validation.signature.signatureUri)"
    )
    parser.add_argument(
        "--triton-image", help="targeted Triton image (its tag selects the onnxruntime version)"
    )
    parser.add_argument(
        "--triton-version", help="targeted Triton release, e.g. 25.10 (overrides --triton-image)"
    )


def load_spec(
    path: str | None, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], str | None]:
    """(spec dict in camelCase, name from metadata if given) validated by the API models."""
    from pydantic import ValidationError

    from stt_operator.api.sttmodel import STTModelSpec

    env = os.environ if environ is None else environ
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SpecError(f"--spec {path}: {exc}") from exc
    elif env.get(SPEC_ENV):
        try:
            raw = json.loads(env[SPEC_ENV])
        except json.JSONDecodeError as exc:
            raise SpecError(f"${SPEC_ENV}: not valid JSON ({exc})") from exc
    else:
        raise SpecError(f"no spec: pass --spec or set ${SPEC_ENV}")
    if not isinstance(raw, dict):
        raise SpecError("the spec must be a mapping")
    name = (raw.get("metadata") or {}).get("name")
    spec = raw.get("spec", raw) if "spec" in raw else raw
    try:
        STTModelSpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SpecError(f"spec.{where}: {first['msg']} ({len(exc.errors())} error(s))") from exc
    return spec, name


@dataclass
class Prepared:
    """A fetched, digested and (when an archive) unpacked artifact."""

    root: Path
    fetched: fetch.FetchResult


def fetch_options(args: argparse.Namespace, spec: Mapping[str, Any]) -> fetch.FetchOptions:
    source = spec.get("source") or {}
    return fetch.FetchOptions(
        max_bytes=int(source.get("maxSizeBytes") or fetch.DEFAULT_MAX_BYTES),
        pvc_root=args.pvc_root,
        credentials=fetch.Credentials.from_dir(args.credentials_dir),
    )


def prepare_artifact(args: argparse.Namespace, spec: Mapping[str, Any], work: Path) -> Prepared:
    """Fetch + unpack. Raises FetchError or UnsafeArchive."""
    source = spec["source"]
    options = fetch_options(args, spec)
    _fresh(work / "download")
    result = fetch.fetch(source["uri"], work / "download", options)
    limits = archives.ArchiveLimits(max_total_bytes=options.max_bytes, max_files=args.max_archive_files)
    root = archives.prepare(result.path, source.get("archive"), work / "unpacked", limits)
    return Prepared(root=root, fetched=result)


def load_evaluation_set(args: argparse.Namespace, spec: Mapping[str, Any], work: Path) -> list[Sample] | None:
    if args.evalset:
        return load_samples(args.evalset, args.max_utterances)
    evalset = (spec.get("validation") or {}).get("evaluationSet")
    if not evalset:
        return None
    options = fetch_options(args, spec)
    _fresh(work / "evalset-download")
    result = fetch.fetch(evalset["uri"], work / "evalset-download", options)
    root = archives.prepare(result.path, None, work / "evalset", archives.ArchiveLimits(options.max_bytes))
    target = root / evalset["manifest"] if evalset.get("manifest") else root
    return load_samples(target, args.max_utterances)


def _public_key(path: str | None) -> Path | None:
    if not path:
        return None
    p = Path(path)
    if p.is_dir():
        for name in PUBLIC_KEY_NAMES:
            if (p / name).is_file():
                return p / name
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        return files[0] if files else None
    return p


def _signature(args: argparse.Namespace, spec: Mapping[str, Any], work: Path) -> Path | None:
    if args.signature:
        return Path(args.signature)
    signature = (spec.get("validation") or {}).get("signature")
    if not signature:
        return None
    options = fetch_options(args, spec)
    _fresh(work / "signature")
    return fetch.fetch(signature["signatureUri"], work / "signature", options).path


def _fresh(directory: Path) -> None:
    """A re-used --work-dir must not let files of an earlier run into this one."""
    if directory.exists():
        shutil.rmtree(directory)


def _skip_rest(report: ValidationReport, reason: str) -> None:
    done = {s.name for s in report.steps}
    for name in ("format", "architecture", "dependencies", "security", "integrity", "performance"):
        if name not in done:
            report.steps.append(StepResult.skipped(name, reason))


def run_validation(
    args: argparse.Namespace, spec: Mapping[str, Any], name: str | None, work: Path
) -> ValidationReport:
    report = ValidationReport(model=name, format=None)
    try:
        prepared = prepare_artifact(args, spec, work)
    except archives.UnsafeArchive as exc:
        report.steps.append(StepResult.failed("security", f"archive refused: {exc}", findings=[str(exc)]))
        _skip_rest(report, "the archive was refused")
        return report
    except fetch.FetchError as exc:
        report.steps.append(StepResult.failed("fetch", str(exc), findings=[str(exc)]))
        _skip_rest(report, "the artifact could not be fetched")
        return report
    root, fetched = prepared.root, prepared.fetched

    fmt_result, detected = format_step(root, spec.get("format"))
    report.steps.append(fmt_result)
    report.format = detected.format
    model_path = detected.path if fmt_result.result == "passed" else None
    fmt = detected.format if model_path else None

    contract = IOContract.from_spec(spec)
    arch_result, _signature_io = architecture_step(fmt, model_path, contract, root)
    report.steps.append(arch_result)

    triton = spec.get("triton") or {}
    triton_version = args.triton_version or triton_version_from_image(
        triton.get("image") or args.triton_image or _default_triton_image()
    )
    report.steps.append(dependencies_step(fmt, model_path, triton, triton_version))

    allowed = ((spec.get("validation") or {}).get("security") or {}).get("allowedPickleGlobals") or []
    security_result = security_step(root, detected.format, detected.path, allowed)
    report.steps.append(security_result)

    what = (
        f"archive {fetched.path.name}"
        if fetched.path != root and fetched.path.is_file()
        else fetched.path.name
    )
    manifest = None
    try:
        signature_path = _signature(args, spec, work)
    except fetch.FetchError as exc:
        signature_path = None
        integrity_result = StepResult.failed("integrity", f"signature could not be fetched: {exc}")
    else:
        integrity_result, manifest = integrity_step(
            root,
            fetched.sha256,
            (spec.get("source") or {}).get("sha256"),
            what,
            signature_path,
            _public_key(args.public_key) if signature_path else None,
        )
        if signature_path is not None and args.public_key is None:
            integrity_result = StepResult.failed(
                "integrity", "validation.signature is set but no public key was mounted (--public-key)"
            )
    manifest = manifest or build_manifest(root)
    report.artifact = ArtifactInfo(
        uri=fetched.uri, digest=fetched.sha256, size_bytes=fetched.size_bytes, files=list(manifest.files)
    )
    report.steps.append(integrity_result)

    blockers = [s.name for s in report.steps if s.result == "failed" and s.name != "dependencies"]
    blocked = f"{', '.join(blockers)} failed; an unverified model is never run" if blockers else None
    samples = None
    if not blocked and fmt == "onnx":
        try:
            samples = load_evaluation_set(args, spec, work)
        except (fetch.FetchError, archives.UnsafeArchive, ValueError, FileNotFoundError) as exc:
            blocked = f"evaluation set unusable: {exc}"
    perf_result, metrics = performance_step(
        fmt,
        model_path,
        contract,
        samples,
        (spec.get("validation") or {}).get("thresholds"),
        blocked_by=blocked,
        providers=args.providers.split(",") if args.providers else None,
    )
    if blocked and blocked.startswith("evaluation set unusable"):
        perf_result = StepResult.failed("performance", blocked, findings=[blocked])
    report.steps.append(perf_result)
    report.metrics = metrics
    return report


def _default_triton_image() -> str:
    from stt_operator.settings import DEFAULT_TRITON_IMAGE

    return DEFAULT_TRITON_IMAGE


def write_outputs(report_json: str, termination: str, args: argparse.Namespace) -> None:
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(report_json)
    if args.termination_log and Path(args.termination_log).parent.is_dir():
        try:
            Path(args.termination_log).write_text(termination)
        except OSError as exc:  # e.g. /dev not writable outside a pod
            log.warning("cannot write termination log %s: %s", args.termination_log, exc)


def scratch(args: argparse.Namespace) -> tuple[Path, bool]:
    if args.work_dir:
        path = Path(args.work_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix="stt-validate-")), True


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        spec, name = load_spec(args.spec)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        write_outputs("", json.dumps({"kind": "validation", "passed": False, "error": str(exc)[:3000]}), args)
        return EXIT_USAGE
    work, temporary = scratch(args)
    try:
        report = run_validation(args, spec, args.model_name or name, work)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    write_outputs(report.to_json(), report.termination_message(), args)
    print(report.summary_text())
    if report.step("fetch") is not None:
        return EXIT_FETCH
    return EXIT_PASSED if report.passed else EXIT_FAILED
