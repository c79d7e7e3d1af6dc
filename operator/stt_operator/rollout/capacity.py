"""Capacity pre-flight: can a new revision's pods be scheduled at all?

Pure arithmetic over what the controller observed: the pod template the revision would get
(after `builders/placement.py`), the cluster's Nodes and the pods already bound to the nodes
that template may use. A pod fits a node when the node matches its nodeSelector and required
node affinity, tolerates the node's NoSchedule/NoExecute taints, is schedulable, and has
`allocatable - requested` left for every resource the pod requests (the scheduler's
NodeResourcesFit rule: a pod requests the sum of its containers, or its largest init
container when that is more, plus its overhead; extended resources such as `nvidia.com/gpu`
count from limits when no request is given).

`fit()` places the replicas one by one on the node with most room (a first-fit is enough to
tell "cannot fit" from "fits"; the scheduler may spread them differently) and names what is
short when they do not all fit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

GPU = "nvidia.com/gpu"
# The condition reason for each short resource (others: InsufficientResources).
REASONS = {GPU: "InsufficientGPU", "cpu": "InsufficientCPU", "memory": "InsufficientMemory"}
TERMINAL_PHASES = ("Succeeded", "Failed")

Resources = dict[str, Decimal]

# Kubernetes resource.Quantity: a decimal number, then a binary (Ki..Ei) or decimal (n..E)
# suffix or an exponent. Parsed here rather than with the Kubernetes client's helper because
# planners import no Kubernetes client (pyproject.toml, import-linter).
_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(value: Any) -> Decimal:
    """`500m` -> 0.5, `16Gi` -> 17179869184, `1e3` -> 1000 (as resource.ParseQuantity reads them)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _BINARY:
        return number * Decimal(1024) ** _BINARY[suffix]
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    if suffix:
        return number.scaleb(int(suffix[1:]))
    return number


def _quantities(values: Mapping[str, Any] | None) -> Resources:
    return {k: Decimal(parse_quantity(v)) for k, v in (values or {}).items()}


def _add(a: Resources, b: Mapping[str, Decimal]) -> Resources:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, Decimal(0)) + v
    return out


def container_requests(container: Mapping[str, Any]) -> Resources:
    """Requests of one container; a limit stands in for a missing request (the apiserver
    defaults it so, and extended resources are only ever given as limits)."""
    resources = container.get("resources") or {}
    return {**_quantities(resources.get("limits")), **_quantities(resources.get("requests"))}


def pod_requests(pod_spec: Mapping[str, Any]) -> Resources:
    """What a pod takes from a node: the containers' sum, or an init container's own request
    when that is larger, plus the pod overhead."""
    total: Resources = {}
    for container in pod_spec.get("containers") or []:
        total = _add(total, container_requests(container))
    for container in pod_spec.get("initContainers") or []:
        for k, v in container_requests(container).items():
            total[k] = max(total.get(k, Decimal(0)), v)
    total = _add(total, _quantities(pod_spec.get("overhead")))
    return {k: v for k, v in total.items() if v > 0}


def _tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if not t.get("key"):
            if t.get("operator") == "Exists":
                return True
            continue
        if t.get("key") != taint.get("key"):
            continue
        if t.get("operator") == "Exists" or (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _expression_matches(labels: Mapping[str, str], expr: Mapping[str, Any]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def node_matches(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """The pod may be placed on the node (labels, required affinity, taints, cordon)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    node_spec = node.get("spec") or {}
    if node_spec.get("unschedulable"):
        return False
    tolerations = pod_spec.get("tolerations") or []
    for taint in node_spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, taint):
            return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(
        all(_expression_matches(labels, e) for e in term.get("matchExpressions") or []) for term in terms
    )


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def requested_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, Resources]:
    """What the bound, unfinished pods request, summed per node: all `fit` needs of them."""
    requested: dict[str, Resources] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
            continue
        requested[node] = _add(requested.get(node, {}), pod_requests(pod.get("spec") or {}))
    return requested


def free_by_node(
    nodes: Iterable[Mapping[str, Any]], requested: Mapping[str, Resources]
) -> dict[str, Resources]:
    """Allocatable minus what the pods already there request (`requested_by_node`), per node."""
    free = {_name(n): _quantities((n.get("status") or {}).get("allocatable")) for n in nodes}
    for node, taken in requested.items():
        if node in free:
            for k, v in taken.items():
                free[node][k] = free[node].get(k, Decimal(0)) - v
    return free


@dataclass(frozen=True)
class CapacityVerdict:
    fits: bool
    reason: str  # CapacityAvailable | InsufficientGPU | InsufficientCPU | ... | NoMatchingNode
    message: str
    short: dict[str, str] = field(default_factory=dict)  # resource -> "need N per pod, most free M"


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f") if value == value.to_integral() else str(value)


def fit(
    pod_spec: Mapping[str, Any],
    replicas: int,
    nodes: Sequence[Mapping[str, Any]],
    requested: Mapping[str, Resources],
) -> CapacityVerdict:
    """Whether `replicas` pods of `pod_spec` fit on the nodes they may use, given what the pods
    already there request (`requested_by_node`). Pods of other revisions count as they are
    (the stable keeps its pods while a canary or preview comes up)."""
    need = pod_requests(pod_spec)
    matching = [n for n in nodes if node_matches(pod_spec, n)]
    if replicas <= 0:
        return CapacityVerdict(True, "CapacityAvailable", "no pods requested")
    if not matching:
        return CapacityVerdict(
            False,
            "NoMatchingNode",
            f"no schedulable node matches the pod's nodeSelector, affinity and tolerations"
            f" (of {len(nodes)} node(s))",
        )
    free = free_by_node(matching, requested)
    placed = 0
    for _ in range(replicas):
        candidates = [
            n for n, room in free.items() if all(room.get(k, Decimal(0)) >= v for k, v in need.items())
        ]
        if not candidates:
            break
        # The node with most of the scarcest resource left (GPU first), so the count is not
        # pessimistic about how pods spread.
        best = max(candidates, key=lambda n: (free[n].get(GPU, Decimal(0)), free[n].get("cpu", Decimal(0))))
        for k, v in need.items():
            free[best][k] = free[best].get(k, Decimal(0)) - v
        placed += 1
    if placed == replicas:
        return CapacityVerdict(
            True, "CapacityAvailable", f"{replicas} pod(s) fit on {len(matching)} matching node(s)"
        )
    short: dict[str, str] = {}
    for k, v in need.items():
        most = max((room.get(k, Decimal(0)) for room in free.values()), default=Decimal(0))
        if most < v:
            short[k] = (
                f"needs {_fmt(v)} per pod, at most {_fmt(max(most, Decimal(0)))} free on a matching node"
            )
    if not short:  # each pod fits somewhere, all of them do not: name what ran out first
        left = replicas - placed
        for k, v in need.items():
            total = sum((max(room.get(k, Decimal(0)), Decimal(0)) for room in free.values()), Decimal(0))
            if total < v * left:
                short[k] = f"needs {_fmt(v * left)} more for {left} pod(s), {_fmt(total)} free in all"
    order = [GPU, "cpu", "memory"]
    first = sorted(short, key=lambda k: order.index(k) if k in order else len(order))
    reason = REASONS.get(first[0], "InsufficientResources") if first else "InsufficientResources"
    detail = "; ".join(f"{k} {short[k]}" for k in first)
    message = f"only {placed} of {replicas} pod(s) fit on {len(matching)} matching node(s)" + (
        f": {detail}" if detail else ""
    )
    return CapacityVerdict(False, reason, message, short)
