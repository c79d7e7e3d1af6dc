"""The interpreter's cyclic collector around reads that decode a large, short-lived response.

A field-selected pod list of a big node decodes into hundreds of thousands of dicts and lists
that live only until their requests are summed. Decoded with the collector on, they outlive
young collections (the list still holds them), are promoted, and push the oldest generation
over its trigger: each such list then costs a full collection, which scans every object the
operator caches (3.6 s at 10,000 endpoints, bench/scale/RESULTS.md). Decoded with the
collector paused, they are freed by reference counting before it runs again, and never promoted.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pausers = 0  # threads inside `collector_paused` now
_was_enabled = False  # the collector's state when the first of them entered


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection while the block runs (in any thread: the collector is per process).
    Nested and concurrent blocks share one pause; the collector is enabled again when the last
    one leaves, and only if it was enabled before the first entered. Keep the block short and
    let go of what it decoded before leaving: only reference counting frees memory meanwhile."""
    global _pausers, _was_enabled
    with _lock:
        if _pausers == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pausers += 1
    try:
        yield
    finally:
        with _lock:
            _pausers -= 1
            if _pausers == 0 and _was_enabled:
                gc.enable()
