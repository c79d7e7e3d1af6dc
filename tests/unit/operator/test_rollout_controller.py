"""The ModelDeployment controller's analysis call: failures become the outcome Error."""

from __future__ import annotations

from datetime import UTC, datetime

from stt_harness.cluster import free_port
from stt_operator.api import ModelDeployment
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.modeldeployment import run_analysis
from stt_operator.rollout.plan import AnalysisRequest
from stt_operator.settings import OperatorSettings


def md(prometheus: dict[str, str] | None = None) -> ModelDeployment:
    analysis = {"interval": "2s", "metrics": [{"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.05}]}
    if prometheus:
        analysis["prometheus"] = prometheus
    return ModelDeployment.from_body(
        {
            "metadata": {"name": "asr", "namespace": "ns"},
            "spec": {"model": {"name": "model-b"}, "analysis": analysis},
        }
    )


REQUEST = AnalysisRequest(1, ("wer",), "rev-b", "canary", "rev-a", datetime(2026, 1, 1, tzinfo=UTC))
STATUS = {"stableRevision": "rev-a", "stableModel": "model-a"}


def ctx(url: str) -> OperatorContext:
    return OperatorContext(settings=OperatorSettings(prometheus_url=url), kube=None)  # type: ignore[arg-type]


def test_unreachable_prometheus_is_an_error_outcome() -> None:
    # Nothing listens on a fresh loopback port: a real connection refusal.
    result = run_analysis(ctx(f"http://127.0.0.1:{free_port()}"), md(), REQUEST, STATUS, "model-b")
    assert result.outcome == "Error"
    assert [m.outcome for m in result.metrics] == ["Error"]
    assert "unreachable" in result.metrics[0].message.lower()


def test_spec_address_wins_and_a_bad_one_is_an_error_not_a_crash() -> None:
    spec_md = md({"address": "http://127.0.0.1:1", "timeout": "1s"})
    result = run_analysis(ctx("not a url"), spec_md, REQUEST, STATUS, "model-b")
    assert result.outcome == "Error"  # the spec's address was used (the setting is unusable)
    bad = run_analysis(ctx("ftp://prometheus"), md(), REQUEST, STATUS, "model-b")
    assert bad.outcome == "Error" and "http://" in bad.message
    assert bad.metrics[0].name == "wer"
