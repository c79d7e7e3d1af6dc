"""`stt-operator validate`: the container command of an STTModel's validation Job.

Fetches the artifact (and evaluation set, and signature), unpacks it safely, runs the six
steps, writes the full JSON report to `--report`, a compact one to `--termination-log` (the
kubelet hands it to the operator) and a few-line summary to stdout.

Exit codes: 0 passed, 1 the model failed validation (a verdict: do not retry), 2 the spec or
arguments are invalid, 3 fetching failed (transient: the Job may retry).

Every input gets a verdict: an unexpected error inside a step is that step failing with the
error named, and a guard around the whole run turns anything else into a failed `validator`
step, so a hostile artifact never ends in a bare traceback. What is unpacked and held in
memory is bounded by the Job's own memory and scratch space (`--memory-bytes`,
`--scratch-bytes`; measured from the cgroup and the file system when not given).
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
from typing import Any, TypeVar

import yaml

from stt_operator.artifacts import archives, fetch
from stt_operator.artifacts.contract import IOContract, architecture_step
from stt_operator.artifacts.dependencies import dependencies_step, triton_version_from_image
from stt_operator.artifacts.formats import format_step
from stt_operator.artifacts.integrity import build_manifest, integrity_step
from stt_operator.artifacts.performance import Sample, load_samples, performance_step
from stt_operator.artifacts.report import (
    DEFAULT_REQUIRED_STEPS,
    REQUIRABLE_STEPS,
    ArtifactInfo,
    StepResult,
    ValidationReport,
)
from stt_operator.artifacts.security import ScanLimits, security_step

log = logging.getLogger(__name__)

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_FETCH = 0, 1, 2, 3
SPEC_ENV = "STT_MODEL_SPEC"
NAME_ENV = "STT_MODEL_NAME"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
PUBLIC_KEY_NAMES = ("publicKey", "public.pem", "key.pub", "cosign.pub", "tls.crt")
MEMORY_ENV, SCRATCH_ENV = "STT_VALIDATE_MEMORY_BYTES", "STT_VALIDATE_SCRATCH_BYTES"
# Scratch kept free for the report, the evaluation set's manifest and temporary files.
SCRATCH_RESERVE = 64 * 1024**2
T = TypeVar("T")


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
    parser.add_argument(
        "--memory-bytes",
        type=int,
        default=_env_int(MEMORY_ENV),
        help=f"the container's memory limit (bounds in-memory scans); default: ${MEMORY_ENV} or the cgroup's",
    )
    parser.add_argument(
        "--scratch-bytes",
        type=int,
        default=_env_int(SCRATCH_ENV),
        help=f"scratch for download + unpacking; default: ${SCRATCH_ENV} or the free space of --work-dir",
    )


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


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
    parser.add_argument(
        "--required-steps",
        help="comma-separated steps that must run (not be skipped) for the model to pass, on top of "
        f"spec.validation.requiredSteps; default {','.join(DEFAULT_REQUIRED_STEPS)}; "
        f"choices {','.join(REQUIRABLE_STEPS)}",
    )


def cgroup_memory_limit() -> int | None:
    """The memory limit of this container (cgroup v2 or v1), None when unlimited/unknown."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


@dataclass(frozen=True)
class ResourceLimits:
    """What this run may use: memory for in-memory scans, scratch for download + unpack."""

    memory_bytes: int | None
    scratch_bytes: int | None

    @classmethod
    def detect(cls, args: argparse.Namespace, work: Path) -> ResourceLimits:
        memory = getattr(args, "memory_bytes", None) or cgroup_memory_limit()
        scratch = getattr(args, "scratch_bytes", None)
        if scratch is None:
            try:
                scratch = shutil.disk_usage(work).free
            except OSError:
                scratch = None
        return cls(memory, scratch)

    def scan_limits(self) -> ScanLimits:
        return ScanLimits.from_memory(self.memory_bytes)

    def unpack_bytes(self, max_bytes: int, downloaded: int) -> int:
        """At most maxSizeBytes, and never more than the scratch left after the download."""
        if self.scratch_bytes is None:
            return max_bytes
        return max(0, min(max_bytes, self.scratch_bytes - downloaded - SCRATCH_RESERVE))


def required_steps(args: argparse.Namespace, spec: Mapping[str, Any]) -> list[str]:
    """The operator's floor (--required-steps, default security+integrity) plus what
    spec.validation.requiredSteps adds. A spec can ask for more, never for less."""
    floor = (
        [s.strip() for s in args.required_steps.split(",") if s.strip()]
        if getattr(args, "required_steps", None)
        else list(DEFAULT_REQUIRED_STEPS)
    )
    extra = list(((spec.get("validation") or {}).get("requiredSteps")) or [])
    steps = list(dict.fromkeys([*floor, *extra]))
    unknown = [s for s in steps if s not in REQUIRABLE_STEPS]
    if unknown:
        raise SpecError(f"required steps {unknown}: expected names from {list(REQUIRABLE_STEPS)}")
    return steps


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


def prepare_artifact(
    args: argparse.Namespace,
    spec: Mapping[str, Any],
    work: Path,
    resources: ResourceLimits | None = None,
) -> Prepared:
    """Fetch + unpack within the scratch space. Raises FetchError, UnsafeSource or UnsafeArchive."""
    source = spec["source"]
    resources = resources or ResourceLimits.detect(args, work)
    options = fetch_options(args, spec)
    if resources.scratch_bytes is not None:
        # A download larger than the scratch volume would only end in ENOSPC.
        room = max(1, resources.scratch_bytes - SCRATCH_RESERVE)
        options = fetch.FetchOptions(
            max_bytes=min(options.max_bytes, room),
            pvc_root=options.pvc_root,
            credentials=options.credentials,
        )
    _fresh(work / "download")
    result = fetch.fetch(source["uri"], work / "download", options)
    unpack = resources.unpack_bytes(options.max_bytes, result.size_bytes)
    limits = archives.ArchiveLimits(max_total_bytes=unpack, max_files=args.max_archive_files)
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
    unpack = ResourceLimits.detect(args, work).unpack_bytes(options.max_bytes, result.size_bytes)
    root = archives.prepare(result.path, None, work / "evalset", archives.ArchiveLimits(unpack))
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


def _error_text(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


def guarded(name: str, fallback: T, fn: Any, *args: Any, **kwargs: Any) -> tuple[StepResult | None, T]:
    """Run one step's function; an unexpected error becomes that step failing with the error
    named (a verdict), never a traceback. Returns (failure or None, result or fallback)."""
    try:
        return None, fn(*args, **kwargs)
    except Exception as exc:  # hostile input may break any parser
        log.exception("step %s failed unexpectedly", name)
        reason = f"the {name} step could not complete on this artifact ({_error_text(exc)})"
        return StepResult.failed(name, reason, findings=[reason], unexpected=True), fallback


def run_validation(
    args: argparse.Namespace,
    spec: Mapping[str, Any],
    name: str | None,
    work: Path,
    required: list[str] | None = None,
    resources: ResourceLimits | None = None,
) -> ValidationReport:
    report = ValidationReport(model=name, format=None)
    if required is not None:
        report.required_steps = required
    resources = resources or ResourceLimits.detect(args, work)
    try:
        prepared = prepare_artifact(args, spec, work, resources)
    except archives.UnsafeArchive as exc:
        report.steps.append(StepResult.failed("security", f"archive refused: {exc}", findings=[str(exc)]))
        _skip_rest(report, "the archive was refused")
        return report
    except fetch.UnsafeSource as exc:
        report.steps.append(
            StepResult.failed("security", f"source refused: {exc}", findings=list(exc.problems))
        )
        _skip_rest(report, "the source was refused")
        return report
    except fetch.FetchError as exc:
        report.steps.append(StepResult.failed("fetch", str(exc), findings=[str(exc)]))
        _skip_rest(report, "the artifact could not be fetched")
        return report
    except Exception as exc:  # e.g. ENOSPC, a corrupt archive the readers choke on
        log.exception("preparing the artifact failed unexpectedly")
        reason = f"the artifact could not be prepared for inspection ({_error_text(exc)})"
        report.steps.append(StepResult.failed("prepare", reason, findings=[reason]))
        _skip_rest(report, "the artifact could not be prepared")
        return report
    root, fetched = prepared.root, prepared.fetched

    from stt_operator.artifacts.formats import Detected

    failure, (fmt_result, detected) = guarded(
        "format",
        (None, Detected(None, None, "format detection failed")),
        format_step,
        root,
        spec.get("format"),
    )
    fmt_result = failure or fmt_result
    report.steps.append(fmt_result)
    report.format = detected.format
    model_path = detected.path if fmt_result.result == "passed" else None
    fmt = detected.format if model_path else None

    contract = IOContract.from_spec(spec)
    failure, (arch_result, _signature_io) = guarded(
        "architecture", (None, None), architecture_step, fmt, model_path, contract, root
    )
    report.steps.append(failure or arch_result)

    triton = spec.get("triton") or {}
    triton_version = args.triton_version or triton_version_from_image(
        triton.get("image") or args.triton_image or _default_triton_image()
    )
    failure, deps = guarded("dependencies", None, dependencies_step, fmt, model_path, triton, triton_version)
    report.steps.append(failure or deps)

    allowed = ((spec.get("validation") or {}).get("security") or {}).get("allowedPickleGlobals") or []
    failure, security_result = guarded(
        "security",
        None,
        security_step,
        root,
        detected.format,
        detected.path,
        allowed,
        limits=resources.scan_limits(),
    )
    security_result = failure or security_result
    report.steps.append(security_result)

    what = (
        f"archive {fetched.path.name}"
        if fetched.path != root and fetched.path.is_file()
        else fetched.path.name
    )
    manifest = None
    try:
        signature_path = _signature(args, spec, work)
    except Exception as exc:  # a fetch error or anything the signature source throws
        signature_path = None
        integrity_result = StepResult.failed("integrity", f"signature could not be fetched: {exc}")
    else:
        failure, (integrity_result, manifest) = guarded(
            "integrity",
            (None, None),
            integrity_step,
            root,
            fetched.sha256,
            (spec.get("source") or {}).get("sha256"),
            what,
            signature_path,
            _public_key(args.public_key) if signature_path else None,
        )
        integrity_result = failure or integrity_result
        if signature_path is not None and args.public_key is None:
            integrity_result = StepResult.failed(
                "integrity", "validation.signature is set but no public key was mounted (--public-key)"
            )
    waiver = integrity_result.details.get("waiver")
    if waiver and integrity_result.result == "passed":
        report.waivers.append(str(waiver))
    _, manifest = guarded("integrity", None, lambda: manifest or build_manifest(root))
    report.artifact = ArtifactInfo(
        uri=fetched.uri,
        digest=fetched.sha256,
        size_bytes=fetched.size_bytes,
        files=list(manifest.files) if manifest else [],
    )
    report.steps.append(integrity_result)

    blockers = [s.name for s in report.steps if s.result == "failed" and s.name != "dependencies"]
    blocked = f"{', '.join(blockers)} failed; an unverified model is never run" if blockers else None
    samples = None
    if not blocked and fmt == "onnx":
        try:
            samples = load_evaluation_set(args, spec, work)
        except Exception as exc:  # any unusable set is this step's failure
            blocked = f"evaluation set unusable: {_error_text(exc)}"
    from stt_operator.artifacts.report import Metrics

    failure, (perf_result, metrics) = guarded(
        "performance",
        (None, Metrics()),
        performance_step,
        fmt,
        model_path,
        contract,
        samples,
        (spec.get("validation") or {}).get("thresholds"),
        blocked_by=blocked,
        providers=args.providers.split(",") if args.providers else None,
    )
    perf_result = failure or perf_result
    if blocked and blocked.startswith("evaluation set unusable"):
        perf_result = StepResult.failed("performance", blocked, findings=[blocked])
    report.steps.append(perf_result)
    report.metrics = metrics
    return report


def crashed_report(name: str | None, exc: BaseException, required: list[str] | None) -> ValidationReport:
    """The verdict when the run itself broke outside any step: failed, the error named."""
    reason = f"validation could not complete ({_error_text(exc)}); the model is not trusted"
    report = ValidationReport(model=name, format=None)
    if required is not None:
        report.required_steps = required
    report.steps.append(StepResult.failed("validator", reason, findings=[reason]))
    _skip_rest(report, "the validator stopped early")
    return report


def _default_triton_image() -> str:
    from stt_operator.images import DEFAULT_TRITON_IMAGE

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
    try:
        required = required_steps(args, spec)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        write_outputs("", json.dumps({"kind": "validation", "passed": False, "error": str(exc)[:3000]}), args)
        return EXIT_USAGE
    work, temporary = scratch(args)
    try:
        report = run_validation(args, spec, args.model_name or name, work, required)
    except Exception as exc:  # the top-level guard: a verdict, never a traceback
        log.exception("validation stopped unexpectedly")
        report = crashed_report(args.model_name or name, exc, required)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    write_outputs(report.to_json(), report.termination_message(), args)
    print(report.summary_text())
    if report.step("fetch") is not None:
        return EXIT_FETCH
    return EXIT_PASSED if report.passed else EXIT_FAILED
