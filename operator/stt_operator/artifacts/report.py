"""The validation / quantization report: one JSON document, a few-line text summary, and a
compact form that fits a Kubernetes termination message (the kubelet keeps at most 4 KiB).

Field names follow `STTModel.status.validation` in docs/api-contract.md (camelCase).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

STEP_NAMES = ("format", "architecture", "dependencies", "security", "integrity", "performance")
# Steps that must run (not be skipped) for a model to pass unless the spec or the operator's
# settings say otherwise: a skipped step is never counted as a passed one.
DEFAULT_REQUIRED_STEPS = ("security", "integrity")
# Waivers the validator grants but records: the model may pass, status says what was waived.
WAIVER_DIGEST_NOT_PINNED = "DigestNotPinned"
# What `requiredSteps` may name: the six steps, plus `digest` (a pinned source.sha256, so the
# DigestNotPinned waiver is refused).
REQUIRABLE_STEPS = (*STEP_NAMES, "digest")
TERMINATION_LIMIT = 4096

Result = Literal["passed", "failed", "skipped"]


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class StepResult(_Camel):
    name: str
    result: Result
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    findings: list[str] = Field(default_factory=list)

    @classmethod
    def passed(cls, name: str, message: str, **details: Any) -> StepResult:
        return cls(name=name, result="passed", message=message, details=details)

    @classmethod
    def failed(cls, name: str, message: str, findings: list[str] | None = None, **details: Any) -> StepResult:
        return cls(name=name, result="failed", message=message, findings=findings or [], details=details)

    @classmethod
    def skipped(cls, name: str, reason: str, **details: Any) -> StepResult:
        return cls(name=name, result="skipped", message=reason, details=details)


class FileDigest(_Camel):
    path: str
    sha256: str
    size_bytes: int | None = None


class ArtifactInfo(_Camel):
    uri: str | None = None
    digest: str | None = None
    size_bytes: int | None = None
    files: list[FileDigest] = Field(default_factory=list)


class Metrics(_Camel):
    wer: float | None = None
    cer: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    real_time_factor: float | None = None
    peak_memory_mib: float | None = None
    utterances: int | None = None


class ValidationReport(_Camel):
    kind: Literal["validation"] = "validation"
    model: str | None = None
    format: str | None = None
    artifact: ArtifactInfo | None = None
    steps: list[StepResult] = Field(default_factory=list)
    metrics: Metrics = Field(default_factory=Metrics)
    required_steps: list[str] = Field(default_factory=lambda: list(DEFAULT_REQUIRED_STEPS))
    waivers: list[str] = Field(default_factory=list)

    @property
    def skipped(self) -> list[str]:
        return [s.name for s in self.steps if s.result == "skipped"]

    @property
    def missing_required(self) -> list[str]:
        """Required steps that did not run: skipped, or absent from the report."""
        ran = {s.name for s in self.steps if s.result != "skipped"}
        if WAIVER_DIGEST_NOT_PINNED not in self.waivers and "integrity" in ran:
            ran.add("digest")
        return [name for name in self.required_steps if name not in ran]

    @property
    def passed(self) -> bool:
        return (
            bool(self.steps) and all(s.result != "failed" for s in self.steps) and not self.missing_required
        )

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_json(self) -> str:
        body = {**self.dump(), "passed": self.passed, "skipped": self.skipped}
        if self.missing_required:
            body["missingRequired"] = self.missing_required
        return json.dumps(body, indent=2, sort_keys=False)

    def summary_text(self) -> str:
        head = f"validation of {self.model or 'model'} ({self.format or 'unknown format'}): " + (
            "PASSED" if self.passed else "FAILED"
        )
        lines = [head]
        for s in self.steps:
            lines.append(f"  {s.name:<13} {s.result:<8} {s.message}")
        if self.missing_required:
            lines.append(f"  required but not run: {', '.join(self.missing_required)}")
        if self.waivers:
            lines.append(f"  waivers: {', '.join(self.waivers)}")
        m = self.metrics
        if m.wer is not None:
            lines.append(
                f"  metrics: WER {m.wer:.4f}, CER {m.cer or 0:.4f}, p95 {m.latency_p95_ms or 0:.1f} ms, "
                f"RTF {m.real_time_factor or 0:.4f}, peak {m.peak_memory_mib or 0:.0f} MiB"
            )
        return "\n".join(lines)

    def termination_message(self, limit: int = TERMINATION_LIMIT) -> str:
        """JSON the operator parses back (see jobs.parse_termination_message), ≤ `limit` bytes.

        Per-file digests and step details are the first to go; messages are trimmed last.
        """
        artifact = self.artifact or ArtifactInfo()
        body: dict[str, Any] = {
            "kind": "validation",
            "passed": self.passed,
            "format": self.format,
            "artifact": {
                "digest": artifact.digest,
                "sizeBytes": artifact.size_bytes,
                "files": [f.dump() for f in artifact.files],
            },
            "steps": [{"name": s.name, "result": s.result, "message": s.message} for s in self.steps],
            "skipped": self.skipped,
            "requiredSteps": self.required_steps,
            "waivers": self.waivers,
            "metrics": self.metrics.dump(),
        }
        return fit_json(body, limit)


class QuantizationReport(_Camel):
    kind: Literal["quantization"] = "quantization"
    model: str | None = None
    mode: str
    accepted: bool
    message: str
    float_wer: float | None = None
    quantized_wer: float | None = None
    max_wer_increase: float | None = None
    float_latency_ms: float | None = None
    quantized_latency_ms: float | None = None
    speedup: float | None = None
    float_size_bytes: int | None = None
    quantized_size_bytes: int | None = None
    output_uri: str | None = None
    output_digest: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.dump(), indent=2)

    def summary_text(self) -> str:
        verdict = "ACCEPTED" if self.accepted else "REJECTED"
        lines = [f"quantization {self.mode} of {self.model or 'model'}: {verdict} — {self.message}"]
        if self.float_wer is not None and self.quantized_wer is not None:
            lines.append(
                f"  WER float {self.float_wer:.4f} -> quantized {self.quantized_wer:.4f} "
                f"(budget +{self.max_wer_increase})"
            )
        if self.speedup is not None:
            lines.append(
                f"  latency {self.float_latency_ms:.2f} ms -> {self.quantized_latency_ms:.2f} ms "
                f"(speed-up x{self.speedup:.2f}); "
                f"size {self.float_size_bytes} -> {self.quantized_size_bytes} bytes"
            )
        return "\n".join(lines)

    def termination_message(self, limit: int = TERMINATION_LIMIT) -> str:
        body = self.dump()
        body.pop("details", None)
        return fit_json(body, limit)


def fit_json(body: dict[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """Serialise compactly, dropping bulky parts until it fits in `limit` bytes."""

    def encode(b: dict[str, Any]) -> str:
        return json.dumps(b, separators=(",", ":"), ensure_ascii=False)

    text = encode(body)
    if len(text.encode()) <= limit:
        return text
    artifact = body.get("artifact")
    if isinstance(artifact, dict) and artifact.get("files"):
        artifact["fileCount"] = len(artifact["files"])
        artifact["files"] = []
        text = encode(body)
    width = 400
    while len(text.encode()) > limit and width >= 20:
        for step in body.get("steps", []):
            step["message"] = _trim(step["message"], width)
        if "message" in body and isinstance(body["message"], str):
            body["message"] = _trim(body["message"], width)
        text = encode(body)
        width //= 2
    if len(text.encode()) > limit:
        # Last resort keeps it parseable and says so.
        verdict = "accepted" if body.get("kind") == "quantization" else "passed"
        text = encode({"kind": body.get("kind"), verdict: body.get(verdict), "truncated": True})
        if body.get("skipped") is not None:
            # Skipped steps must survive: the operator may not count them as passed.
            text = encode(
                {
                    "kind": body.get("kind"),
                    verdict: body.get(verdict),
                    "truncated": True,
                    "skipped": body["skipped"],
                    "waivers": body.get("waivers") or [],
                }
            )
    return text


def _trim(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
