"""pytest fixtures for a real local Kubernetes control plane (see ``stt_harness.cluster``).

- ``cluster`` (session): a started ``LocalCluster`` with 2 fake GPU nodes and a real node
  (``cluster.real_node``, tainted so only pods that tolerate it run there; see
  ``stt_harness.node``), this project's CRDs (``crds/``), the Gateway API and Prometheus
  Operator CRDs. Builds the tools first if needed and
  fails loudly if they cannot be built.
- ``kubeconfig`` (session): path of the admin kubeconfig. Pass it to subprocesses
  (``env=cluster.env()`` or ``KUBECONFIG=...``); nothing sets it in this process's environment.
- ``real_node`` (session): ``cluster.real_node`` (``stt_harness.node.RealNode``): import images
  with ``real_node.import_image(tar)``, place pods with ``stt_harness.node.on_real_node(spec)``.
- ``kube_api`` (session): a ``kubernetes.client.ApiClient`` for the cluster.
- ``namespace`` (function): a fresh namespace whose ``default`` ServiceAccount exists; deleted after.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from stt_harness.cluster import LocalCluster, default_crd_paths, ensure_tools, repo_root
from stt_harness.node import RealNode

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)
_startup_report: list[str] = []


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    t0 = time.monotonic()
    tools_dir = ensure_tools()
    t_tools = time.monotonic() - t0
    c = LocalCluster(
        nodes=2, crd_paths=default_crd_paths(tools_dir, repo_root()), tools_dir=tools_dir, real_node=True
    )
    c.start()
    line = (
        f"local Kubernetes cluster: tools checked in {t_tools:.1f}s, started in {c.startup_seconds:.1f}s "
        f"({c.server}, {len(c.kwok_node_names)} kwok GPU nodes + real node); phases {c.timings}"
    )
    log.info(line)
    _startup_report.append(line)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def real_node(cluster: LocalCluster) -> RealNode:
    assert cluster.real_node is not None, "the session cluster starts a real node"
    return cluster.real_node


@pytest.fixture(scope="session")
def kubeconfig(cluster: LocalCluster) -> Path:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def kube_api(cluster: LocalCluster) -> Iterator[ApiClient]:
    client = cluster.api_client()
    try:
        yield client
    finally:
        client.close()


def namespace_name(test_name: str) -> str:
    """A DNS-1123 label unique per call, recognisable from the test's name."""
    stem = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].strip("-") or "test"
    return f"{stem}-{uuid.uuid4().hex[:6]}"


SERVICE_ACCOUNT_WAIT_S = 120


@contextlib.contextmanager
def scratch_namespace(kube_api: ApiClient, name: str) -> Iterator[str]:
    """Create namespace `name`, wait for its default ServiceAccount, delete it afterwards."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    core = CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name, "labels": {"stt.dev/test": "true"}}})
    # Pods are rejected until the ServiceAccount controller has created "default".
    started = time.monotonic()
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as exc:
            if exc.status != 404:
                raise
            if time.monotonic() - started > SERVICE_ACCOUNT_WAIT_S:
                raise TimeoutError(
                    f"namespace {name}: kube-controller-manager made no default ServiceAccount in "
                    f"{SERVICE_ACCOUNT_WAIT_S} s (is it running, and reconnected after a restart?)"
                ) from exc
            time.sleep(0.2)
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_api: ApiClient) -> Iterator[str]:
    with scratch_namespace(kube_api, namespace_name(request.node.name)) as name:
        yield name


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _startup_report:
        terminalreporter.write_line(line)
