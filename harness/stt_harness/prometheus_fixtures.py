"""pytest fixtures for a real Prometheus and real prometheus_client exporters.

- `prometheus` (module scope): a running `PrometheusServer` (1 s scrape interval) in a temp dir;
  `prometheus.add_target(job, "127.0.0.1:port", labels={...})` scrapes one more target and waits
  until it is up.
- `prometheus_factory`: start more servers (e.g. with other flags); all stopped at teardown.
- `exporter_factory`: `exporter_factory(registry=None)` serves a prometheus_client registry on a
  free loopback port; all stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stt_harness.prometheus import Exporter, PrometheusServer, start_exporter


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrometheusServer]]:
    started: list[PrometheusServer] = []

    def make(**kwargs: Any) -> PrometheusServer:
        server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), **kwargs)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def exporter_factory() -> Iterator[Callable[..., Exporter]]:
    started: list[Exporter] = []

    def make(registry: CollectorRegistry | None = None, port: int | None = None) -> Exporter:
        exporter = start_exporter(registry, port)
        started.append(exporter)
        return exporter

    yield make
    for exporter in started:
        exporter.stop()
