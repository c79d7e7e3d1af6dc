import json

import pytest

from stt_harness import samples
from stt_operator.api.sttmodel import ArtifactStatus, QuantizationStatus, ValidationStatus
from stt_operator.artifacts.jobs import (
    job_finished,
    job_verdict,
    parse_termination_message,
    quantization_job,
    termination_message_of,
    validation_job,
)
from stt_operator.artifacts.report import (
    ArtifactInfo,
    FileDigest,
    Metrics,
    QuantizationReport,
    StepResult,
    ValidationReport,
)
from stt_operator.builders.derived import QUANTIZED_FROM_LABEL, derived_model, derived_model_object

OWNER = {"apiVersion": "stt.dev/v1alpha1", "kind": "STTModel", "name": "asr", "uid": "u1", "controller": True}


def spec(**kw):
    return samples.ctc_spec(
        "s3://models/asr.tar.gz",
        "a" * 64,
        validation={
            "timeout": "10m",
            "evaluationSet": {"uri": "pvc://evalsets/commands"},
            "signature": {"publicKeySecretRef": {"name": "signing"}, "signatureUri": "s3://models/asr.sig"},
        },
        **kw,
    )


def test_validation_job_is_restricted_bounded_and_self_contained() -> None:
    s = {
        **spec(),
        "source": {"uri": "s3://models/asr.tar.gz", "sha256": "a" * 64, "secretRef": {"name": "s3"}},
    }
    job = validation_job("asr", "speech", s, "stt-operator:1", OWNER, triton_image="tritonserver:25.10-py3")
    assert job["metadata"]["ownerReferences"] == [OWNER]
    assert job["metadata"]["name"].startswith("asr-validate-")
    js = job["spec"]
    assert js["activeDeadlineSeconds"] == 600
    assert js["backoffLimit"] == 2
    assert js["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [1, 2]
    pod = js["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["command"] == ["stt-operator"]
    args = c["args"]
    assert args[0] == "validate"
    assert args[args.index("--credentials-dir") + 1] == "/var/run/secrets/stt/source"
    assert args[args.index("--public-key") + 1] == "/var/run/secrets/stt/signing"
    assert args[args.index("--triton-image") + 1] == "tritonserver:25.10-py3"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert json.loads(env["STT_MODEL_SPEC"]) == s
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"s3", "signing"}
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["evalsets"]
    # No secret value is ever inlined.
    assert "secretKeyRef" not in json.dumps(job)


def test_job_name_follows_the_spec() -> None:
    a = validation_job("asr", "ns", spec(), "img", OWNER)["metadata"]["name"]
    assert (
        validation_job("asr", "ns", dict(reversed(list(spec().items()))), "img", OWNER)["metadata"]["name"]
        == a
    )
    changed = spec()
    changed["source"]["sha256"] = "b" * 64
    assert validation_job("asr", "ns", changed, "img", OWNER)["metadata"]["name"] != a


def test_quantization_job_can_write_its_output_claim() -> None:
    s = spec(quantization={"enabled": True, "outputUri": "pvc://models/asr-int8/model.onnx"})
    job = quantization_job("asr", "ns", s, "img", OWNER, gpus=1)
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][0] == "quantize"
    assert "--public-key" not in c["args"]
    mounts = {m["mountPath"]: m["readOnly"] for m in c["volumeMounts"] if m["name"].startswith("pvc-")}
    assert mounts == {"/mnt/pvc/evalsets": True, "/mnt/pvc/models": False}
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"


def _report(n_files: int = 2, passed: bool = True) -> ValidationReport:
    steps = [StepResult.passed(n, f"{n} ok") for n in ("format", "architecture", "dependencies", "security")]
    steps.append(
        StepResult.passed("integrity", "sha ok")
        if passed
        else StepResult.failed("integrity", "sha256 mismatch: x")
    )
    steps.append(StepResult.passed("performance", "fine"))
    return ValidationReport(
        model="asr",
        format="onnx",
        artifact=ArtifactInfo(
            digest="e" * 64,
            size_bytes=123,
            files=[
                FileDigest(path=f"dir/file-{i:05d}.bin", sha256="f" * 64, size_bytes=1)
                for i in range(n_files)
            ],
        ),
        steps=steps,
        metrics=Metrics(wer=0.12, cer=0.05, latency_p95_ms=30.0, real_time_factor=0.02, utterances=40),
    )


def test_termination_message_round_trip_into_status_models() -> None:
    result = parse_termination_message(_report().termination_message())
    assert result.ok and result.reason == "ValidationPassed"
    assert result.condition_type == "Validated"
    assert result.message == "all validation steps passed (WER 0.1200)"
    validation = ValidationStatus.model_validate(result.status["validation"])
    assert validation.wer == 0.12 and validation.samples == 40
    assert len(validation.steps) == 6
    artifact = ArtifactStatus.model_validate(result.status["artifact"])
    assert artifact.digest == "sha256:" + "e" * 64
    assert len(artifact.files) == 2


def test_termination_message_stays_under_4_kib_with_many_files_and_long_messages() -> None:
    report = _report(n_files=3000, passed=False)
    report.steps[0].message = "x" * 5000
    text = report.termination_message()
    assert len(text.encode()) <= 4096
    body = json.loads(text)
    assert body["artifact"]["fileCount"] == 3000
    result = parse_termination_message(text)
    assert not result.ok
    assert result.reason == "ValidationFailed"
    assert result.message.startswith("integrity: sha256 mismatch: x")


@pytest.mark.parametrize(
    ("text", "reason", "fragment"),
    [
        (None, "JobFailed", "left no result"),
        ("Traceback...\nMemoryError\n", "JobFailed", "MemoryError"),
        ('{"kind":"validation","passed":false,"error":"spec.io: bad"}', "InvalidSpec", "spec.io: bad"),
    ],
)
def test_termination_message_failures(text, reason, fragment) -> None:
    result = parse_termination_message(text)
    assert not result.ok and result.reason == reason and fragment in result.message


def test_quantization_result() -> None:
    report = QuantizationReport(
        model="asr",
        mode="dynamic-int8",
        accepted=True,
        message="ok",
        float_wer=0.10,
        quantized_wer=0.103,
        max_wer_increase=0.005,
        speedup=2.1,
        quantized_size_bytes=1000,
        output_uri="s3://m/asr-int8.onnx",
        output_digest="9" * 64,
    )
    result = parse_termination_message(report.termination_message(), kind="quantize")
    assert result.ok and result.reason == "QuantizationPassed" and result.condition_type == "Quantized"
    status = QuantizationStatus.model_validate(result.status["quantization"])
    assert status.wer_increase == pytest.approx(0.003)
    assert status.speedup == 2.1 and status.result == "passed"
    name, derived = derived_model(
        "asr", spec(quantization={"enabled": True}), "dynamic-int8", "s3://m/a.onnx", "9" * 64
    )
    assert name == "asr-int8"
    assert derived["source"] == {"uri": "s3://m/a.onnx", "sha256": "9" * 64}
    assert "quantization" not in derived


def test_job_status_helpers() -> None:
    assert job_finished({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == (
        True,
        True,
        "Complete",
    )
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]}}
    assert job_finished(failed) == (True, False, "PodFailurePolicy")
    assert job_finished({"status": {}}) == (False, False, "")
    pod = {
        "status": {"containerStatuses": [{"name": "validate", "state": {"terminated": {"message": "{}"}}}]}
    }
    assert termination_message_of(pod, "validate") == "{}"
    assert termination_message_of(pod, "other") is None


def test_derived_model_object_is_owned_by_the_float_model_and_pinned_to_the_output() -> None:
    body = {
        "apiVersion": "stt.dev/v1alpha1",
        "kind": "STTModel",
        "metadata": {"name": "asr", "namespace": "ns", "uid": "u1", "labels": {"team": "speech"}},
        "spec": spec(quantization={"enabled": True, "mode": "dynamic-int8", "outputUri": "s3://m/q.onnx"}),
    }
    obj = derived_model_object(body, "sha256:" + "9" * 64)
    assert obj["kind"] == "STTModel" and obj["metadata"]["name"] == "asr-int8"
    assert obj["metadata"]["labels"] == {"team": "speech", QUANTIZED_FROM_LABEL: "asr"}
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert obj["spec"]["source"] == {"uri": "s3://m/q.onnx", "sha256": "9" * 64}
    assert "quantization" not in obj["spec"]


def test_job_verdict_reads_the_newest_pod_and_waits_for_the_job() -> None:
    job = {"metadata": {"name": "validate-asr-1"}, "status": {}}
    assert job_verdict(job, [], "validate", spec(), []) is None  # still running

    def pod(created: str, message: str | None) -> dict:
        state = {"terminated": {"message": message}} if message is not None else {}
        return {
            "metadata": {"creationTimestamp": created},
            "status": {"containerStatuses": [{"state": state}]},
        }

    done = {**job, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    old, new = (
        pod("2026-01-01T00:00:00Z", "not json"),
        pod("2026-01-01T00:05:00Z", _report().termination_message()),
    )
    result = job_verdict(done, [new, old], "validate", spec(), [])
    assert result is not None and result.ok, result.message  # the retry's pod, not the first one
    failed = {
        **job,
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]},
    }
    result = job_verdict(failed, [pod("2026-01-01T00:00:00Z", None)], "validate", spec(), [])
    assert result is not None and not result.ok
    assert result.message == "Job validate-asr-1 failed (DeadlineExceeded) without a result"


def test_a_job_runs_as_a_local_process_with_its_mounts_mapped(tmp_path) -> None:
    import onnx

    from stt_harness.localjob import local_invocation, run_locally
    from stt_operator.artifacts.integrity import sha256_file

    claims = tmp_path / "claims"
    model = claims / "models" / "asr" / "model.onnx"
    model.parent.mkdir(parents=True)
    onnx.save(samples.keyed_ctc_model(), str(model))
    samples.write_keyed_evalset(claims / "evalsets" / "commands")
    s = samples.ctc_spec(
        "pvc://models/asr/model.onnx",
        sha256_file(model),
        validation={"evaluationSet": {"uri": "pvc://evalsets/commands"}, "thresholds": {"maxWer": 0.0}},
    )
    secret = tmp_path / "secret"
    secret.mkdir()
    s3 = {**s, "source": {"uri": "s3://models/asr.onnx", "secretRef": {"name": "creds"}}}
    s3_invocation = local_invocation(
        validation_job("asr", "ns", s3, "img", OWNER), tmp_path / "x", {"creds": secret}, claims
    )
    assert s3_invocation.argv[s3_invocation.argv.index("--credentials-dir") + 1] == str(secret)
    with pytest.raises(ValueError, match="Job mounts Secret 'creds'; pass its local folder"):
        local_invocation(validation_job("asr", "ns", s3, "img", OWNER), tmp_path / "x")
    job = validation_job("asr", "ns", s, "img", OWNER)
    invocation = local_invocation(job, tmp_path / "pod", {}, claims)
    assert invocation.argv[invocation.argv.index("--termination-log") + 1] == str(
        tmp_path / "pod" / "termination-log"
    )
    assert invocation.argv[invocation.argv.index("--work-dir") + 1] == str(
        tmp_path / "pod" / "work" / "scratch"
    )
    assert invocation.argv[-2:] == ["--pvc-root", str(claims)]
    code, message = run_locally(job, tmp_path / "pod", {}, claims, timeout_s=120)
    result = parse_termination_message(message)
    assert code == 0, message
    assert result.ok and result.reason == "ValidationPassed"
    assert result.status["validation"]["wer"] == 0.0
