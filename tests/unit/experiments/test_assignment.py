"""Sticky session -> variant assignment: distribution, stability, minimal movement."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from stt_operator.builders.assignment import assign, default_salt, session_point

SESSIONS = [f"session-{i}" for i in range(20_000)]
SALT = default_salt("prod", "ab-1")


def shares(weights: dict[str, float], salt: str = SALT) -> dict[str, float]:
    counts = Counter(assign(s, weights, salt) for s in SESSIONS)
    return {k: counts[k] / len(SESSIONS) for k in weights}


@pytest.mark.parametrize(
    "weights", [{"a": 50, "b": 50}, {"a": 90, "b": 10}, {"a": 20, "b": 30, "c": 50}, {"a": 1, "b": 99}]
)
def test_distribution_follows_the_weights(weights: dict[str, float]) -> None:
    got = shares(weights)
    total = sum(weights.values())
    for k, w in weights.items():
        p = w / total
        # 4 binomial standard errors: fails by chance about once in 16 000 runs per variant.
        assert abs(got[k] - p) <= 4 * (p * (1 - p) / len(SESSIONS)) ** 0.5 + 1e-9, (k, got)


def test_assignment_is_stable_and_documented() -> None:
    weights = {"a": 50, "b": 50}
    assert [assign(s, weights, SALT) for s in SESSIONS[:200]] == [
        assign(s, weights, SALT) for s in SESSIONS[:200]
    ]
    # The documented recipe, written out independently.
    digest = hashlib.sha256(b"prod/ab-1\x00session-7").digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    assert session_point("session-7", SALT) == u
    assert assign("session-7", weights, SALT) == ("a" if u < 0.5 else "b")


def test_salt_makes_tests_independent() -> None:
    weights = {"a": 50, "b": 50}
    other = default_salt("prod", "ab-2")
    same = sum(assign(s, weights, SALT) == assign(s, weights, other) for s in SESSIONS)
    assert abs(same / len(SESSIONS) - 0.5) < 0.02


@pytest.mark.parametrize(
    ("before", "after", "moved"),
    [
        ({"a": 50, "b": 50}, {"a": 60, "b": 40}, 0.10),
        ({"a": 20, "b": 30, "c": 50}, {"a": 20, "b": 45, "c": 35}, 0.15),
        ({"a": 90, "b": 10}, {"a": 50, "b": 50}, 0.40),
    ],
)
def test_moving_weight_between_neighbours_moves_only_that_share(
    before: dict[str, float], after: dict[str, float], moved: float
) -> None:
    changed = [(assign(s, before, SALT), assign(s, after, SALT)) for s in SESSIONS]
    moves = [(x, y) for x, y in changed if x != y]
    # Only sessions of the variant that lost weight move, and only to the one that gained it.
    lost = next(k for k in before if after[k] < before[k])
    gained = next(k for k in before if after[k] > before[k])
    assert set(moves) <= {(lost, gained)}
    assert abs(len(moves) / len(SESSIONS) - moved) < 0.015


def test_zero_weight_never_assigned_and_bad_weights_rejected() -> None:
    assert "b" not in {assign(s, {"a": 50, "b": 0, "c": 50}, SALT) for s in SESSIONS[:2000]}
    with pytest.raises(ValueError, match="at least one variant"):
        assign("s", {}, SALT)
    with pytest.raises(ValueError, match="must be >= 0"):
        assign("s", {"a": -1, "b": 2}, SALT)
    with pytest.raises(ValueError, match="not all be 0"):
        assign("s", {"a": 0}, SALT)
