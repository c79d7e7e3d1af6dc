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


# --- header-value buckets: stickiness a gateway can enforce ---------------------------------------
# A Gateway API data plane cannot hash a header, but it can match one against a regular
# expression (HTTPRoute `headers[].type: RegularExpression`). So the route does the assignment
# itself: the last two hex digits of the session id name one of 256 buckets, the variants own
# consecutive runs of buckets in proportion to their weights, and one rule per variant matches
# its buckets. Session ids must end in two uniformly distributed hex digits (a UUID, a random or
# hashed hex token); a request without such an id falls through to the weighted split.

STICKY_BUCKETS = 256
_HEX = "0123456789abcdef"


def session_bucket(session_id: str) -> int | None:
    """The session's bucket (its last two hex digits), or None when it does not end in two."""
    tail = session_id[-2:].lower()
    if len(tail) != 2 or any(ch not in _HEX for ch in tail):
        return None
    return int(tail, 16)


def bucket_slices(weights: Mapping[str, int], buckets: int = STICKY_BUCKETS) -> dict[str, tuple[int, int]]:
    """variant -> [first, end) run of buckets, consecutive in `weights` order, sizes proportional
    to the weights (largest remainder; every variant with weight gets at least one bucket)."""
    live = {k: w for k, w in weights.items() if w > 0}
    if not live:
        raise ValueError(f"weights must not all be 0, got {dict(weights)}")
    if len(live) > buckets:
        raise ValueError(f"{len(live)} variants cannot share {buckets} buckets")
    total = float(sum(live.values()))
    exact = {k: buckets * w / total for k, w in live.items()}
    sizes = {k: max(1, int(x)) for k, x in exact.items()}
    by_remainder = sorted(live, key=lambda k: (sizes[k] - exact[k], list(live).index(k)))
    i = 0
    while sum(sizes.values()) < buckets:
        sizes[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    while sum(sizes.values()) > buckets:  # minimum-one rounding overshot: take from the largest
        largest = max(sizes, key=lambda k: sizes[k])
        sizes[largest] -= 1
    out, edge = {}, 0
    for k in live:
        out[k] = (edge, edge + sizes[k])
        edge += sizes[k]
    return out


def sticky_assign(session_id: str, weights: Mapping[str, int]) -> str | None:
    """The variant whose bucket run holds the session (what the route's rules do), or None when
    the id has no bucket (the gateway's weighted split decides, per request)."""
    bucket = session_bucket(session_id)
    if bucket is None:
        return None
    return next(k for k, (lo, hi) in bucket_slices(weights).items() if lo <= bucket < hi)


def _hex_class(lo: int, hi: int) -> str:
    """A regex matching one hex digit in lo..hi (inclusive), either case."""
    digits = [c for c in _HEX[lo : hi + 1] if c.isdigit()]
    letters = [c for c in _HEX[lo : hi + 1] if c.isalpha()]
    if len(digits) + len(letters) == 1 and digits:
        return digits[0]
    parts = []
    for run in (digits, letters, [c.upper() for c in letters]):
        if run:
            parts.append(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return "[" + "".join(parts) + "]"


def bucket_regex(first: int, end: int) -> str:
    """A regular expression (RE2 and POSIX ERE alike) matching a value whose last two hex digits
    lie in [first, end): a partial leading digit, the full ones in between, a partial last one."""
    if not 0 <= first < end <= STICKY_BUCKETS:
        raise ValueError(f"bucket run [{first}, {end}) outside [0, {STICKY_BUCKETS})")
    last = end - 1
    hi_first, hi_last = first // 16, last // 16
    alternatives = []
    if hi_first == hi_last:
        alternatives.append(_hex_class(hi_first, hi_first) + _hex_class(first % 16, last % 16))
    else:
        full_from = hi_first if first % 16 == 0 else hi_first + 1
        full_to = hi_last if last % 16 == 15 else hi_last - 1
        if full_from != hi_first:
            alternatives.append(_hex_class(hi_first, hi_first) + _hex_class(first % 16, 15))
        if full_from <= full_to:
            alternatives.append(_hex_class(full_from, full_to) + _hex_class(0, 15))
        if full_to != hi_last:
            alternatives.append(_hex_class(hi_last, hi_last) + _hex_class(0, last % 16))
    return "^.*(" + "|".join(alternatives) + ")$"
