"""The Triton pod template."""

from __future__ import annotations

import pytest

from stt_operator.builders.serving import Revision, ServingParams, triton_deployment
from stt_operator.triton.pod import (
    ADMIN_HEADER,
    SCRAPE_LABEL,
    TritonPodParams,
    scrape_metadata,
    triton_args,
    triton_pod_monitor,
    triton_pod_spec,
)


def params(**kw: object) -> TritonPodParams:
    base: dict[str, object] = {
        "model_name": "asr",
        "config_map": "asr-triton-config",
        "artifact_uri": "s3://models/asr.onnx",
        "artifact_sha256": "a" * 64,
        "credentials_secret": "s3-creds",
    }
    base.update(kw)
    return TritonPodParams(**base)  # type: ignore[arg-type]


def test_gpu_pod_requests_gpus_selects_gpu_nodes_and_tolerates_the_taint() -> None:
    spec = triton_pod_spec(params(gpus=2, cpu="4", memory="16Gi"))
    triton = spec["containers"][0]
    assert triton["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert triton["resources"]["requests"]["cpu"] == "4"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "--allow-gpu-metrics=true" in triton["args"]


def test_cpu_pod_has_no_gpu_scheduling_constraints() -> None:
    spec = triton_pod_spec(params(gpus=0))
    assert "nodeSelector" not in spec and "tolerations" not in spec
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["requests"]
    assert "--allow-gpu-metrics=false" in spec["containers"][0]["args"]


def test_args_explicit_mode_strict_readiness_and_restricted_repository_api() -> None:
    args = triton_args(params())
    assert args[0] == "tritonserver"
    assert "--model-control-mode=explicit" in args
    assert "--load-model=asr" in args
    assert "--strict-readiness=true" in args
    assert "--model-repository=/models" in args
    restricted = next(a for a in args if a.startswith("--http-restricted-api="))
    assert "model-repository" in restricted and f"{ADMIN_HEADER}=$(TRITON_ADMIN_KEY)" in restricted
    assert any(a.startswith("--grpc-restricted-protocol=") for a in args)


def test_probes_model_readiness_and_a_startup_deadline() -> None:
    c = triton_pod_spec(params(startup_deadline_s=900, probe_period_s=10))["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/models/asr/ready"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # A busy server answers late: neither probe gives up after the kubelet's default 1 s.
    assert c["readinessProbe"]["timeoutSeconds"] >= 5 and c["livenessProbe"]["timeoutSeconds"] >= 5


def test_init_container_fetches_with_the_operator_fetcher() -> None:
    spec = triton_pod_spec(params(archive="tar.gz"))
    init = spec["initContainers"][0]
    assert init["command"] == ["python", "-m", "stt_operator.triton.materialize"]
    assert "--uri=s3://models/asr.onnx" in init["args"]
    assert f"--sha256={'a' * 64}" in init["args"]
    assert "--archive=tar.gz" in init["args"]
    assert any(a.startswith("--credentials-dir=") for a in init["args"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model-config"]["configMap"]["name"] == "asr-triton-config"
    assert volumes["model-credentials"]["secret"]["secretName"] == "s3-creds"
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    # Triton only reads the repository the init container wrote.
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["model-repository"]["readOnly"] is True


def test_pvc_source_mounts_the_claim_read_only() -> None:
    spec = triton_pod_spec(params(artifact_uri="pvc://models-claim/asr/model.onnx", credentials_secret=None))
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model-source"]["persistentVolumeClaim"] == {"claimName": "models-claim", "readOnly": True}
    init_mounts = {m["name"]: m["mountPath"] for m in spec["initContainers"][0]["volumeMounts"]}
    assert init_mounts["model-source"] == "/mnt/pvc/models-claim"


def test_native_cloud_repository_skips_the_init_container() -> None:
    spec = triton_pod_spec(params(artifact_uri="s3://bucket/repo/", native_repository=True))
    assert "initContainers" not in spec
    assert "--model-repository=s3://bucket/repo" in spec["containers"][0]["args"]
    assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    with pytest.raises(ValueError, match="natively"):
        triton_pod_spec(params(artifact_uri="https://x/y.onnx", native_repository=True))


def test_restricted_security_context() -> None:
    spec = triton_pod_spec(params())
    for c in [*spec["containers"], *spec["initContainers"]]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False


def test_admin_key_from_a_secret_or_the_pod_uid() -> None:
    env = triton_pod_spec(params())["containers"][0]["env"][0]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    env = triton_pod_spec(params(admin_secret="triton-admin"))["containers"][0]["env"][0]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "triton-admin", "key": "token"}


def test_bad_params_are_rejected() -> None:
    with pytest.raises(ValueError, match="gpu"):
        triton_pod_spec(params(gpus=-1))
    with pytest.raises(ValueError, match="startup deadline"):
        triton_pod_spec(params(startup_deadline_s=5, probe_period_s=10))


def test_pod_spec_plugs_into_the_serving_deployment_builder() -> None:
    pod = triton_pod_spec(params())
    dep = triton_deployment(
        ServingParams(
            deployment_name="asr-endpoint",
            namespace="ml",
            revision=Revision("asr", "sha256:abc"),
            role="stable",
            pod_spec=pod,
        )
    )
    assert dep["spec"]["template"]["spec"] is pod


def test_scrape_metadata_and_pod_monitor() -> None:
    meta = scrape_metadata({"stt.dev/model": "asr"})
    assert meta["labels"][SCRAPE_LABEL] == "true"
    assert meta["annotations"]["prometheus.io/port"] == "8002"
    pm = triton_pod_monitor("triton", "ml", {"stt.dev/model": "asr"})
    assert pm["kind"] == "PodMonitor"
    assert pm["spec"]["selector"]["matchLabels"] == {SCRAPE_LABEL: "true", "stt.dev/model": "asr"}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
