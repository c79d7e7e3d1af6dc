"""`stt-operator quantize`: the container command of an STTModel's quantization Job.

Fetches the float model (its pinned digest must match), converts it (`quantization.mode`),
gates the result on WER against the float model over the evaluation set, measures the
speed-up, and — only when accepted — publishes it to `quantization.outputUri`. The report
(JSON file + compact termination message) carries both WERs, the speed-up and the digest the
derived `-int8` / `-fp16` STTModel pins.

Exit codes: 0 accepted, 1 rejected by the gate or not quantizable, 2 invalid spec/arguments,
3 fetch or publish failed (transient).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from stt_operator.artifacts import archives, fetch
from stt_operator.artifacts.contract import IOContract
from stt_operator.artifacts.formats import detect
from stt_operator.artifacts.quantize import DEFAULT_EXCLUDE, MODES, run_quantization
from stt_operator.artifacts.report import QuantizationReport
from stt_operator.artifacts.validate_cli import (
    EXIT_FAILED,
    EXIT_FETCH,
    EXIT_PASSED,
    EXIT_USAGE,
    SpecError,
    add_common_arguments,
    fetch_options,
    load_evaluation_set,
    load_spec,
    prepare_artifact,
    scratch,
    write_outputs,
)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--mode", choices=MODES, help="overrides quantization.mode")
    parser.add_argument("--output", help="local output path (overrides quantization.outputUri)")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads for the timing runs")
    parser.add_argument(
        "--fallback-attempts",
        type=int,
        default=3,
        help="on a WER-gate rejection, retry this many times, each keeping one more early node in float",
    )
    parser.add_argument(
        "--exclude-nodes",
        nargs="*",
        help="node-name globs left in float (overrides quantization.excludeNodes), e.g. '/frontend/*'",
    )


def _fail(args: argparse.Namespace, name: str | None, mode: str, message: str, code: int) -> int:
    report = QuantizationReport(model=name, mode=mode, accepted=False, message=message)
    write_outputs(report.to_json(), report.termination_message(), args)
    print(report.summary_text())
    return code


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        spec, name = load_spec(args.spec)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        write_outputs(
            "", json.dumps({"kind": "quantization", "accepted": False, "error": str(exc)[:3000]}), args
        )
        return EXIT_USAGE
    name = args.model_name or name
    quant = spec.get("quantization") or {}
    mode = args.mode or quant.get("mode") or "dynamic-int8"
    output = args.output or quant.get("outputUri")
    if not output:
        return _fail(args, name, mode, "no quantization.outputUri (or --output) to publish to", EXIT_USAGE)
    work, temporary = scratch(args)
    try:
        try:
            prepared = prepare_artifact(args, spec, work)
        except fetch.UnsafeSource as exc:  # FIFOs, devices, hard links: a verdict, not a retry
            return _fail(args, name, mode, f"float model refused: {exc}", EXIT_FAILED)
        except (fetch.FetchError, archives.UnsafeArchive) as exc:
            return _fail(args, name, mode, f"cannot fetch the float model: {exc}", EXIT_FETCH)
        pinned = (spec.get("source") or {}).get("sha256")
        if pinned and pinned.lower() != prepared.fetched.sha256:
            message = f"float model sha256 {prepared.fetched.sha256} does not match source.sha256 {pinned}"
            return _fail(args, name, mode, message, EXIT_FAILED)
        detected = detect(prepared.root)
        if detected.format != "onnx" or detected.path is None:
            return _fail(
                args, name, mode, f"only ONNX models are quantized; found {detected.format}", EXIT_FAILED
            )
        try:
            samples = load_evaluation_set(args, spec, work)
        except (
            fetch.FetchError,
            fetch.UnsafeSource,
            archives.UnsafeArchive,
            ValueError,
            FileNotFoundError,
        ) as exc:
            return _fail(args, name, mode, f"evaluation set unusable: {exc}", EXIT_FAILED)
        if not samples:
            return _fail(args, name, mode, "the accuracy gate needs validation.evaluationSet", EXIT_FAILED)
        out_path = work / "quantized" / detected.path.name
        report = run_quantization(
            detected.path,
            out_path,
            mode,
            IOContract.from_spec(spec),
            samples,
            max_wer_increase=float(quant.get("maxWerIncrease", 0.005)),
            exclude_op_types=tuple(quant.get("excludeOpTypes") or DEFAULT_EXCLUDE),
            calibration_samples=quant.get("calibrationSamples"),
            providers=args.providers.split(",") if args.providers else None,
            threads=args.threads,
            model_name=name,
            fallback_attempts=args.fallback_attempts,
            exclude_nodes=tuple(
                args.exclude_nodes if args.exclude_nodes is not None else quant.get("excludeNodes") or ()
            ),
        )
        if report.accepted:
            target = output if "://" in output else f"file://{Path(output).resolve()}"
            try:
                report.output_digest = fetch.publish(out_path, target, fetch_options(args, spec))
            except fetch.FetchError as exc:
                return _fail(
                    args, name, mode, f"quantized model accepted but not published: {exc}", EXIT_FETCH
                )
            report.output_uri = fetch.target_in(target, out_path.name)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    write_outputs(report.to_json(), report.termination_message(), args)
    print(report.summary_text())
    return EXIT_PASSED if report.accepted else EXIT_FAILED
