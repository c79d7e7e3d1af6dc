"""pytest fixture for Prometheus run by the Prometheus Operator (see ``stt_harness.promoperator``).

- ``prometheus_stack`` (session): the operator (host process) and its Prometheus pod on the real
  node, selecting every ServiceMonitor / PodMonitor / PrometheusRule; ``.url``, ``.query()``,
  ``.active_targets()``, ``.alerts()``, ``.wait_for()``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stt_harness.cluster import LocalCluster
from stt_harness.promoperator import PrometheusStack, running_prometheus_operator


@pytest.fixture(scope="session")
def prometheus_stack(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusStack]:
    with running_prometheus_operator(cluster, tmp_path_factory.mktemp("prometheus-operator")) as stack:
        yield stack
