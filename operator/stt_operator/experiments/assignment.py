"""Deterministic, sticky assignment of sessions to A/B variants (pure; no I/O).

Applications that route requests themselves (or a gateway without session persistence) call
`assign(session_id, weights, salt)` and send the session to the variant it names. The mapping is
specified exactly so any language can reproduce it (docs/abtests.md):

1. `h = SHA-256(UTF-8(salt) || 0x00 || UTF-8(session_id))`;
2. `u = int(h[0:8], big-endian) / 2**64`, a point in [0, 1);
3. the variants, in their spec order, own consecutive slices of [0, 1) as wide as their weight
   share; the session goes to the variant whose slice holds `u`.

The same session always lands on the same variant while the weights stay; moving weight between
two neighbouring variants moves only the sessions in the shifted slice (the smallest share that
can move). The salt (`<namespace>/<abtest name>` by default) keeps the assignments of two tests
independent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

_SCALE = float(2**64)


def default_salt(namespace: str, abtest: str) -> str:
    """The salt the operator documents for an ABTest: `<namespace>/<name>`."""
    return f"{namespace}/{abtest}"


def session_point(session_id: str, salt: str) -> float:
    """The session's point in [0, 1)."""
    digest = hashlib.sha256(salt.encode() + b"\x00" + session_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign(session_id: str, weights: Mapping[str, float], salt: str) -> str:
    """The variant (a key of `weights`, in insertion order) the session belongs to."""
    if not weights:
        raise ValueError("weights: at least one variant is needed")
    bad = {k: w for k, w in weights.items() if not w >= 0}
    if bad:
        raise ValueError(f"weights must be >= 0, got {bad}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError(f"weights must not all be 0, got {dict(weights)}")
    target = session_point(session_id, salt) * total
    edge = 0.0
    last = ""
    for variant, weight in weights.items():
        if weight <= 0:
            continue
        edge += weight
        last = variant
        if target < edge:
            return variant
    return last  # float rounding at the very top of the range
