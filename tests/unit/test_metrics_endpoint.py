"""The operator's /metrics endpoint (observability.py: metrics_app, serve_metrics): the same
bytes as prometheus_client's own renderers in every negotiated format, written one family at
a time."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from stt_operator.observability import SLICE_SAMPLES, EndpointSeries, metrics_app, serve_metrics

OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("demo_reconciles_total", "Reconciles", ["kind"], registry=registry).labels("STTModel").inc(3)
    Gauge("demo_loops", "Loops", ["namespace"], registry=registry).labels("tenant-a").set(7)
    Histogram("demo_seconds", "Durations", buckets=(0.1, 1), registry=registry).observe(0.5)
    endpoints = EndpointSeries()
    for i in range(50):
        endpoints.record_rollout(
            f"tenant-{i % 3}", f"asr-{i}", in_flight=i % 2 == 0, promoted=True, rolled_back=False
        )
        endpoints.record_route(f"tenant-{i % 3}", f"asr-{i}", {f"asr-{i}-a": 80, f"asr-{i}-b": 20})
    registry.register(endpoints)
    return registry


@pytest.fixture
def served(registry: CollectorRegistry) -> Iterator[str]:
    server = serve_metrics(0, "127.0.0.1", registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def scrape(url: str, **headers: str) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(response.headers), response.read()


def test_text_format_is_byte_for_byte_the_library_render(served: str, registry: CollectorRegistry) -> None:
    headers, body = scrape(f"{served}/metrics")
    assert body == generate_latest(registry)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b'stt_operator_route_weight{backend="asr-7-b",endpoint="asr-7",namespace="tenant-1"} 20.0' in body


def test_openmetrics_has_one_end_marker_and_matches_the_library(
    served: str, registry: CollectorRegistry
) -> None:
    headers, body = scrape(f"{served}/metrics", Accept=OPENMETRICS_ACCEPT)
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.count(b"# EOF\n") == 1 and body.endswith(b"# EOF\n")
    assert body == generate_openmetrics(registry)


def test_gzip_when_asked_is_the_same_exposition(served: str, registry: CollectorRegistry) -> None:
    headers, body = scrape(f"{served}/metrics", **{"Accept-Encoding": "gzip", "Accept": OPENMETRICS_ACCEPT})
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == generate_openmetrics(registry)


def test_name_filter_keeps_only_the_named_families(served: str) -> None:
    _, body = scrape(f"{served}/metrics?name[]=demo_loops")
    assert body.startswith(b"# HELP demo_loops Loops")
    assert b"demo_reconciles_total" not in body and b"stt_operator_route_weight" not in body


def test_other_methods_are_refused(served: str) -> None:
    request = urllib.request.Request(f"{served}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405


class CountingCollector:
    """Families built on demand, noting how many were built so far."""

    def __init__(self, families: int) -> None:
        self.families = families
        self.built = 0

    def collect(self) -> Iterator[Metric]:
        for index in range(self.families):
            self.built += 1
            family = GaugeMetricFamily(f"demo_family_{index}", "One of several", labels=["n"])
            family.add_metric([str(index)], index)
            yield family


def test_each_family_is_written_before_the_next_is_built() -> None:
    registry = CollectorRegistry()
    collector = CountingCollector(4)
    registry.register(collector)
    started: list[str] = []
    chunks = iter(
        metrics_app(registry)({"REQUEST_METHOD": "GET"}, lambda status, headers: started.append(status))
    )
    for index in range(4):
        chunk = next(chunks)
        assert chunk.startswith(f"# HELP demo_family_{index} ".encode())
        assert collector.built == index + 1  # nothing built ahead of what was written
    assert next(chunks, None) is None
    assert started == ["200 OK"]


def test_a_family_larger_than_a_slice_is_written_in_bounded_chunks_with_one_header() -> None:
    """3,500 endpoints: each per-endpoint family spans four slices; the body is still the
    library's render of the same samples, each family's HELP and TYPE appear once, and no chunk
    holds much more than one slice's lines."""
    registry = CollectorRegistry()
    endpoints = EndpointSeries()
    for i in range(3500):
        endpoints.record_rollout(
            f"tenant-{i % 7}", f"asr-{i:05d}", in_flight=False, promoted=False, rolled_back=False
        )
        endpoints.record_route(f"tenant-{i % 7}", f"asr-{i:05d}", {f"asr-{i:05d}-r1": 100})
    registry.register(endpoints)
    app = metrics_app(registry)
    for accept, render in (("", generate_latest), (OPENMETRICS_ACCEPT, generate_openmetrics)):
        chunks = list(app({"REQUEST_METHOD": "GET", "HTTP_ACCEPT": accept}, lambda *_: None))
        body = b"".join(chunks)
        assert body == render(registry)
        assert body.count(b"# TYPE stt_operator_route_weight gauge\n") == 1
        assert body.count(b"# HELP stt_operator_rollbacks") == 1
        assert len(chunks) >= 4 * 4  # four families of 3,500 samples, 1,000 to a slice
        longest_line = max(len(line) for line in body.splitlines())
        assert max(len(chunk) for chunk in chunks) <= SLICE_SAMPLES * (longest_line + 1) + 512


def test_no_created_series_are_exported() -> None:
    """Counters and histograms of the operator's process carry no `_created` series."""
    registry = CollectorRegistry()
    Counter("demo_total", "Demo", ["kind"], registry=registry).labels("a").inc()
    Histogram("demo_latency_seconds", "Demo", registry=registry).observe(0.2)
    endpoints = EndpointSeries()
    endpoints.record_rollout("ns", "asr", in_flight=True, promoted=True, rolled_back=False)
    registry.register(endpoints)
    for body in (generate_latest(registry), generate_openmetrics(registry)):
        assert b"_created" not in body
        assert b'stt_operator_promotions_total{name="asr",namespace="ns"} 1.0' in body
