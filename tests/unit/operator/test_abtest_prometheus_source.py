"""An A/B test reads the Prometheus its endpoint's rollouts read (spec.analysis.prometheus)."""

from __future__ import annotations

import pytest

from stt_operator.analysis.prom import PromQueryError
from stt_operator.experiments.planner import EndpointInfo
from stt_operator.settings import OperatorSettings


def endpoint(prometheus: dict[str, str] | None) -> dict:
    analysis = {"analysis": {"prometheus": prometheus}} if prometheus is not None else {}
    return {"metadata": {"name": "asr"}, "spec": {"model": {"name": "m"}, **analysis}}


def test_the_endpoints_prometheus_source_is_the_tests() -> None:
    settings = OperatorSettings(prometheus_sources={"cluster": "http://prometheus.monitoring:9090"})
    info = EndpointInfo.from_body("asr", endpoint({"source": "cluster"}))
    assert (info.prometheus_source, info.prometheus_address) == ("cluster", None)
    assert settings.prometheus_for(info.prometheus_source, info.prometheus_address) == (
        "http://prometheus.monitoring:9090"
    )
    # An endpoint naming none falls back to the default; with named sources only there is none.
    bare = EndpointInfo.from_body("asr", endpoint(None))
    assert bare.prometheus_source is None and bare.prometheus_address is None
    with pytest.raises(PromQueryError):
        settings.prometheus_for(bare.prometheus_source, bare.prometheus_address)
    # A source the operator does not know is refused before any request.
    other = EndpointInfo.from_body("asr", endpoint({"source": "elsewhere"}))
    with pytest.raises(PromQueryError):
        settings.prometheus_for(other.prometheus_source, other.prometheus_address)
