"""The process heap: the cyclic collector around reads that decode a large, short-lived
response, and what glibc's allocator keeps after a burst.

A field-selected pod list of a big node decodes into hundreds of thousands of dicts and lists
that live only until their requests are summed. Decoded with the collector on, they outlive
young collections (the list still holds them), are promoted, and push the oldest generation
over its trigger: each such list then costs a full collection, which scans every object the
operator caches (3.6 s at 10,000 endpoints, bench/scale/RESULTS.md). Decoded with the
collector paused, they are freed by reference counting before it runs again, and never promoted.

Freed is not returned: glibc's malloc keeps what a burst freed inside its heaps, and it gives
each thread that allocates a heap ("arena") of its own, up to eight per core, so 32 reconcile
threads that each decoded a response hold their peaks apart. `cap_malloc_arenas` bounds the
arenas before the threads start, and `release_free_heap` hands whole free pages back to the
system (malloc_trim), which the operator does once a minute. Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pausers = 0  # threads inside `collector_paused` now
_was_enabled = False  # the collector's state when the first of them entered

_M_ARENA_MAX = -8  # mallopt(3) parameter


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS)
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def cap_malloc_arenas(arenas: int) -> bool:
    """At most ``arenas`` malloc heaps from now on (call before threads start). True if set."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, int(arenas)))


def release_free_heap() -> bool:
    """Give the free pages of every malloc heap back to the system. True if any were."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


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
