"""Header-value buckets: the stickiness the HTTPRoute enforces (pure parts).

The regular expressions the route carries are checked with Python's `re` on every bucket in both
cases; they use only what RE2 (Go, Envoy) and POSIX ERE share, so the gateway matches the same."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stt_operator.builders.assignment import (
    STICKY_BUCKETS,
    bucket_regex,
    bucket_slices,
    session_bucket,
    sticky_assign,
)
from stt_operator.builders.routing import Backend, http_route, route_weights

weights_st = st.dictionaries(
    st.sampled_from("abcdefghij"), st.integers(min_value=1, max_value=100), min_size=1, max_size=10
)


@given(weights_st)
def test_slices_cover_every_bucket_once_in_order(weights: dict[str, int]) -> None:
    slices = bucket_slices(weights)
    assert list(slices) == list(weights)
    edge = 0
    for lo, hi in slices.values():
        assert lo == edge and hi > lo  # consecutive, none empty
        edge = hi
    assert edge == STICKY_BUCKETS
    total = sum(weights.values())
    for k, (lo, hi) in slices.items():
        # largest remainder: within one bucket of the exact share (+1 for the minimum of one)
        assert abs((hi - lo) - STICKY_BUCKETS * weights[k] / total) < 2, (k, slices)


def test_zero_weight_gets_no_bucket_and_bad_weights_are_refused() -> None:
    assert bucket_slices({"a": 100, "b": 0}) == {"a": (0, 256)}
    assert bucket_slices({"a": 50, "b": 50}) == {"a": (0, 128), "b": (128, 256)}
    with pytest.raises(ValueError):
        bucket_slices({"a": 0})
    with pytest.raises(ValueError):
        bucket_regex(10, 10)


@given(st.integers(0, STICKY_BUCKETS - 1), st.integers(1, STICKY_BUCKETS))
def test_regex_matches_exactly_its_run(first: int, size: int) -> None:
    end = min(STICKY_BUCKETS, first + size)
    pattern = re.compile(bucket_regex(first, end))
    for bucket in range(STICKY_BUCKETS):
        for tail in (format(bucket, "02x"), format(bucket, "02X")):
            assert bool(pattern.fullmatch(f"sess-{tail}")) == (first <= bucket < end), (tail, pattern)
    assert not pattern.fullmatch("sess-zz") and not pattern.fullmatch("")


def test_session_bucket_and_assignment() -> None:
    assert session_bucket("0f") == 15 and session_bucket("abcFF") == 255
    assert session_bucket("x") is None and session_bucket("session-1g") is None
    assert sticky_assign("no-hex-tail", {"a": 50, "b": 50}) is None
    ids = [str(uuid.UUID(int=i * 2654435761 % 2**128)) for i in range(4096)]
    got = [sticky_assign(s, {"a": 75, "b": 25}) for s in ids]
    assert got == [sticky_assign(s, {"a": 75, "b": 25}) for s in ids]  # stable
    assert abs(got.count("a") / len(got) - 0.75) < 0.05


def test_route_rules_send_each_session_to_one_backend() -> None:
    backends = [Backend("rev-a", 60), Backend("rev-b", 40), Backend("rev-c", 0)]
    route = http_route("asr", "ns", backends, session_header="x-session-id", path="/v2")
    rules = route["spec"]["rules"]
    # The weighted split stays the first rule (what route_weights and the rollouts read).
    assert route_weights(route) == {"rev-a": 60, "rev-b": 40, "rev-c": 0}
    assert len(rules) == 3 and "headers" not in rules[0]["matches"][0]
    sticky = {r["backendRefs"][0]["name"]: r["matches"][0] for r in rules[1:]}
    assert set(sticky) == {"rev-a", "rev-b"}  # no rule for a backend without weight
    for match in sticky.values():
        assert match["path"] == {"type": "PathPrefix", "value": "/v2"}
        [header] = match["headers"]
        assert header["type"] == "RegularExpression" and header["name"] == "x-session-id"
    for bucket in range(STICKY_BUCKETS):
        sid = f"user-{bucket:02x}"
        hits = [svc for svc, m in sticky.items() if re.fullmatch(m["headers"][0]["value"], sid)]
        assert hits == [sticky_assign(sid, {"rev-a": 60, "rev-b": 40})]


def test_no_sticky_rules_without_a_split() -> None:
    one = http_route("asr", "ns", [Backend("rev-a", 100), Backend("rev-b", 0)], session_header="x-s")
    assert len(one["spec"]["rules"]) == 1
    plain = http_route("asr", "ns", [Backend("rev-a", 50), Backend("rev-b", 50)])
    assert len(plain["spec"]["rules"]) == 1
