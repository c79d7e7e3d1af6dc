"""pytest fixtures: the real operator process and the stand-in kubelet for its Job pods,
both against the session's local cluster (`cluster` from cluster_fixtures)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stt_harness.cluster import LocalCluster
from stt_harness.cluster_fixtures import namespace_name, scratch_namespace
from stt_harness.jobpods import LocalJobKubelet
from stt_harness.operator import OperatorProcess
from stt_harness.prometheus import PrometheusServer, running_prometheus
from stt_operator.services.kube import Kube

OPERATOR_NAMESPACE_PREFIX = "stt-op-"


@pytest.fixture(scope="session")
def operator_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """The real Prometheus the session's operator queries (analysis, analytics)."""
    with running_prometheus(tmp_path_factory.mktemp("operator-prometheus")) as server:
        yield server


@pytest.fixture(scope="session")
def operator(cluster: LocalCluster, operator_prometheus: PrometheusServer) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        cluster.kubeconfig,
        reconcile_interval_s=1.0,
        # Only namespaces made by `operator_namespace`: tests that exercise the API without an
        # operator, or run their own, keep their objects to themselves.
        namespaces=[f"{OPERATOR_NAMESPACE_PREFIX}*"],
        extra_args=[
            "--prometheus-url",
            operator_prometheus.url,
            "--analytics-interval",
            "2",
        ],
    )
    proc.start()
    yield proc
    proc.stop_after_the_tests()


@pytest.fixture
def operator_namespace(request: pytest.FixtureRequest, kube_api, operator: OperatorProcess) -> Iterator[str]:
    """A fresh namespace that the session's operator watches (deleted after the test while the
    operator still runs, so its finalizers are released)."""
    name = namespace_name(f"{OPERATOR_NAMESPACE_PREFIX}{request.node.name}")
    with scratch_namespace(kube_api, name):
        yield name


@pytest.fixture(scope="session")
def job_kubelet(cluster: LocalCluster) -> Iterator[LocalJobKubelet]:
    with LocalJobKubelet(cluster.api_client()) as kubelet:
        yield kubelet


@pytest.fixture
def kube(kube_api) -> Kube:
    return Kube(kube_api)
