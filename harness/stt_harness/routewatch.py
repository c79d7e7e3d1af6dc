"""Watch an endpoint's HTTPRoute while a rollout or A/B test moves it (integration tests).

Each poll records the set of (backend, weight) the route names when it changes, and fails at
once if the route names a backend Deployment that was never Available: traffic must only move
to revisions that can serve it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stt_harness.kubewait import wait_for
from stt_operator.builders.routing import GATEWAY_API_VERSION
from stt_operator.builders.serving import deployment_available
from stt_operator.services.kube import Kube


class RouteWatch:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        route: str,
        owner: tuple[str, str, str],
        deployment_labels: Mapping[str, str] | None = None,
    ) -> None:
        """`owner`: (apiVersion, kind, name) of the object each poll returns (the one under
        test); `deployment_labels`: which Deployments count as backends (default: all)."""
        self.kube, self.namespace, self.route, self.owner = kube, namespace, route, owner
        self.deployment_labels = dict(deployment_labels) if deployment_labels else None
        self.seen: list[tuple[tuple[str, int], ...]] = []
        self.ever_available: set[str] = set()
        self.polls = 0
        # Deployment name -> its last few distinct rollout states, oldest first
        self.states: dict[str, list[dict[str, Any]]] = {}

    def _available(self) -> set[str]:
        deployments = self.kube.list("apps/v1", "Deployment", self.namespace, self.deployment_labels)
        available = {d["metadata"]["name"] for d in deployments if deployment_available(d)}
        self.ever_available |= available
        for d in deployments:
            states, state = self.states.setdefault(d["metadata"]["name"], []), rollout_state(d)
            if not states or states[-1] != state:
                states[:] = [*states[-4:], state]
        return available

    def _pods(self, deployments: set[str]) -> dict[str, Any]:
        """The named Deployments' pods as a failure message shows them: readiness, restarts,
        why the last container run ended."""
        out: dict[str, Any] = {}
        for pod in self.kube.list("v1", "Pod", self.namespace):
            name = pod["metadata"]["name"]
            if not any(name.startswith(f"{d}-") for d in deployments):
                continue
            status = pod.get("status") or {}
            ready = {c.get("type"): c.get("status") for c in status.get("conditions") or []}.get("Ready")
            containers = {
                c.get("name"): (c.get("ready"), c.get("restartCount"), c.get("lastState"))
                for c in status.get("containerStatuses") or []
            }
            out[name] = {"phase": status.get("phase"), "ready": ready, "containers": containers}
        return out

    def poll(self) -> dict[str, Any]:
        self.polls += 1
        available = self._available()
        route = self.kube.get(GATEWAY_API_VERSION, "HTTPRoute", self.route, self.namespace)
        if route is not None:
            refs = route["spec"]["rules"][0]["backendRefs"]
            weights = tuple(sorted((r["name"], r["weight"]) for r in refs))
            if not {n for n, _ in weights} <= self.ever_available:
                # The backend may have turned Available (and been routed) between the two reads:
                # look again, after the route; a backend routed while never Available still fails.
                available = self._available()
            # A backend that was Available and then deleted (after the route moved off it) is fine.
            never = {n for n, _ in weights} - self.ever_available
            assert not never, (
                f"route names a backend that never was Available: {weights}, available {available};"
                f" its last states: { {n: self.states.get(n) for n in sorted(never)} };"
                f" pods: {self._pods(never)}"
            )
            if not self.seen or self.seen[-1] != weights:
                self.seen.append(weights)
        api, kind, name = self.owner
        return self.kube.get(api, kind, name, self.namespace) or {}

    def until(self, check: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> Any:
        last: dict[str, Any] = {}

        def probe() -> Any:
            nonlocal last
            last = self.poll()
            return check(last)

        try:
            return wait_for(probe, timeout=timeout, what=what, every=0.2)
        except AssertionError as exc:
            # A timeout says what the object looked like, so a CI failure can be read afterwards.
            raise AssertionError(
                f"{exc}\n{self.owner[1]} status at the end: {last.get('status')!r}"
                f"\nroutes seen: {self.seen!r}"
            ) from None


def serve_then_switch(
    kube: Kube, manifest: dict[str, Any], watch: RouteWatch, to_model: str = "model-b", timeout: float = 90
) -> None:
    """Apply the endpoint, wait until model-a is its stable Healthy model, then move spec.model."""
    kube.apply(manifest)
    watch.until(
        lambda md: (
            (md.get("status") or {}).get("phase") == "Healthy"
            and md["status"].get("stableModel") == "model-a"
        ),
        timeout=timeout,
        what="model-a stable",
    )
    manifest["spec"]["model"]["name"] = to_model
    kube.apply(manifest)


def rollout_state(deployment: dict[str, Any]) -> dict[str, Any]:
    """What decides a Deployment's availability, for a failure message."""
    meta, status = deployment["metadata"], deployment.get("status") or {}
    conditions = status.get("conditions") or []
    return {
        "resourceVersion": meta.get("resourceVersion"),
        "generation": meta.get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "replicas": (deployment.get("spec") or {}).get("replicas"),
        **{k: status.get(k) for k in ("availableReplicas", "updatedReplicas", "readyReplicas")},
        "conditions": {c.get("type"): (c.get("status"), c.get("reason")) for c in conditions},
    }
