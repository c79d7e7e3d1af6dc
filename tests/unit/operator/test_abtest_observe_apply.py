"""The ABTest reconcile's first and last steps: `observe` (every cluster read, in one place) and
`apply_abtest` (the writes, in the safe order: hold, variants, evaluator, route, release with the
promotion, cleanup)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from kubernetes.client.rest import ApiException

from stt_harness.resources import ab_test
from stt_operator.api import ABTest
from stt_operator.builders.serving import revision_object_name
from stt_operator.controllers.abtest import observe
from stt_operator.controllers.abtest_apply import apply_abtest
from stt_operator.controllers.context import OperatorContext
from stt_operator.experiments.objects import LABEL_ABTEST
from stt_operator.experiments.plan_objects import ABTestObjects
from stt_operator.experiments.planner import ABTestInput, ABTestPlan, EndpointInfo
from stt_operator.rollout.transitions import ANNOTATION_HELD_BY
from stt_operator.services.kube import Conflict, KubeError, NotFound
from stt_operator.settings import OperatorSettings

NAME, NS, MD = "t", "ns", "asr"
STABLE = revision_object_name(MD, "m1", "r1")
AVAILABLE = {
    "spec": {"replicas": 1},
    "status": {
        "availableReplicas": 1,
        "updatedReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}],
    },
}


def abtest(phase: str | None = None) -> ABTest:
    manifest = ab_test(NAME, NS, MD)
    manifest["metadata"]["uid"] = "u"
    body = {**manifest, "status": {"phase": phase} if phase else {}}
    return ABTest.from_body(body)


def refusal(cls: type[KubeError], status: int) -> KubeError:
    return cls(ApiException(status=status, reason="refused"))


class ObservedKube:
    """A cluster to read: objects by (kind, name), owned Deployments, other tests."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]], owned: list[dict[str, Any]]) -> None:
        self.objects, self.owned = objects, owned
        self.others = [
            {"metadata": {"uid": "u"}, "status": {"phase": "Running"}},  # this test: never counted
            {"metadata": {"uid": "x"}, "status": {"phase": "Running"}},
        ]
        self.scopes: list[set[str]] = []

    def get(self, api: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def list(self, api: str, kind: str, namespace: str, labels: dict[str, str], cached: bool = False) -> Any:
        assert (kind, labels, cached) == ("Deployment", {LABEL_ABTEST: NAME}, True)
        return self.owned

    def list_visible(self, api: str, kind: str, namespaces: Any) -> list[dict[str, Any]]:
        self.scopes.append(set(namespaces))
        return self.others


def test_observe_reads_the_endpoint_its_stable_deployment_the_models_and_the_tests_own() -> None:
    md = {"metadata": {"name": MD}, "spec": {}, "status": {"stableModel": "m1", "stableRevision": "r1"}}
    objects = {
        ("ModelDeployment", MD): md,
        ("STTModel", "m1"): {"metadata": {"name": "m1"}},
        ("Deployment", STABLE): AVAILABLE,
    }
    owned = [{"metadata": {"name": "v-b"}, **AVAILABLE}, {"metadata": {"name": "v-c"}, "status": {}}]
    kube = ObservedKube(objects, owned)
    settings = OperatorSettings(namespaces=["team-a", "team-*", "team-b"])
    ctx = OperatorContext(settings=settings, kube=kube)  # type: ignore[arg-type]
    world = observe(ctx, abtest(), {"name": NAME, "namespace": NS, "uid": "u"}, deleting=False)
    assert world.md is md and world.models == {"m1": objects[("STTModel", "m1")], "m2": None}
    assert world.available == {"v-b": True, "v-c": False}
    assert world.endpoint.name == MD and world.endpoint.stable_available
    # Pending: the other tests count, listed where RBAC lets the operator (patterns cannot be listed).
    assert world.active_elsewhere == 1 and kube.scopes == [{"team-a", "team-b", NS}]


def test_observe_counts_other_tests_only_while_this_one_waits_to_start() -> None:
    kube = ObservedKube({}, [])
    ctx = OperatorContext(settings=OperatorSettings(), kube=kube)  # type: ignore[arg-type]
    meta = {"name": NAME, "namespace": NS, "uid": "u"}
    assert observe(ctx, abtest("Running"), meta, deleting=False).active_elsewhere == 0
    assert observe(ctx, abtest(), meta, deleting=True).active_elsewhere == 0
    assert kube.scopes == []
    gone = observe(ctx, abtest(), meta, deleting=False)
    assert gone.md is None and gone.endpoint == EndpointInfo(MD, exists=False) and kube.scopes == [{NS}]


class ApplyingKube:
    """Records every write in order; refuses the ones named in `refuse` (kind -> error)."""

    def __init__(self, refuse: dict[str, KubeError] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse = refuse or {}

    def _maybe_refuse(self, what: str) -> None:
        if what in self.refuse:
            raise self.refuse[what]

    def patch_if_unchanged(self, api: str, kind: str, name: str, ns: str, body: Any, version: str) -> None:
        self._maybe_refuse("hold")
        self.calls.append(("hold", name, body, version))

    def patch(self, api: str, kind: str, name: str, ns: str, body: Any) -> None:
        self._maybe_refuse("patch")
        self.calls.append(("patch", name, body))

    def apply(self, manifest: dict[str, Any]) -> None:
        self._maybe_refuse(manifest["kind"])
        self.calls.append(("apply", manifest["kind"], manifest["metadata"]["name"]))

    def get(self, api: str, kind: str, name: str, ns: str) -> dict[str, Any]:
        self._maybe_refuse("get")
        # The route already names the variant "v-b": cleanup leaves it.
        return {
            "spec": {
                "rules": [{"backendRefs": [{"name": STABLE, "weight": 100}, {"name": "v-b", "weight": 0}]}]
            }
        }

    def list(self, api: str, kind: str, ns: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        return [{"metadata": {"name": "v-b"}}, {"metadata": {"name": "v-c"}}] if kind == "Deployment" else []

    def delete(self, api: str, kind: str, name: str, ns: str) -> None:
        self.calls.append(("delete", kind, name))


def manifest(kind: str, name: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name}}


MD_BODY = {"metadata": {"name": MD, "resourceVersion": "7"}}
OBJECTS = ABTestObjects(
    variants=[manifest("Deployment", "v-b"), manifest("Service", "v-b")],
    evaluator=[manifest("ConfigMap", "eval")],
    route=manifest("HTTPRoute", MD),
    weights={STABLE: 100},
)


def run(kube: ApplyingKube, held_by: str | None = None, deleting: bool = False, **plan: Any) -> None:
    inp = ABTestInput(
        name=NAME,
        namespace=NS,
        spec=abtest().spec,
        status=abtest().status,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        endpoint=EndpointInfo(MD, held_by=held_by),
        models={},
        available={},
        deleting=deleting,
    )
    ctx = OperatorContext(settings=OperatorSettings(), kube=kube)  # type: ignore[arg-type]
    apply_abtest(ctx, ABTestPlan(status=inp.status, **plan), inp, MD_BODY, OBJECTS)


def test_apply_takes_the_hold_first_and_gives_it_back_with_the_promotion_before_cleanup() -> None:
    kube = ApplyingKube()
    run(kube, acquire_hold=True, release_hold=True, promote_model="m2", cleanup=True)
    assert kube.calls == [
        ("hold", MD, {"metadata": {"annotations": {ANNOTATION_HELD_BY: NAME}}}, "7"),
        ("apply", "Deployment", "v-b"),
        ("apply", "Service", "v-b"),
        ("apply", "ConfigMap", "eval"),
        ("apply", "HTTPRoute", MD),
        (
            "patch",
            MD,
            {
                "metadata": {"annotations": {ANNOTATION_HELD_BY: None}},
                "spec": {"model": {"name": "m2"}, "selector": None},
            },
        ),
        ("delete", "Deployment", "v-c"),  # "v-b" is still routed
    ]


def test_a_hold_already_taken_is_not_taken_again_and_a_lost_race_is_retried_soon() -> None:
    kube = ApplyingKube()
    run(kube, held_by=NAME, acquire_hold=True)
    assert [c[0] for c in kube.calls] == ["apply"] * 4
    lost = ApplyingKube(refuse={"hold": refusal(Conflict, 409)})
    with pytest.raises(kopf.TemporaryError) as raised:
        run(lost, acquire_hold=True)
    # The handlers count conflicts by the error's cause (controllers/handlers.py).
    assert isinstance(raised.value.__cause__, Conflict) and lost.calls == []


def test_refusals_are_tolerated_only_where_the_test_is_being_deleted() -> None:
    for refuse in ({"HTTPRoute": refusal(KubeError, 500)}, {"get": refusal(KubeError, 500)}):
        with pytest.raises(KubeError):
            run(ApplyingKube(refuse), held_by=NAME, cleanup=True)
        run(ApplyingKube(refuse), held_by=NAME, cleanup=True, deleting=True)
    # A ModelDeployment gone before the release: nothing to give back, at any time.
    run(ApplyingKube({"patch": refusal(NotFound, 404)}), release_hold=True)
