"""Which namespaces an operator started with `--namespace` patterns serves: the same answer as
Kopf's own matching (controllers/namespaces.py releases finalizers only there)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kopf._cogs.structs.references import match_namespace  # the behaviour to agree with

from stt_operator.controllers.namespaces import served

NAMES = ["myapp-test", "myapp-pr-123", "myapp-pr-456", "otherapp-pr-123", "stt-loop-a", "default", ""]
PATTERNS = [
    "myapp-*",
    "myapp-*, !*-pr-*, *pr-123",
    "!*-pr-*, *pr-123",
    "!*-pr-*",
    "stt-loop-*",
    "default",
    "*",
    "a?c",
    "",
]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("name", NAMES)
def test_agrees_with_kopf(name: str, pattern: str) -> None:
    assert served(name, [pattern]) == match_namespace(name, pattern)


@given(
    name=st.text(alphabet="ab-", max_size=5),
    globs=st.lists(st.tuples(st.booleans(), st.text(alphabet="ab-*?", max_size=4)), max_size=4),
)
def test_agrees_with_kopf_on_any_pattern(name: str, globs: list[tuple[bool, str]]) -> None:
    pattern = ", ".join(("!" if negated else "") + glob for negated, glob in globs if glob)
    assert served(name, [pattern]) == match_namespace(name, pattern)


def test_no_patterns_serve_every_namespace_and_any_pattern_may_match() -> None:
    assert served("anything", [])
    assert served("b", ["a", "b"]) and not served("c", ["a", "b"])
