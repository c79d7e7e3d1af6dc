"""pytest fixtures for the Gateway API data plane (see ``stt_harness.gateway``).

- ``traefik`` (session): Traefik running against the session ``cluster``, GatewayClass
  ``traefik`` Accepted.
- ``stt_gateway`` (function): the ``stt-gateway`` Gateway in the test's ``namespace``,
  Programmed; returns the ``TraefikGateway`` (``.url``, ``.request(path, host)``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stt_harness.cluster import LocalCluster
from stt_harness.gateway import TraefikGateway, running_gateway


@pytest.fixture(scope="session")
def traefik(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TraefikGateway]:
    with running_gateway(cluster, tmp_path_factory.mktemp("traefik")) as gw:
        yield gw


@pytest.fixture
def stt_gateway(traefik: TraefikGateway, namespace: str) -> TraefikGateway:
    traefik.create_gateway(namespace)
    return traefik
