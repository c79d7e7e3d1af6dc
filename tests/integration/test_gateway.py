"""The Gateway API data plane: Traefik accepts the HTTPRoute the operator renders
(``stt_operator.builders.routing.http_route``) and its weights split real requests between
pods on the real node."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from scipy.stats import binomtest

from stt_harness.gateway import GATEWAY_GROUP, GATEWAY_NAME, TraefikGateway, route_parent_conditions
from stt_harness.imagetar import image_tar
from stt_harness.node import REAL_NODE_SELECTOR, REAL_NODE_TOLERATION, RealNode
from stt_operator.builders.assignment import sticky_assign
from stt_operator.builders.routing import Backend, http_route
from stt_operator.builders.serving import TRITON_HTTP_PORT

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (Makefile deps)
IMAGE = "stt.local/busybox-pages:1"
HOST = "stt.example.test"
REQUESTS = 200  # bounded: the whole split check sends at most 2 * REQUESTS requests


@pytest.fixture(scope="session")
def pages_image(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox with a page per revision (``/www/<rev>/index.html`` says ``<rev>``)."""
    node: RealNode = cluster.real_node
    d = tmp_path_factory.mktemp("pages")
    files = {"bin/busybox": BUSYBOX}
    for rev in ("rev-a", "rev-b"):
        (d / rev).write_text(rev)
        files[f"www/{rev}/index.html"] = d / rev
    image_tar(d / "pages.tar", IMAGE, files, ["/bin/busybox"])
    node.import_image(d / "pages.tar")
    return IMAGE


def revision_objects(rev: str, image: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pod answering every path with its revision's name, and its Service on Triton's port."""
    labels = {"app": "pages", "rev": rev}
    pod = {
        "metadata": {"name": rev, "labels": labels},
        "spec": {
            "nodeSelector": dict(REAL_NODE_SELECTOR),
            "tolerations": [dict(REAL_NODE_TOLERATION)],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "web",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": ["httpd", "-f", "-p", "8080", "-h", f"/www/{rev}"],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }
    service = {
        "metadata": {"name": rev},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": TRITON_HTTP_PORT, "targetPort": 8080}],
        },
    }
    return pod, service


@pytest.fixture
def backends(kube_api: ApiClient, namespace: str, pages_image: str) -> Iterator[list[str]]:
    core = CoreV1Api(kube_api)
    revs = ["rev-a", "rev-b"]
    for rev in revs:
        pod, service = revision_objects(rev, pages_image)
        core.create_namespaced_pod(namespace, pod)
        core.create_namespaced_service(namespace, service)
    deadline = time.monotonic() + 180
    while True:
        pods = core.list_namespaced_pod(namespace, label_selector="app=pages").items
        ready = [
            p for p in pods if {c.type: c.status for c in p.status.conditions or []}.get("Ready") == "True"
        ]
        if len(ready) == len(revs):
            break
        assert time.monotonic() < deadline, "backend pods did not become Ready in 180s"
        time.sleep(0.5)
    yield revs


def apply_route(
    kube_api: ApiClient,
    namespace: str,
    weights: dict[str, int],
    session_header: str | None = None,
    name: str = "asr",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The operator's own rendering, with the parentRef the controller adds for gatewayRef."""
    route = http_route(
        name,
        namespace,
        [Backend(rev, w) for rev, w in weights.items()],
        parent_refs=[{"group": GATEWAY_GROUP, "kind": "Gateway", "name": GATEWAY_NAME}],
        hostnames=[HOST],
        session_header=session_header,
        headers=headers,
    )
    api = CustomObjectsApi(kube_api)
    try:
        current = api.get_namespaced_custom_object(GATEWAY_GROUP, "v1", namespace, "httproutes", name)
        route["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return api.replace_namespaced_custom_object(GATEWAY_GROUP, "v1", namespace, "httproutes", name, route)
    except Exception as exc:
        if getattr(exc, "status", None) != 404:
            raise
        return api.create_namespaced_custom_object(GATEWAY_GROUP, "v1", namespace, "httproutes", route)


def sample(gw: TraefikGateway, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        status, body = gw.request("/", host=HOST, headers=headers)
        counts[body.decode() if status == 200 else f"HTTP {status}"] += 1
    return counts


def wait_for(gw: TraefikGateway, predicate: Any, what: str, timeout: float = 60.0) -> None:
    """Until `predicate()`; a request that times out meanwhile (a backend or route still being
    set up on a busy machine) counts as not yet, and is named if the wait runs out."""
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while True:
        try:
            if predicate():
                return
        except OSError as exc:
            last_error = exc
        assert time.monotonic() < deadline, (
            f"timed out after {timeout:.0f}s waiting for {what} ({last_error!r})"
        )
        time.sleep(0.5)


def test_traefik_accepts_operator_route_and_weights_split_requests(
    stt_gateway: TraefikGateway, kube_api: ApiClient, namespace: str, backends: list[str]
) -> None:
    gw = stt_gateway
    apply_route(kube_api, namespace, {"rev-a": 80, "rev-b": 20})

    # Traefik reports the route Accepted by the Gateway with every backend resolved.
    wait_for(
        gw,
        lambda: (
            route_parent_conditions(gw.http_route(namespace, "asr"))
            == {"Accepted": "True", "ResolvedRefs": "True"}
        ),
        "HTTPRoute Accepted and ResolvedRefs",
    )
    # The router exists once both pages answer.
    wait_for(gw, lambda: set(sample(gw, 20)) == {"rev-a", "rev-b"}, "both revisions to answer")

    counts = sample(gw, REQUESTS)
    assert set(counts) == {"rev-a", "rev-b"}, counts
    # Weighted round robin is close to exact; a binomial test keeps the check honest either way.
    assert binomtest(counts["rev-a"], REQUESTS, 0.8).pvalue > 1e-3, counts
    # A request for another host is not routed.
    assert gw.request("/", host="other.example.test")[0] == 404

    # A weight edit (what every rollout step is) moves all traffic.
    apply_route(kube_api, namespace, {"rev-a": 0, "rev-b": 100})
    wait_for(gw, lambda: set(sample(gw, 10)) == {"rev-b"}, "all traffic on rev-b")
    assert sample(gw, REQUESTS) == Counter({"rev-b": REQUESTS})


SESSIONS = 60  # bounded: SESSIONS * PER_SESSION requests with a session id, REQUESTS without
PER_SESSION = 4


def test_sticky_sessions_through_the_gateway(
    stt_gateway: TraefikGateway, kube_api: ApiClient, namespace: str, backends: list[str]
) -> None:
    """ABTest stickiness as the operator renders it (header-value buckets, one rule per variant):
    every request of a session reaches the same revision, the one the documented assignment
    names; sessions split near the weights; requests without a session keep the weighted split."""
    gw = stt_gateway
    weights = {"rev-a": 70, "rev-b": 30}
    route = apply_route(kube_api, namespace, weights, session_header="x-session-id")
    assert len(route["spec"]["rules"]) == 3  # the split + one sticky rule per revision
    wait_for(
        gw,
        lambda: (
            route_parent_conditions(gw.http_route(namespace, "asr"))
            == {"Accepted": "True", "ResolvedRefs": "True"}
        ),
        "HTTPRoute Accepted and ResolvedRefs",
    )
    wait_for(gw, lambda: set(sample(gw, 20)) == {"rev-a", "rev-b"}, "both revisions to answer")
    probe = {"rev-a": "probe-00", "rev-b": "probe-ff"}  # bucket 0 -> rev-a, bucket 255 -> rev-b
    wait_for(
        gw,
        lambda: all(sample(gw, 4, {"x-session-id": sid}) == Counter({rev: 4}) for rev, sid in probe.items()),
        "the sticky rules to be programmed",
    )
    sessions = [str(uuid.UUID(int=i * 0x9E3779B97F4A7C15 % 2**128)) for i in range(SESSIONS)]
    seen: dict[str, Counter[str]] = {s: sample(gw, PER_SESSION, {"x-session-id": s}) for s in sessions}
    # 100 % stickiness: each session saw one revision only, the one the assignment names.
    for sid, counts in seen.items():
        assert counts == Counter({sticky_assign(sid, weights): PER_SESSION}), (sid, counts)
    on_a = sum(1 for c in seen.values() if "rev-a" in c)
    assert binomtest(on_a, SESSIONS, 0.7).pvalue > 1e-3, (on_a, SESSIONS)
    # Without a session id: the weighted split, per request.
    counts = sample(gw, REQUESTS)
    assert set(counts) == {"rev-a", "rev-b"}, counts
    assert binomtest(counts["rev-a"], REQUESTS, 0.7).pvalue > 1e-3, counts


def test_language_pair_routes_share_one_path_by_header(
    stt_gateway: TraefikGateway, kube_api: ApiClient, namespace: str, backends: list[str]
) -> None:
    """Two ModelDeployments on one host and path: the plain one (no endpoint.languagePair, the
    same-language case) and one with endpoint.languagePair en>es, whose route matches the
    x-language-pair header. Traefik sends each request to the model of its pair."""
    gw = stt_gateway
    apply_route(kube_api, namespace, {"rev-a": 100, "rev-b": 0}, name="asr")
    apply_route(kube_api, namespace, {"rev-b": 100}, name="asr-en-es", headers={"x-language-pair": "en>es"})
    for name in ("asr", "asr-en-es"):
        wait_for(
            gw,
            lambda name=name: (
                route_parent_conditions(gw.http_route(namespace, name))
                == {"Accepted": "True", "ResolvedRefs": "True"}
            ),
            f"HTTPRoute {name} Accepted and ResolvedRefs",
        )

    def pair(value: str | None, n: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        for _ in range(n):
            status, body = gw.request("/", host=HOST, headers={"x-language-pair": value} if value else None)
            counts[body.decode() if status == 200 else f"HTTP {status}"] += 1
        return counts

    # The plain route's weight edit (rev-b held all of it after the test above) reaches Traefik.
    wait_for(gw, lambda: set(pair(None, 5)) == {"rev-a"}, "plain requests on rev-a")
    wait_for(gw, lambda: set(pair("en>es", 5)) == {"rev-b"}, "en>es requests on rev-b")
    assert pair("en>es", 50) == Counter({"rev-b": 50})
    # No header, or another pair: the plain route of the same path.
    assert pair(None, 50) == Counter({"rev-a": 50})
    assert pair("en>fr", 20) == Counter({"rev-a": 20})
