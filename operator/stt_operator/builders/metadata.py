"""Labels, names and owner references shared by every object the operator creates."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from stt_operator import API_GROUP

MANAGED_BY = "stt-operator"
FIELD_MANAGER = "stt-operator"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_MODEL = f"{API_GROUP}/model"
LABEL_REVISION = f"{API_GROUP}/revision"
LABEL_DEPLOYMENT = f"{API_GROUP}/model-deployment"
LABEL_ROLE = f"{API_GROUP}/role"

_DNS_LABEL_MAX = 63


def common_labels(instance: str, component: str, name: str = "triton") -> dict[str, str]:
    """The `app.kubernetes.io/*` labels every owned object carries."""
    return {
        LABEL_NAME: name,
        LABEL_INSTANCE: instance,
        LABEL_COMPONENT: component,
        LABEL_PART_OF: "stt-operator",
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def owner_reference(owner: Mapping[str, Any], controller: bool = True) -> dict[str, Any]:
    """An ownerReference to a custom resource body (a Kopf body or a plain dict)."""
    metadata = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def short_hash(*parts: str, length: int = 8) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return digest[:length]


def dns_name(*parts: str, max_length: int = _DNS_LABEL_MAX) -> str:
    """Join parts into a valid DNS-1035 label that stays unique.

    A name that is already a DNS-1035 label and short enough is used as it is. Any other name
    (a `.`, an upper-case letter, a leading digit, or too long) gets a short hash of the
    original appended, so `a.b` and `a-b` (or two long names with one head) never map to the
    same child object."""
    raw = "-".join(p for p in parts if p)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"m-{name}".rstrip("-")
    if name == raw and len(name) <= max_length:
        return name
    suffix = short_hash(raw, length=8)
    return f"{name[: max_length - 9].rstrip('-')}-{suffix}"


def object_metadata(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    owner: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`metadata` of an owned object: name, namespace, labels, and the owner when there is one."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    return metadata
