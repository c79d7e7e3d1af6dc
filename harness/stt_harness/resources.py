"""Manifests the integration tests and the demo apply: small, valid, realistic."""

from __future__ import annotations

from typing import Any

API = "stt.dev/v1alpha1"


def stt_model(name: str, namespace: str, language: str = "en-US") -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "STTModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "language": language,
            "format": "python",
            "source": {"uri": f"file:///models/{name}"},
            "io": {
                "inputs": [{"name": "audio", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"}],
                "outputs": [
                    {"name": "transcript", "dataType": "TYPE_STRING", "dims": [1], "role": "transcript"}
                ],
            },
            "triton": {"maxBatchSize": 4, "instanceGroup": {"kind": "KIND_CPU", "count": 1}},
            "resources": {"gpu": 1},
            "validation": {"enabled": False},
        },
    }


# A canary that stops at an indefinite pause until a person (or a tool) promotes it.
PAUSED_CANARY: dict[str, Any] = {"type": "Canary", "canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}


def model_deployment(
    name: str, namespace: str, model: str, strategy: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    """A one-replica endpoint behind `stt-gateway`; `strategy` defaults to Immediate, `spec` adds fields."""
    return {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": model},
            "replicas": 1,
            "strategy": strategy or {"type": "Immediate"},
            "scaleDownDelay": "0s",
            "endpoint": {"gatewayRef": {"name": "stt-gateway"}, "hostnames": ["stt.example.test"]},
            **spec,
        },
    }


def ab_test(
    name: str, namespace: str, endpoint: str, models: tuple[str, str] = ("m1", "m2")
) -> dict[str, Any]:
    """A 50/50 A/B test of two models (variants `a` and `b`) on the endpoint, judged on WER."""
    return {
        "apiVersion": API,
        "kind": "ABTest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "endpoint": {"modelDeploymentRef": {"name": endpoint}},
            "variants": [
                {"name": "a", "model": {"name": models[0]}, "weight": 50},
                {"name": "b", "model": {"name": models[1]}, "weight": 50},
            ],
            "primaryMetric": {"name": "wer", "preset": "wer"},
        },
    }
