"""Keep the evaluator's large, short-lived buffers in glibc's heap instead of fresh mmap pages.

Every request copies its audio several times (numpy padding, tritonclient's bytes, the protobuf
message, gRPC's slices); a batch of 16 utterances is about 1.3 MB per copy. glibc serves blocks
that large with mmap and unmaps them on free, so each copy page-faults all its memory in again:
about a thousand minor faults per batched request and 10-15 % of the evaluator's CPU
(bench/evaluator/RESULTS.md). Raising M_MMAP_THRESHOLD and M_TRIM_THRESHOLD lets freed blocks
be reused; the resident size can grow by up to the trim threshold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("stt_operator.evaluator")

# From glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 << 20  # blocks above this still get their own mapping
TRIM_THRESHOLD_BYTES = 64 << 20  # free heap kept before returning memory to the kernel


def keep_large_buffers(
    mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES
) -> bool:
    """Apply the thresholds with glibc's `mallopt`; False where that is unavailable (not Linux,
    or a libc such as musl whose `mallopt` does nothing)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )
    log.debug("allocator thresholds", extra={"fields": {"applied": applied}})
    return applied
