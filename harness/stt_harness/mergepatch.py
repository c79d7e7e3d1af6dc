"""What the apiserver does with a JSON merge patch (RFC 7386), for tests that keep an object's
status between planner runs the way the apiserver would."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def apply_merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Apply `patch` to `target` in place: None removes a key, an object merges into the object
    it names (or into an empty one), anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            apply_merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
