"""`{{placeholder}}` templating of custom PromQL (the contract's variables)."""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDERS = frozenset(
    {
        "namespace",
        "service",
        "model",
        "variant",
        "language",
        "start",
        "interval",
        "window",
        "endpoint",
        "baseline",
    }
)
_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def escape_label_value(value: str) -> str:
    """Safe inside a double-quoted PromQL label matcher."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def placeholders(template: str) -> set[str]:
    return set(_RE.findall(template))


def render(template: str, values: Mapping[str, str], field_name: str = "query") -> str:
    """Replace every `{{name}}`; an unknown or unset placeholder is an error naming it."""
    unknown = placeholders(template) - PLACEHOLDERS
    if unknown:
        raise ValueError(
            f"{field_name}: unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(PLACEHOLDERS)}"
        )

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values or values[name] is None:
            raise ValueError(f"{field_name}: placeholder {{{{{name}}}}} has no value in this context")
        return escape_label_value(str(values[name]))

    return _RE.sub(sub, template)
