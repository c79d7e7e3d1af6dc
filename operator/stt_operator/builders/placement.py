"""Where the pods the operator creates may run: node selector and tolerations from settings.

Clusters put Jobs and serving pods on dedicated nodes (a tainted pool, a GPU pool, a node
with the right images). `place(obj, placement)` adds the operator-wide placement to the pod
template of a Deployment or Job (pure: returns a new dict); other objects pass unchanged.
Selectors merge (the object's own keys win); tolerations are appended once each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

POD_TEMPLATE_KINDS = ("Deployment", "Job")


class Placement(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)

    def empty(self) -> bool:
        return not self.node_selector and not self.tolerations


@dataclass(frozen=True)
class Images:
    """Where the operator's pods come from and where they run (`OperatorSettings.images()`)."""

    triton: str
    fetcher: str  # the serving pods' model-fetching init container
    jobs: str  # validation / quantization Jobs and evaluators
    serving_placement: Placement
    jobs_placement: Placement


def place(obj: Mapping[str, Any], placement: Placement) -> dict[str, Any]:
    """`obj` with the placement's node selector and tolerations added to its pod template.
    Only the dicts on the way to the pod spec are copied (the rest is shared with `obj`, which
    is never changed): a Deployment is built on every reconcile, and a deep copy of it was a
    measurable part of the operator's CPU in bench/scale."""
    out = dict(obj)
    if placement.empty() or out.get("kind") not in POD_TEMPLATE_KINDS:
        return out
    spec = out["spec"] = dict(out["spec"])
    template = spec["template"] = dict(spec["template"])
    pod = template["spec"] = dict(template["spec"])
    pod["nodeSelector"] = {**placement.node_selector, **(pod.get("nodeSelector") or {})}
    tolerations = [dict(t) for t in pod.get("tolerations") or []]
    for toleration in placement.tolerations:
        if toleration not in tolerations:
            tolerations.append(dict(toleration))
    if tolerations:
        pod["tolerations"] = tolerations
    if not pod["nodeSelector"]:
        del pod["nodeSelector"]
    return out
