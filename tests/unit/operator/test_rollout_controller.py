"""The ModelDeployment controller's analysis call: failures become the outcome Error."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stt_harness.cluster import free_port
from stt_operator.api import ModelDeployment, ModelDeploymentStatus
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.looks import run_analysis
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
STATUS = ModelDeploymentStatus(stable_revision="rev-a", stable_model="model-a")


def ctx(url: str) -> OperatorContext:
    return OperatorContext(settings=OperatorSettings(prometheus_url=url), kube=None)  # type: ignore[arg-type]


def test_unreachable_prometheus_is_an_error_outcome() -> None:
    # Nothing listens on a fresh loopback port: a real connection refusal.
    result = run_analysis(ctx(f"http://127.0.0.1:{free_port()}"), md(), REQUEST, STATUS, "model-b")
    assert result.outcome == "Error"
    assert [m.outcome for m in result.metrics] == ["Error"]
    assert "unreachable" in result.metrics[0].message.lower()
    assert result.unavailable is None  # configured but down: an Error look, counted by the policy


SECRET = "internal-secret-7f3a"


class _Internal:
    """A real HTTP server on loopback standing for an internal address an attacker points at:
    it counts requests and answers with bytes that must never reach status."""

    def __init__(self, code: int, body: str, content_type: str = "text/html") -> None:
        outer = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                outer.hits += 1
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _texts(result: object) -> str:
    return repr(result)


def test_address_outside_the_allowlist_is_refused_without_a_request() -> None:
    internal = _Internal(200, f"<html>{SECRET}</html>")
    try:
        spec_md = md({"address": internal.url, "timeout": "1s"})
        result = run_analysis(ctx(f"http://127.0.0.1:{free_port()}"), spec_md, REQUEST, STATUS, "model-b")
        assert result.outcome == "Error" and internal.hits == 0
        assert "not among the addresses the operator allows" in result.message
        assert SECRET not in _texts(result)
        # A named source that is not configured is refused the same way.
        named = run_analysis(ctx(internal.url), md({"source": "team-b"}), REQUEST, STATUS, "model-b")
        assert named.outcome == "Error" and "not configured" in named.message and internal.hits == 0
        assert result.unavailable == named.unavailable == "PrometheusNotAllowed"
    finally:
        internal.close()


def test_an_allowed_address_that_is_not_prometheus_leaks_no_bytes_into_status() -> None:
    for code, body in ((200, f"<html>{SECRET}</html>"), (500, f"{SECRET}"), (400, f'{{"x": "{SECRET}"}}')):
        internal = _Internal(code, body)
        try:
            settings = OperatorSettings(prometheus_url=None, prometheus_allowed_urls=[internal.url])
            result = run_analysis(
                OperatorContext(settings=settings, kube=None),  # type: ignore[arg-type]
                md({"address": internal.url, "timeout": "1s"}),
                REQUEST,
                STATUS,
                "model-b",
            )
            assert internal.hits >= 1, code  # allowed: the request was made
            assert result.outcome == "Error", code
            assert SECRET not in _texts(result), (code, result)
            if code != 200:
                assert f"HTTP {code}" in result.metrics[0].message, result.metrics[0].message
        finally:
            internal.close()


def test_a_named_source_is_used() -> None:
    internal = _Internal(503, "down")
    try:
        settings = OperatorSettings(prometheus_sources={"team-a": internal.url})
        result = run_analysis(
            OperatorContext(settings=settings, kube=None),  # type: ignore[arg-type]
            md({"source": "team-a", "timeout": "1s"}),
            REQUEST,
            STATUS,
            "model-b",
        )
        assert internal.hits >= 1 and result.outcome == "Error"
    finally:
        internal.close()


def test_no_prometheus_configured_is_one_clear_error_not_a_guess() -> None:
    settings = OperatorSettings()
    assert settings.prometheus_url is None and not settings.prometheus_configured
    result = run_analysis(
        OperatorContext(settings=settings, kube=None),  # type: ignore[arg-type]
        md(),
        REQUEST,
        STATUS,
        "model-b",
    )
    assert result.outcome == "Error"
    assert "no Prometheus is configured" in result.message and "config.prometheusUrl" in result.message
    # Not a failed look but no look at all: the planner holds the rollout (AnalysisUnavailable).
    assert result.unavailable == "NoPrometheus" and result.metrics == ()


def test_settings_refuse_non_http_prometheus_addresses() -> None:
    for bad in ("ftp://prometheus", "not a url"):
        with pytest.raises(ValueError, match="must start with http"):
            OperatorSettings(prometheus_url=bad)
    assert OperatorSettings(prometheus_url="").prometheus_url is None  # Helm's unset value
