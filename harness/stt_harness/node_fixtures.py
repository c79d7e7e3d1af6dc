"""pytest fixtures for end-to-end tests whose objects run on the cluster's real node.

- ``node_operator`` (module): the operator process configured as a Helm install would be for the
  real node (images, placement, the Prometheus Operator's Prometheus as its default Prometheus and
  as the analysis source ``cluster``), watching ``stt-node-*`` namespaces. A test may stop and
  start it (a restart mid-rollout).
- ``node_namespace``: a namespace it watches, with the Gateway, the chart's workload
  ServiceMonitor (Triton and evaluator Services scraped with ``namespace`` / ``service``
  labels) and the labelled set as the claim ``evalset`` (what ``pvc://evalset`` names).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stt_harness import closedloop as cl
from stt_harness.cluster import LocalCluster
from stt_harness.cluster_fixtures import namespace_name, scratch_namespace
from stt_harness.gateway import TraefikGateway
from stt_harness.images import BuiltImage
from stt_harness.operator import OperatorProcess
from stt_harness.promoperator import PrometheusStack

NODE_NAMESPACE_PREFIX = "stt-node-"


@pytest.fixture(scope="module")
def node_images(cluster: LocalCluster) -> dict[str, BuiltImage]:
    """Build (or reuse) the images and import them into the real node's containerd."""
    return cl.node_images(cluster)


@pytest.fixture(scope="module")
def node_evalset(small_evalset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The labelled set, readable by the evaluator's and the Jobs' non-root users."""
    return cl.readable_copy(small_evalset, tmp_path_factory.mktemp("node-evalset"))


@pytest.fixture(scope="module")
def node_operator(
    cluster: LocalCluster,
    node_images: dict[str, BuiltImage],
    prometheus_stack: PrometheusStack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    proc = cl.operator_process(
        cluster,
        node_images,
        prometheus_stack.url,
        tmp_path_factory.mktemp("node-operator"),
        [f"{NODE_NAMESPACE_PREFIX}*"],
        extra_args=["--prometheus-url", prometheus_stack.url],
    )
    proc.start()
    yield proc
    proc.stop_after_the_tests()


@pytest.fixture
def node_namespace(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    kube_api: Any,
    traefik: TraefikGateway,
    node_operator: OperatorProcess,
    node_evalset: Path,
) -> Iterator[str]:
    name = namespace_name(f"{NODE_NAMESPACE_PREFIX}{request.node.name.removeprefix('test_')}")
    with scratch_namespace(kube_api, name):
        cl.prepare_namespace(cluster, traefik, name, node_evalset)
        try:
            yield name
        finally:
            # pytest shows this only for a failed test: what the operator said meanwhile.
            print(f"operator log (last lines):\n{node_operator.log_tail(80)}")
            cl.delete_volume(cluster, name)
