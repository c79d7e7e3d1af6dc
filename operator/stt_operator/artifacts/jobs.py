"""Kubernetes Jobs that validate and quantize an STTModel, and reading their results back.

Pure builders: the operator applies what `validation_job` / `quantization_job` return and
later feeds the finished pod's termination message to `parse_termination_message`, whose
result maps onto `STTModel.status` (conditions `Validated` / `Quantized`, `artifact`,
`validation`, `quantization`).

The pod needs no Kubernetes API access (results leave through the termination message), so
no service-account token is mounted. It runs non-root under the restricted Pod Security
Standard with a read-only root file system; scratch space is an emptyDir sized from
`source.maxSizeBytes`. Exit code 1 is a verdict (the model failed), so a pod failure policy
ends the Job at once instead of retrying; other failures (fetch errors, OOM) use the
backoff limit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stt_operator.api.common import parse_duration, parse_quantity
from stt_operator.artifacts.report import DEFAULT_REQUIRED_STEPS, WAIVER_DIGEST_NOT_PINNED
from stt_operator.builders.metadata import LABEL_MODEL, common_labels, dns_name, short_hash

KINDS = ("validate", "quantize")
SOURCE_SECRET_DIR = "/var/run/secrets/stt/source"
SIGNING_SECRET_DIR = "/var/run/secrets/stt/signing"
WORK_DIR = "/work"
TERMINATION_PATH = "/dev/termination-log"
REPORT_PATH = f"{WORK_DIR}/report.json"
RUN_AS_USER = 65532
DEFAULT_BACKOFF_LIMIT = 2
VERDICT_EXIT_CODE = 1
USAGE_EXIT_CODE = 2
CONDITION = {"validate": "Validated", "quantize": "Quantized"}


def spec_hash(spec: Mapping[str, Any]) -> str:
    """Stable across dict ordering: a changed spec gets a new Job, the same spec the same one."""
    return short_hash(json.dumps(spec, sort_keys=True, separators=(",", ":")), length=10)


def job_name(model_name: str, kind: str, spec: Mapping[str, Any]) -> str:
    return dns_name(model_name, kind, spec_hash(spec))


def _scratch_gib(spec: Mapping[str, Any]) -> int:
    max_bytes = int((spec.get("source") or {}).get("maxSizeBytes") or 0)
    # Download + unpacked copy + a quantized copy, with headroom; at least 4 GiB.
    return max(4, -(-3 * max_bytes // 1024**3) + 1)


def _scratch_size(spec: Mapping[str, Any]) -> str:
    return f"{_scratch_gib(spec)}Gi"


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (`4Gi`, `512M`, `1e9`) in bytes (the API's parser, so the
    Job builders reach the kubernetes client only through that one pure function)."""
    return int(parse_quantity(quantity))


def required_steps(spec: Mapping[str, Any], operator_floor: Sequence[str]) -> list[str]:
    """Steps that must run for the model to pass: the operator's setting plus what
    `spec.validation.requiredSteps` adds (a spec asks for more, never for less)."""
    extra = ((spec.get("validation") or {}).get("requiredSteps")) or []
    return list(dict.fromkeys([*operator_floor, *extra]))


def validation_job(
    model_name: str,
    namespace: str,
    spec: Mapping[str, Any],
    image: str,
    owner_ref: Mapping[str, Any],
    *,
    kind: str = "validate",
    triton_image: str | None = None,
    cpu: str = "2",
    memory: str = "4Gi",
    gpus: int = 0,
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT,
    image_pull_policy: str = "IfNotPresent",
    required: Sequence[str] = DEFAULT_REQUIRED_STEPS,
) -> dict[str, Any]:
    """The Job manifest running `stt-operator <kind>` for one STTModel spec.

    The container is told its own memory limit and scratch size, so what it unpacks and
    holds in memory stays inside them (a decompression bomb ends in a verdict, not an OOM
    kill or a full volume)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
    validation = spec.get("validation") or {}
    deadline = int(parse_duration(validation.get("timeout") or "30m"))
    name = job_name(model_name, kind, spec)
    labels = {**common_labels(model_name, f"model-{kind}", name="stt-operator"), LABEL_MODEL: model_name}
    args = [
        kind,
        "--model-name",
        model_name,
        "--work-dir",
        f"{WORK_DIR}/scratch",
        "--report",
        REPORT_PATH,
        "--termination-log",
        TERMINATION_PATH,
        "--memory-bytes",
        str(quantity_bytes(memory)),
        # The emptyDir's size limit; the pod is evicted past it, so the validator stays below.
        "--scratch-bytes",
        str(_scratch_gib(spec) * 1024**3),
    ]
    if kind == "validate":
        args += ["--required-steps", ",".join(required_steps(spec, required))]
    volumes: list[dict[str, Any]] = [
        {"name": "work", "emptyDir": {"sizeLimit": _scratch_size(spec)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "work", "mountPath": WORK_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    secret_ref = (spec.get("source") or {}).get("secretRef")
    if secret_ref:
        volumes.append({"name": "source-credentials", "secret": {"secretName": secret_ref["name"]}})
        mounts.append({"name": "source-credentials", "mountPath": SOURCE_SECRET_DIR, "readOnly": True})
        args += ["--credentials-dir", SOURCE_SECRET_DIR]
    signature = validation.get("signature")
    if kind == "validate" and signature:
        volumes.append(
            {"name": "signing-key", "secret": {"secretName": signature["publicKeySecretRef"]["name"]}}
        )
        mounts.append({"name": "signing-key", "mountPath": SIGNING_SECRET_DIR, "readOnly": True})
        args += ["--public-key", SIGNING_SECRET_DIR]
    if kind == "validate" and triton_image:
        args += ["--triton-image", triton_image]
    pvc_claims = sorted(
        {
            uri.split("/")[2]
            for uri in _uris(spec)
            if uri.startswith("pvc://") and len(uri.split("/")) > 2 and uri.split("/")[2]
        }
    )
    for i, claim in enumerate(pvc_claims):
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim}})
        # Read-only unless the quantized model is written there.
        out_uri = (spec.get("quantization") or {}).get("outputUri") or ""
        writable = kind == "quantize" and out_uri.startswith(f"pvc://{claim}/")
        mounts.append({"name": f"pvc-{i}", "mountPath": f"/mnt/pvc/{claim}", "readOnly": not writable})
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    container = {
        "name": kind,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": ["stt-operator"],
        "args": args,
        "env": [
            {
                "name": "STT_MODEL_SPEC",
                "value": json.dumps(dict(spec), sort_keys=True, separators=(",", ":")),
            },
            {"name": "STT_MODEL_NAME", "value": model_name},
            {"name": "HOME", "value": "/tmp"},
            {"name": "OMP_NUM_THREADS", "value": cpu if cpu.isdigit() else "1"},
        ],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_PATH,
        # A crash before the report is written still leaves the log tail for the condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if gpus:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"stt.dev/spec-hash": spec_hash(spec)},
            "ownerReferences": [dict(owner_ref)],
        },
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": 86400,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": kind,
                            "operator": "In",
                            "values": [VERDICT_EXIT_CODE, USAGE_EXIT_CODE],
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def quantization_job(
    model_name: str,
    namespace: str,
    spec: Mapping[str, Any],
    image: str,
    owner_ref: Mapping[str, Any],
    **kwargs: Any,
) -> dict[str, Any]:
    return validation_job(model_name, namespace, spec, image, owner_ref, kind="quantize", **kwargs)


def _uris(spec: Mapping[str, Any]) -> list[str]:
    validation = spec.get("validation") or {}
    return [
        u
        for u in (
            (spec.get("source") or {}).get("uri"),
            (validation.get("evaluationSet") or {}).get("uri"),
            (validation.get("signature") or {}).get("signatureUri"),
            (spec.get("quantization") or {}).get("outputUri"),
        )
        if u
    ]


# --- results ----------------------------------------------------------------------------


@dataclass
class JobResult:
    """What a finished Job means for the STTModel: one condition and a status patch."""

    kind: str
    ok: bool
    reason: str
    message: str
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def condition_type(self) -> str:
        return CONDITION[self.kind]


def _first_failure(steps: list[Mapping[str, Any]]) -> str:
    failed = [s for s in steps if s.get("result") == "failed"]
    return "; ".join(f"{s.get('name')}: {s.get('message', '')}" for s in failed)[:1000]


def parse_termination_message(
    text: str | None, kind: str = "validate", required: Sequence[str] = DEFAULT_REQUIRED_STEPS
) -> JobResult:
    """Parse the compact report a validate/quantize container left; tolerant of a log tail
    (FallbackToLogsOnError) or nothing at all. A validation passes only when no step failed
    and every `required` step ran: a skipped step is never read as a passed one."""
    if not text or not text.strip():
        return JobResult(kind, False, "JobFailed", f"the {kind} container left no result")
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        tail = " ".join(text.strip().splitlines()[-3:])[-500:]
        return JobResult(kind, False, "JobFailed", f"the {kind} container failed: {tail}")
    if not isinstance(body, dict):
        return JobResult(kind, False, "JobFailed", "unexpected termination message")
    if body.get("error"):
        return JobResult(kind, False, "InvalidSpec", str(body["error"])[:1000])
    if body.get("kind") == "quantization" or kind == "quantize":
        return _quantization_result(body)
    return _validation_result(body, required)


def _validation_result(
    body: Mapping[str, Any], required: Sequence[str] = DEFAULT_REQUIRED_STEPS
) -> JobResult:
    steps = [
        {
            "name": s.get("name", "?"),
            "result": s.get("result", "skipped"),
            "message": str(s.get("message", ""))[:1024],
        }
        for s in body.get("steps") or []
    ]
    metrics = body.get("metrics") or {}
    validation = {
        "steps": steps,
        **{
            k: metrics[k]
            for k in ("wer", "cer", "latencyP95Ms", "realTimeFactor", "peakMemoryMiB")
            if metrics.get(k) is not None
        },
    }
    if metrics.get("utterances") is not None:
        validation["samples"] = metrics["utterances"]
    skipped = [s["name"] for s in steps if s["result"] == "skipped"]
    if body.get("skipped") is not None and not steps:  # a truncated message keeps only names
        skipped = [str(n) for n in body["skipped"]][:16]
    waivers = [str(w)[:63] for w in body.get("waivers") or []][:16]
    ran = {s["name"] for s in steps if s["result"] != "skipped"}
    if not steps:
        ran = set(required) - set(skipped)  # truncated: only the skipped names survived
    if WAIVER_DIGEST_NOT_PINNED not in waivers and "integrity" in ran:
        ran.add("digest")
    missing = [name for name in required if name not in ran]
    validation["skipped"] = skipped
    validation["waivers"] = waivers
    validation["requiredSteps"] = list(required)
    artifact = body.get("artifact") or {}
    status: dict[str, Any] = {"validation": validation}
    if artifact.get("digest"):
        status["artifact"] = {
            "digest": f"sha256:{artifact['digest']}",
            "sizeBytes": artifact.get("sizeBytes"),
            "files": [{"path": f["path"], "sha256": f["sha256"]} for f in artifact.get("files") or []][:1024],
        }
    if missing and not any(s["result"] == "failed" for s in steps):
        message = (
            f"required step(s) {', '.join(missing)} did not run"
            + (f" (skipped: {_skip_reasons(steps, missing)})" if _skip_reasons(steps, missing) else "")
            + "; a skipped step does not count as passed"
        )
        return JobResult("validate", False, "RequiredStepSkipped", message[:1000], status)
    if body.get("passed"):
        summary = "all validation steps passed"
        if skipped:
            summary = f"all required validation steps passed; skipped (not required): {', '.join(skipped)}"
        if metrics.get("wer") is not None:
            summary += f" (WER {metrics['wer']:.4f})"
        if waivers:
            summary += f"; waived: {', '.join(waivers)}"
            return JobResult("validate", True, "ValidationPassedWithWaivers", summary[:1000], status)
        return JobResult("validate", True, "ValidationPassed", summary[:1000], status)
    fetch_failed = any(s["name"] == "fetch" for s in steps)
    reason = "FetchFailed" if fetch_failed else "ValidationFailed"
    return JobResult("validate", False, reason, _first_failure(steps) or "validation failed", status)


def _skip_reasons(steps: list[Mapping[str, Any]], names: Sequence[str]) -> str:
    return "; ".join(
        f"{s['name']}: {s['message']}" for s in steps if s["name"] in names and s["result"] == "skipped"
    )[:600]


def _quantization_result(body: Mapping[str, Any]) -> JobResult:
    base, quant = body.get("floatWer"), body.get("quantizedWer")
    status = {
        "quantization": {
            k: v
            for k, v in {
                "mode": body.get("mode"),
                "baselineWer": base,
                "quantizedWer": quant,
                "werIncrease": (quant - base) if base is not None and quant is not None else None,
                "sizeBytes": body.get("quantizedSizeBytes"),
                "speedup": body.get("speedup"),
                "outputUri": body.get("outputUri"),
                "result": "passed" if body.get("accepted") else "failed",
                "message": str(body.get("message", ""))[:1024],
            }.items()
            if v is not None
        }
    }
    if body.get("outputDigest"):
        status["quantization"]["outputDigest"] = body["outputDigest"]
    ok = bool(body.get("accepted"))
    return JobResult(
        "quantize",
        ok,
        "QuantizationPassed" if ok else "QuantizationFailed",
        str(body.get("message") or ("accepted" if ok else "rejected"))[:1000],
        status,
    )


def job_finished(job: Mapping[str, Any]) -> tuple[bool, bool, str]:
    """(finished, succeeded, reason) from a Job's status conditions (Complete / Failed)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return True, True, cond.get("reason") or "Complete"
        if cond.get("type") == "Failed":
            return True, False, cond.get("reason") or "Failed"
    return False, False, ""


def termination_message_of(pod: Mapping[str, Any], container: str | None = None) -> str | None:
    """The termination message of the (named) container of a finished pod."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if container and cs.get("name") != container:
            continue
        terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get(
            "terminated"
        )
        if terminated:
            return terminated.get("message")
    return None


def job_verdict(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    kind: str,
    spec: Mapping[str, Any],
    operator_floor: Sequence[str],
) -> JobResult | None:
    """A finished Job's result (None while it runs): the newest pod's termination message,
    re-checked by the operator (a required step that was skipped fails it, whatever the
    container said); a failed Job that left no message fails with the Job's reason."""
    finished, succeeded, job_reason = job_finished(job)
    if not finished:
        return None
    newest_first = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    message = next((m for p in newest_first if (m := termination_message_of(p))), None)
    result = parse_termination_message(message, kind, required_steps(spec, operator_floor))
    if not succeeded and not message:
        result.message = f"Job {job['metadata']['name']} failed ({job_reason}) without a result"
    return result
