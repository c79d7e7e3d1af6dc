"""The corpus of rejected specs (`tests/data/rejected_specs.yaml`): each case is a sample
manifest with some fields set, and the fragments the rejection message must contain."""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR = ROOT / "manifests" / "samples"
CORPUS = ROOT / "tests" / "data" / "rejected_specs.yaml"
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class RejectedCase:
    id: str
    doc: dict[str, Any]
    expect: tuple[str, ...]


def sample(stem: str) -> dict[str, Any]:
    """A fresh copy of manifests/samples/<stem>.yaml (parsed once)."""
    return copy.deepcopy(_sample(stem))


@functools.cache
def _sample(stem: str) -> dict[str, Any]:
    return yaml.safe_load((SAMPLES_DIR / f"{stem}.yaml").read_text())


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b[2].c` in doc (creating maps on the way); value None removes the key."""
    parts: list[str | int] = [
        m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _PART.finditer(path)
    ]
    node: Any = doc
    for part in parts[:-1]:
        if isinstance(part, int):
            node = node[part]
        else:
            if not isinstance(node.get(part), dict | list):
                node[part] = {}
            node = node[part]
    last = parts[-1]
    if value is None:
        if isinstance(last, int):
            del node[last]
        else:
            node.pop(last, None)
    elif isinstance(last, int) and last == len(node):
        node.append(value)
    else:
        node[last] = value


def rejected_cases(path: Path = CORPUS) -> list[RejectedCase]:
    out = []
    for case in yaml.safe_load(path.read_text()):
        doc = copy.deepcopy(sample(case["base"]))
        for key, value in (case.get("set") or {}).items():
            set_path(doc, key, value)
        out.append(RejectedCase(case["id"], doc, tuple(case["expect"])))
    return out
