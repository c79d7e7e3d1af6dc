"""High availability: replicas sharing a Kopf peering; one works, the others stand by."""

from __future__ import annotations

from pathlib import Path

import pytest

from stt_harness.kubewait import condition, wait_for
from stt_harness.operator import OperatorProcess
from stt_harness.resources import API, stt_model

pytestmark = pytest.mark.integration

PEERING_CRDS = Path(__file__).resolve().parents[2] / "charts" / "stt-operator" / "crds" / "kopf-peerings.yaml"


def test_standby_replica_takes_over(cluster, kube, namespace):
    cluster.install_crds([PEERING_CRDS])
    kube.apply(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "stt", "namespace": namespace},
        }
    )
    common = {"namespaces": [namespace], "reconcile_interval_s": 1.0}
    active = OperatorProcess(
        cluster.kubeconfig, extra_args=["--peering", "stt", "--priority", "200"], **common
    )
    standby = OperatorProcess(
        cluster.kubeconfig, extra_args=["--peering", "stt", "--priority", "100"], **common
    )
    with active, standby:
        wait_for(lambda: "Pausing" in standby.log_tail(200), timeout=60, what="the standby replica pausing")
        kube.apply(stt_model("first", namespace))
        wait_for(
            lambda: condition(kube.get(API, "STTModel", "first", namespace), "Ready").get("status") == "True",
            what="the active replica reconciling",
        )
        assert "Pausing" not in active.log_tail(400)
        # Only the active replica runs reconcile loops; the paused one holds none.
        assert active.loops(namespace) == {"STTModel": 1}
        assert standby.loops(namespace) == {}
        active.stop()  # a graceful stop leaves the peering at once
        wait_for(lambda: "Resuming" in standby.log_tail(400), timeout=90, what="the standby resuming")
        kube.apply(stt_model("second", namespace))
        wait_for(
            lambda: (
                condition(kube.get(API, "STTModel", "second", namespace), "Ready").get("status") == "True"
            ),
            what="the former standby reconciling",
        )
        # Resumed, it lists again and runs a loop for every model, the one made before too.
        wait_for(
            lambda: standby.loops(namespace) == {"STTModel": 2}, timeout=30, what="both loops on the standby"
        )


def test_standby_takes_over_from_a_killed_replica_within_the_peering_lifetime(cluster, kube, namespace):
    """A SIGKILLed active replica never signs off: the stand-by waits for its peering lease
    (--peering-lifetime) to run out, then works. The failover time is measured and bounded."""
    import time

    from stt_harness.faults import sigkill

    cluster.install_crds([PEERING_CRDS])
    kube.apply(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "stt", "namespace": namespace},
        }
    )
    lifetime = 10
    common = {"namespaces": [namespace], "reconcile_interval_s": 1.0}
    peering = ["--peering", "stt", "--peering-lifetime", str(lifetime)]
    active = OperatorProcess(cluster.kubeconfig, extra_args=[*peering, "--priority", "200"], **common)
    standby = OperatorProcess(cluster.kubeconfig, extra_args=[*peering, "--priority", "100"], **common)
    with active, standby:
        wait_for(lambda: "Pausing" in standby.log_tail(200), timeout=60, what="the standby replica pausing")
        kube.apply(stt_model("first", namespace))
        wait_for(
            lambda: condition(kube.get(API, "STTModel", "first", namespace), "Ready").get("status") == "True",
            what="the active replica reconciling",
        )
        killed_at = time.monotonic()
        sigkill(active)
        kube.apply(stt_model("second", namespace))
        wait_for(
            lambda: (
                condition(kube.get(API, "STTModel", "second", namespace), "Ready").get("status") == "True"
            ),
            timeout=lifetime + 60,
            what="the former standby reconciling",
        )
        failover = time.monotonic() - killed_at
        print(f"failover after SIGKILL of the active replica: {failover:.1f}s (peering lifetime {lifetime}s)")
        # The lease is renewed every 1-5 s, so it runs out 5-10 s after the kill; then the
        # stand-by resumes and reconciles the waiting object.
        assert failover <= lifetime + 30, failover
