"""The admission invariant, on the real apiserver: every spec it admits is one the operator
can honour.

Hypothesis generates specs of the three kinds (each field drawn from the pattern, bounds and
enums the pydantic models declare, plus values an attacker or a careless user would try). Each
spec is created with server-side dry-run; for every admitted one, the operator's own builders
make the child objects it would create (Triton Deployment and Service, HTTPRoute, endpoint
Service and EndpointSlice, validation and quantization Jobs, ConfigMaps, evaluators), and
each of those must be admitted too (server-side dry-run, strict field validation). The
pydantic models must accept what the apiserver admitted, and no builder may raise.

Generation is derandomized (the same specs every run) and bounded; the counts are printed.
A spec that ever broke the invariant is kept in tests/data/invariant_regressions.yaml and
replayed first.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Lock
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stt_harness.specs import sample
from stt_operator.api import ABTest, ModelDeployment, STTModel
from stt_operator.api.common import (
    QUANTITY_PATTERN,
)
from stt_operator.api.modeldeployment import GATEWAY_PATH_PATTERN
from stt_operator.artifacts import jobs
from stt_operator.builders import routing
from stt_operator.builders.metadata import owner_reference
from stt_operator.builders.modelconfig import model_config_map, triton_model_name
from stt_operator.builders.revision import effective_gpus, gpu_required_reason, serving_params
from stt_operator.builders.routing import endpoint_service, endpoint_slice
from stt_operator.builders.serving import Revision, revision_object_name, triton_deployment, triton_service
from stt_operator.experiments.objects import (
    VariantBackend,
    endpoint_route,
    evaluator_for,
    owned_service_name,
    variant_objects,
)
from stt_operator.rollout.evaluation import rollout_evaluator
from stt_operator.triton.config import render_for_model

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = ROOT / "tests" / "data" / "invariant_regressions.yaml"
GROUP, VERSION = "stt.dev", "v1alpha1"
PLURALS = {"STTModel": "sttmodels", "ModelDeployment": "modeldeployments", "ABTest": "abtests"}
KINDS = {"STTModel": STTModel, "ModelDeployment": ModelDeployment, "ABTest": ABTest}
OPERATOR_IMAGE = "ghcr.io/stt-operator/stt-operator:0.1.0"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
DIGEST = "sha256:" + "ab" * 32
# Examples per kind: 2000 in all by default, about four minutes on two busy cores (each spec is
# 1-9 dry-runs); STT_SPEC_INVARIANT_SCALE=5 runs five times as many.
_SCALE = float(os.environ.get("STT_SPEC_INVARIANT_SCALE", "1"))
EXAMPLES = {
    kind: max(1, round(n * _SCALE))
    for kind, n in {"STTModel": 800, "ModelDeployment": 800, "ABTest": 400}.items()
}


# --- values: from the models' patterns, plus what people try --------------------------------


def _regex(pattern: str, max_len: int) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True).filter(lambda s: 0 < len(s) <= max_len)


# Cheap composites where a full regex is slow to draw from; the models' patterns for the rest.
_LABEL = _regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", 10)
_SUBDOMAIN = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)
NAMES = st.one_of(
    _LABEL,
    _SUBDOMAIN,
    st.sampled_from(["a.b", "a-b", "a" * 63, "a" * 64, "1abc", "x.y.z", "ab" + "c" * 61, "m" * 62 + "9"]),
)
QUANTITIES = st.one_of(
    _regex(QUANTITY_PATTERN, 32),
    st.integers(0, 10**7),
    st.sampled_from(["500m", "1.5", "16Gi", "1e3", "1e99", "9" * 32, "0.0001", ".5", "1Ei", "1.2.3", "-1"]),
)
DURATIONS = st.one_of(
    st.lists(
        st.tuples(st.integers(0, 3000), st.sampled_from(["ms", "s", "m", "h"])), min_size=1, max_size=3
    ).map(lambda parts: "".join(f"{n}{u}" for n, u in parts)),
    st.sampled_from(["0s", "500ms", "1s", "1m", "24h", "25h", "1h30m", "999999999h", "1d"]),
)
PATHS = st.one_of(
    _regex(GATEWAY_PATH_PATTERN, 64),
    st.sampled_from(["/", "/v2/models", "/a//b", "/a/../b", "/a%2fb", "/a/.", "/%41", "/a b"]),
)
LABEL_KEYS = st.one_of(
    st.tuples(
        st.one_of(st.just(""), _SUBDOMAIN.map(lambda p: p + "/")),
        _regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?", 10),
    ).map("".join),
    st.sampled_from(["app", "stt.dev/family", "a,b", "a=b", "a b", "x" * 64]),
)
LABEL_VALUES = st.one_of(
    _regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?)?", 10),
    st.sampled_from(["", "v", "a,b", "x" * 64]),
)
URIS = st.one_of(
    st.tuples(
        st.sampled_from(["s3://", "gs://", "pvc://", "https://", "http://", "file:///", "ftp://"]),
        st.one_of(_SUBDOMAIN, st.sampled_from(["", "B", "h:8080", "u@h"])),
        st.lists(st.sampled_from(["m", "x.onnx", "..", ".", "%2e%2e", "a b", "v2"]), max_size=3).map(
            lambda parts: "".join("/" + p for p in parts)
        ),
    ).map("".join),
    st.sampled_from(["s3://b/m.onnx", "pvc://claim/m", "s3:///k", "https://h/x", "file:///m"]),
)
HOSTNAMES = st.one_of(
    _SUBDOMAIN, _SUBDOMAIN.map(lambda h: "*." + h), st.sampled_from(["stt.example.com", "Upper.com", "a_b"])
)


# The attack axes added last are drawn one time in four, so most specs stay admissible and
# their children get checked too.
RARELY = st.sampled_from([False, False, False, True])


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """None (leave the sample's value) most of the time, else a drawn value."""
    return st.one_of(st.none(), st.none(), strategy)


@st.composite
def sttmodel_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(
        sample(draw(st.sampled_from(["sttmodel-onnx-conformer-ctc", "sttmodel-pocketsphinx-en"])))
    )
    doc["metadata"] = {"name": draw(NAMES)}
    spec = doc["spec"]
    resources = spec.setdefault("resources", {})
    for key in ("cpu", "memory"):
        if (value := draw(maybe(QUANTITIES))) is not None:
            resources[key] = value
    if draw(st.booleans()):
        names = st.sampled_from(["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu", "pods"])
        resources["limits"] = draw(st.dictionaries(names, QUANTITIES, max_size=3))
    if (gpu := draw(maybe(st.integers(-1, 17)))) is not None:
        resources["gpu"] = gpu
    triton = spec.setdefault("triton", {})
    if draw(st.booleans()):
        triton["instanceGroup"] = {"kind": draw(st.sampled_from(["KIND_GPU", "KIND_CPU"])), "count": 1}
        triton["tensorrtFp16"] = False
        if triton["instanceGroup"]["kind"] == "KIND_GPU" and draw(RARELY):
            triton["instanceGroup"]["gpus"] = draw(st.lists(st.integers(0, 3), min_size=1, max_size=2))
    if draw(RARELY):  # Triton's TensorRT backend: GPU instances only
        spec["format"], triton["backend"], triton["tensorrtFp16"] = "tensorrt-plan", "tensorrt", False
    if draw(RARELY):
        keys = st.sampled_from(["", "grammar", "EXECUTION_ENV_PATH"])
        triton["parameters"] = draw(st.dictionaries(keys, st.just("v"), max_size=2))
    if draw(RARELY):  # no batching: every tensor needs a dim of its own
        triton["maxBatchSize"] = 0
        triton.pop("dynamicBatching", None)
        if draw(st.booleans()):
            spec["io"]["inputs"][0]["dims"] = []
    if draw(RARELY):
        audio = next(t for t in spec["io"]["inputs"] if t.get("role") == "audio")
        audio["dataType"] = draw(st.sampled_from(["TYPE_FP32", "TYPE_INT16", "TYPE_STRING", "TYPE_INT64"]))
    if spec["io"].get("vocabulary") and draw(RARELY):
        spec["io"]["vocabulary"] = spec["io"]["vocabulary"][
            : draw(st.integers(1, len(spec["io"]["vocabulary"])))
        ]
    if (
        image := draw(maybe(st.sampled_from(["img:1", "registry.local/triton@sha256:" + "a" * 64, "a b"])))
    ) is not None:
        triton["image"] = image
    if (uri := draw(maybe(URIS))) is not None:
        spec["source"]["uri"] = uri
        spec["source"].pop("secretRef", None)
    validation = spec.setdefault("validation", {})
    if (timeout := draw(maybe(DURATIONS))) is not None:
        validation["timeout"] = timeout
    if (evalset := draw(maybe(URIS))) is not None:
        validation["evaluationSet"] = {"uri": evalset}
    if spec["format"] == "onnx" and draw(st.booleans()):
        spec.setdefault("quantization", {"enabled": True})["outputUri"] = draw(URIS)
    if draw(st.booleans()):
        doc["metadata"]["labels"] = draw(st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=2))
    return doc


@st.composite
def modeldeployment_docs(draw: st.DrawFn) -> dict[str, Any]:
    stem = draw(
        st.sampled_from(
            [
                "modeldeployment-canary",
                "modeldeployment-selector",
                "modeldeployment-gradual",
                "modeldeployment-bluegreen",
            ]
        )
    )
    doc = copy.deepcopy(sample(stem))
    doc["metadata"] = {"name": draw(NAMES)}
    spec = doc["spec"]
    if "model" in spec and draw(st.booleans()):
        spec["model"]["name"] = draw(NAMES)
    if "selector" in spec and draw(st.booleans()):
        spec["selector"]["matchLabels"] = draw(st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=3))
    if draw(st.booleans()):
        spec["resources"] = {
            k: v
            for k, v in {"cpu": draw(maybe(QUANTITIES)), "memory": draw(maybe(QUANTITIES))}.items()
            if v is not None
        }
        if draw(st.booleans()):
            spec["resources"]["limits"] = {"cpu": draw(QUANTITIES)}
        spec["resources"]["gpu"] = draw(st.integers(0, 2))
    if draw(st.booleans()):
        routing = spec.get("routing", "gateway-api")
        endpoint: dict[str, Any] = {"path": draw(PATHS), "hostnames": draw(st.lists(HOSTNAMES, max_size=2))}
        if routing == "gateway-api" and draw(st.booleans()):
            gateway: dict[str, Any] = {"name": draw(NAMES)}
            if draw(st.booleans()):
                gateway["sectionName"] = draw(st.one_of(NAMES, st.sampled_from(["Listener", "http_1", "-x"])))
            if draw(st.booleans()):
                gateway["namespace"] = draw(NAMES)
            endpoint["gatewayRef"] = gateway
        spec["endpoint"] = endpoint
    if spec.get("analysis") and (interval := draw(maybe(DURATIONS))) is not None:
        spec["analysis"]["interval"] = interval
    if spec.get("analysis") and draw(st.booleans()):
        spec["analysis"]["prometheus"] = {"timeout": draw(DURATIONS)}
    if (delay := draw(maybe(DURATIONS))) is not None:
        spec["scaleDownDelay"] = delay
    if (replicas := draw(maybe(st.integers(-1, 1001)))) is not None:
        spec["replicas"] = replicas
    return doc


@st.composite
def abtest_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(sample("abtest-pocketsphinx"))
    doc["metadata"] = {"name": draw(NAMES)}
    spec = doc["spec"]
    if draw(st.booleans()):
        spec["endpoint"]["modelDeploymentRef"]["name"] = draw(NAMES)
    n = draw(st.integers(2, 4))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    weights = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, 100], strict=True)]
    spec["variants"] = [
        {
            "name": draw(st.one_of(_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", 12), st.just(f"v{i}"))),
            "model": {"name": draw(NAMES)},
            "weight": w,
        }
        for i, w in enumerate(weights)
    ]
    spec["controlVariant"] = spec["variants"][0]["name"]
    if (duration := draw(maybe(DURATIONS))) is not None:
        spec["duration"] = duration
        spec.pop("minDuration", None)
    return doc


# --- the check ------------------------------------------------------------------------------


class Checker:
    """Dry-run a custom resource, build its children as the operator would, dry-run those."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes.client import AppsV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi, DiscoveryV1Api

        self.namespace = namespace
        self.custom = CustomObjectsApi(api_client)
        self.core = CoreV1Api(api_client)
        self.apps = AppsV1Api(api_client)
        self.batch = BatchV1Api(api_client)
        self.discovery = DiscoveryV1Api(api_client)
        self.counts: Counter[str] = Counter()
        self._lock = Lock()

    def count(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self.counts[key] += 1

    def admit(self, doc: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        from kubernetes.client.exceptions import ApiException

        create = self._creator(doc)
        try:
            return create(), ""
        except ApiException as exc:
            if exc.status not in (400, 422):
                raise
            return None, json.loads(exc.body).get("message", "")

    def _creator(self, doc: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        kw: dict[str, Any] = {"dry_run": "All", "field_validation": "Strict"}
        ns = self.namespace
        kind, api_version = doc["kind"], doc["apiVersion"]
        if kind in PLURALS:
            return lambda: self.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURALS[kind], doc, **kw
            )
        if kind == "HTTPRoute":
            group, version = api_version.split("/")
            return lambda: self.custom.create_namespaced_custom_object(
                group, version, ns, "httproutes", doc, **kw
            )
        calls: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.create_namespaced_deployment,
            "Service": self.core.create_namespaced_service,
            "ConfigMap": self.core.create_namespaced_config_map,
            "Job": self.batch.create_namespaced_job,
            "EndpointSlice": self.discovery.create_namespaced_endpoint_slice,
        }
        if kind not in calls:
            raise AssertionError(f"no dry-run for child kind {kind}")
        return lambda: self.custom.api_client.sanitize_for_serialization(calls[kind](ns, doc, **kw))

    def check(self, doc: dict[str, Any]) -> None:
        doc = copy.deepcopy(doc)
        doc["metadata"]["namespace"] = self.namespace
        self.count("generated")
        stored, _ = self.admit(doc)
        if stored is None:
            return
        self.count("admitted")
        KINDS[doc["kind"]].from_body(stored)  # what the apiserver admits, the operator parses
        children = CHILDREN[doc["kind"]](stored)
        for child in children:
            child = copy.deepcopy(child)
            child["metadata"]["namespace"] = self.namespace
            admitted, message = self.admit(child)
            assert admitted is not None, (
                f"{doc['kind']} {doc['metadata']['name']!r} was admitted but its {child['kind']}"
                f" {child['metadata']['name']!r} is not: {message}\nspec: {json.dumps(doc['spec'])}"
            )
            self.count(f"child {child['kind']}")


def _model_body(name: str, namespace: str) -> dict[str, Any]:
    body = copy.deepcopy(sample("sttmodel-onnx-conformer-ctc"))
    body["metadata"] = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())}
    return body


def sttmodel_children(body: dict[str, Any]) -> list[dict[str, Any]]:
    meta, spec = body["metadata"], body["spec"]
    owner = owner_reference(body)
    out = [
        model_config_map(
            meta["name"],
            meta["namespace"],
            render_for_model(triton_model_name(meta["name"]), spec),
            triton_model_name=triton_model_name(meta["name"]),
            owner=owner,
        ),
        jobs.validation_job(
            meta["name"], meta["namespace"], spec, OPERATOR_IMAGE, owner, triton_image=TRITON_IMAGE
        ),
    ]
    if (spec.get("quantization") or {}).get("enabled"):
        out.append(jobs.quantization_job(meta["name"], meta["namespace"], spec, OPERATOR_IMAGE, owner))
    # Served by an endpoint: the Triton Deployment and Service this model's spec shapes.
    params = serving_params(
        deployment_name="endpoint",
        namespace=meta["namespace"],
        revision=Revision(meta["name"], DIGEST),
        role="stable",
        model=body,
        replicas=1,
        resources_override=None,
        triton_image=TRITON_IMAGE,
        operator_image=OPERATOR_IMAGE,
        owner=owner,
    )
    return [*out, triton_deployment(params), triton_service(params)]


def modeldeployment_children(body: dict[str, Any]) -> list[dict[str, Any]]:
    meta, spec = body["metadata"], body["spec"]
    name, namespace = meta["name"], meta["namespace"]
    owner = owner_reference(body)
    model_name = (spec.get("model") or {}).get("name") or "selected-model"
    model = _model_body(model_name, namespace)
    stable = _model_body("stable-model", namespace)
    revision = Revision(model_name, DIGEST)
    refused = gpu_required_reason(model, effective_gpus(model, spec.get("resources")))
    if refused is not None:
        # The operator serves nothing (condition GPURequired) rather than an impossible pod.
        assert refused.startswith("spec.resources.gpu is "), refused
        return []
    params = serving_params(
        deployment_name=name,
        namespace=namespace,
        revision=revision,
        role="canary",
        model=model,
        replicas=spec.get("replicas", 1),
        resources_override=spec.get("resources"),
        triton_image=TRITON_IMAGE,
        operator_image=OPERATOR_IMAGE,
        owner=owner,
    )
    out = [triton_deployment(params), triton_service(params)]
    service = revision_object_name(name, model_name, revision.id)
    parsed = ModelDeployment.from_body(body).spec
    if spec.get("routing") == "replica-ratio":
        out += [
            endpoint_service(name, namespace, owner),
            endpoint_slice(name, namespace, ["10.0.0.7"], owner),
        ]
    else:  # the operator's own route builder, as the controller calls it
        route = routing.endpoint_route(
            name, namespace, parsed.endpoint, {service: 100}, models={service: model_name}, owner=owner
        )
        out.append(route)
    evaluator = rollout_evaluator(
        body,
        parsed,
        stable=(Revision("stable-model", DIGEST).id, stable),
        candidate=(revision.id, model),
        operator_image=OPERATOR_IMAGE,
    )
    return [*out, *(evaluator or [])]


def abtest_children(body: dict[str, Any]) -> list[dict[str, Any]]:
    meta, spec = body["metadata"], body["spec"]
    namespace = meta["namespace"]
    md = copy.deepcopy(sample("modeldeployment-canary"))
    md["metadata"] = {
        "name": spec["endpoint"]["modelDeploymentRef"]["name"],
        "namespace": namespace,
        "uid": str(uuid.uuid4()),
    }
    models = {v["model"]["name"]: _model_body(v["model"]["name"], namespace) for v in spec["variants"]}
    backends = [
        VariantBackend(
            v["name"],
            v["model"]["name"],
            Revision(v["model"]["name"], DIGEST).id,
            owned_service_name(meta["name"], v["model"]["name"], Revision(v["model"]["name"], DIGEST).id),
            True,
        )
        for v in spec["variants"]
    ]
    out: list[dict[str, Any]] = []
    for b in backends:
        out += variant_objects(
            abtest_body=body,
            backend=b,
            model_body=models[b.model],
            model_digest=DIGEST,
            replicas=1,
            resources_override=None,
            triton_image=TRITON_IMAGE,
            operator_image=OPERATOR_IMAGE,
        )
    out.append(
        endpoint_route(md, {b.service: v["weight"] for b, v in zip(backends, spec["variants"], strict=True)})
    )
    out += evaluator_for(
        abtest_body=body,
        endpoint=md["metadata"]["name"],
        backends=backends,
        models=models,
        control=spec.get("controlVariant") or spec["variants"][0]["name"],
        evalset=("s3://speech-eval/set/", None),
        operator_image=OPERATOR_IMAGE,
    )
    return out


CHILDREN: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "STTModel": sttmodel_children,
    "ModelDeployment": modeldeployment_children,
    "ABTest": abtest_children,
}
STRATEGIES = {"STTModel": sttmodel_docs(), "ModelDeployment": modeldeployment_docs(), "ABTest": abtest_docs()}


@pytest.fixture(scope="module")
def checker(kube_api: Any) -> Iterator[Checker]:
    from kubernetes.client import CoreV1Api

    core = CoreV1Api(kube_api)
    name = f"spec-invariant-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield Checker(kube_api, name)
    finally:
        core.delete_namespace(name, propagation_policy="Background")


def _regressions() -> list[dict[str, Any]]:
    return yaml.safe_load(REGRESSIONS.read_text()) or []


@pytest.mark.parametrize("case", _regressions(), ids=lambda c: c["id"])
def test_regression_specs_keep_the_invariant(checker: Checker, case: dict[str, Any]) -> None:
    """Specs that once broke the invariant: rejected at admission now, or honoured."""
    before = checker.counts["admitted"]
    checker.check(case["doc"])
    assert (checker.counts["admitted"] > before) == case["admitted"], case["id"]


@pytest.mark.parametrize("kind", list(STRATEGIES))
def test_every_admitted_spec_yields_admitted_children(
    checker: Checker, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    start = Counter(checker.counts)
    docs: list[dict[str, Any]] = []

    @settings(
        max_examples=EXAMPLES[kind],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(doc=STRATEGIES[kind])
    def generate(doc: dict[str, Any]) -> None:
        docs.append(doc)

    # Hypothesis draws the specs; the apiserver round trips (the slow part) then run in
    # parallel. A failure names the spec, which goes to the regression file.
    generate()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(checker.check, docs))
    got = Counter({k: v - start.get(k, 0) for k, v in checker.counts.items()})
    children = ", ".join(
        f"{k.removeprefix('child ')} {v}" for k, v in sorted(got.items()) if k.startswith("child ") and v
    )
    with capsys.disabled():
        print(
            f"\n[spec invariant] {kind}: generated {got['generated']}, admitted {got['admitted']},"
            f" children admitted: {children}"
        )
    # Both sides of the boundary are exercised: plenty admitted, plenty rejected.
    assert got["generated"] >= EXAMPLES[kind] * 0.9
    assert 0.1 * got["generated"] < got["admitted"] < got["generated"]
