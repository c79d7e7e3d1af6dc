"""Capacity pre-flight arithmetic (rollout/capacity.py): pure, no cluster."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from stt_operator.builders.placement import Placement, place
from stt_operator.rollout.capacity import (
    GPU,
    fit,
    free_by_node,
    node_matches,
    parse_quantity,
    pod_requests,
    requested_by_node,
)


def node(name: str, gpus: int = 4, cpu: str = "32", memory: str = "256Gi", **extra: Any) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, "nvidia.com/gpu.present": "true", **extra.pop("labels", {})}
    resources = {"cpu": cpu, "memory": memory, GPU: str(gpus), "pods": "110"}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": extra.pop("spec", {}),
        "status": {"allocatable": resources, "capacity": resources},
    }


def pod_spec(gpus: int = 1, cpu: str = "1", memory: str = "2Gi", **extra: Any) -> dict[str, Any]:
    limits = {GPU: str(gpus)} if gpus else {}
    return {
        "containers": [
            {"name": "triton", "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}}
        ],
        **extra,
    }


def bound(spec: dict[str, Any], node_name: str, phase: str = "Running") -> dict[str, Any]:
    return {"spec": {**spec, "nodeName": node_name}, "status": {"phase": phase}}


def test_pod_requests_sum_containers_take_the_larger_init_and_limits_stand_in() -> None:
    spec = {
        "containers": [
            {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {GPU: "2"}}},
            {"resources": {"requests": {"cpu": "250m"}}},
        ],
        "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "512Mi"}}}],
        "overhead": {"cpu": "100m"},
    }
    got = pod_requests(spec)
    assert got == {"cpu": Decimal("2.1"), "memory": Decimal(2**30), GPU: Decimal(2)}


def test_free_counts_unfinished_pods_on_each_node() -> None:
    nodes = [node("a"), node("b")]
    pods = [bound(pod_spec(3), "a"), bound(pod_spec(1), "b"), bound(pod_spec(4), "b", phase="Succeeded")]
    free = free_by_node(nodes, requested_by_node(pods))
    assert free["a"][GPU] == 1 and free["b"][GPU] == 3


def test_more_gpus_per_pod_than_any_node_has_is_insufficient_gpu() -> None:
    verdict = fit(pod_spec(8), 1, [node("a"), node("b")], {})
    assert not verdict.fits
    assert verdict.reason == "InsufficientGPU"
    assert "nvidia.com/gpu needs 8 per pod, at most 4 free" in verdict.message
    assert set(verdict.short) == {GPU}


def test_replicas_spread_over_nodes_and_the_last_one_does_not_fit() -> None:
    nodes = [node("a"), node("b")]
    used = [bound(pod_spec(2), "a"), bound(pod_spec(2), "b")]
    assert fit(pod_spec(2), 2, nodes, requested_by_node(used)).fits
    verdict = fit(pod_spec(2), 3, nodes, requested_by_node(used))
    assert not verdict.fits and verdict.reason == "InsufficientGPU"
    assert "only 2 of 3" in verdict.message and "needs 2 per pod, at most 0 free" in verdict.message


def test_cpu_and_memory_are_checked_too() -> None:
    verdict = fit(pod_spec(0, cpu="40"), 1, [node("a")], {})
    assert not verdict.fits and verdict.reason == "InsufficientCPU"
    verdict = fit(pod_spec(0, memory="300Gi"), 1, [node("a")], {})
    assert not verdict.fits and verdict.reason == "InsufficientMemory"


def test_taints_selectors_affinity_and_cordon_decide_which_nodes_count() -> None:
    tainted = node(
        "real", spec={"taints": [{"key": "stt.dev/real-node", "value": "true", "effect": "NoSchedule"}]}
    )
    cordoned = node("c", spec={"unschedulable": True})
    pool = node("p", labels={"pool": "asr"})
    spec = pod_spec(1)
    assert not node_matches(spec, tainted) and not node_matches(spec, cordoned) and node_matches(spec, pool)
    placed = place(
        {"kind": "Deployment", "spec": {"template": {"spec": spec}}},
        Placement(
            nodeSelector={"pool": "asr"},
            tolerations=[{"key": "stt.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
        ),
    )["spec"]["template"]["spec"]
    assert node_matches(placed, pool) and not node_matches(placed, node("other"))
    # A toleration without the selector: the tainted node counts (it has no pool label).
    tolerating = {**spec, "tolerations": placed["tolerations"]}
    assert node_matches(tolerating, tainted)
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["asr"]}]}
                ]
            }
        }
    }
    assert node_matches({**spec, "affinity": affinity}, pool)
    assert not node_matches({**spec, "affinity": affinity}, node("x"))
    verdict = fit(placed, 1, [tainted, node("other")], {})
    assert not verdict.fits and verdict.reason == "NoMatchingNode"


@given(
    gpus_per_node=st.lists(st.integers(0, 8), min_size=1, max_size=4),
    used=st.lists(st.integers(0, 8), max_size=4),
    per_pod=st.integers(1, 8),
    replicas=st.integers(1, 6),
)
def test_fits_exactly_when_whole_pods_fit_in_free_gpus(
    gpus_per_node: list[int], used: list[int], per_pod: int, replicas: int
) -> None:
    """With GPUs the only scarce resource, the replicas fit iff the sum over nodes of
    floor(free / per_pod) reaches them (what any scheduler can do at best)."""
    nodes = [node(f"n{i}", gpus=g) for i, g in enumerate(gpus_per_node)]
    pods = [bound(pod_spec(u), f"n{i}") for i, u in enumerate(used[: len(nodes)]) if u]
    free = [max(0, g - (used[i] if i < len(used) else 0)) for i, g in enumerate(gpus_per_node)]
    assert fit(pod_spec(per_pod), replicas, nodes, requested_by_node(pods)).fits == (
        sum(f // per_pod for f in free) >= replicas
    )


@given(
    number=st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
    suffix=st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti", "e3", "E2", "n", "u"]),
)
def test_quantities_read_as_the_kubernetes_client_reads_them(number: Decimal, suffix: str) -> None:
    from kubernetes.utils.quantity import parse_quantity as reference

    text = f"{number}{suffix}"
    assert parse_quantity(text) == reference(text)


def test_the_observer_keeps_only_the_requests_and_shares_one_list_per_node() -> None:
    import threading

    from stt_operator.services.capacity import CapacityObserver

    full = bound(
        pod_spec(gpus=2, initContainers=[{"name": "i", "resources": {"requests": {"cpu": "8"}}}]),
        "n1",
    )
    full["metadata"] = {"name": "p", "managedFields": [{"manager": "x"}] * 50}
    full["spec"]["containers"][0]["env"] = [{"name": "E", "value": "v" * 1000}]

    class CountingKube:
        calls = 0

        def list_summary(
            self, api_version: str, kind: str, namespace: str | None, summarize: Any, field_selector: str
        ) -> Any:
            CountingKube.calls += 1
            assert (api_version, kind, namespace) == ("v1", "Pod", None)
            assert field_selector.startswith("spec.nodeName=n1,")
            return summarize([full])

    observer = CapacityObserver(CountingKube(), ttl_s=60)  # type: ignore[arg-type]
    threads = [threading.Thread(target=observer.requested_on, args=(["n1"],)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert CountingKube.calls == 1  # twenty reconciles, one list
    kept = observer.requested_on(["n1"])
    assert (
        kept
        == requested_by_node([full])
        == {"n1": {GPU: Decimal(2), "cpu": Decimal(8), "memory": Decimal(2 * 2**30)}}
    )
