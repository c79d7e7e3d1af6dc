"""The operator's garbage-collector settings and the timer that reports collections.

Each case runs in a fresh interpreter: freezing the heap and changing the thresholds are
process-wide and would otherwise leak into the rest of the test session."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def _run(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_settle_heap_freezes_what_exists_and_raises_the_young_threshold() -> None:
    result = _run(
        """
        import gc, json
        from stt_operator import runner
        from stt_operator.observability import GC_OBJECTS_FROZEN
        tracked_before = len(gc.get_objects())
        runner.settle_heap()
        print(json.dumps({
            "threshold": list(gc.get_threshold()),
            "frozen": gc.get_freeze_count(),
            "gauge": GC_OBJECTS_FROZEN._value.get(),
            "tracked_after": len(gc.get_objects()),
            "tracked_before": tracked_before,
            "young": runner.GC_YOUNG_THRESHOLD,
            "older": list(runner.GC_OLDER_THRESHOLDS),
        }))
        """
    )
    assert result["threshold"] == [result["young"], *result["older"]]
    assert result["young"] > 700  # CPython's default, which the operator's bursts outrun
    # Everything the imports made is out of the collector's reach, and the gauge says how much.
    assert result["frozen"] > 10_000
    assert result["gauge"] == result["frozen"]
    assert result["tracked_after"] < result["tracked_before"] // 10


def test_the_timer_counts_each_collection_by_generation_and_installs_once() -> None:
    result = _run(
        """
        import gc, json
        from stt_operator.observability import GC_SECONDS, GcTimer, track_gc
        track_gc(); track_gc()
        junk = []
        for _ in range(2000):
            cycle = []
            cycle.append(cycle)
            junk.append(cycle)
        del junk
        gc.collect(2)
        gc.collect(0)
        print(json.dumps({
            "timers": sum(isinstance(c, GcTimer) for c in gc.callbacks),
            "gen2": GC_SECONDS.labels("2")._value.get(),
            "gen0": GC_SECONDS.labels("0")._value.get(),
        }))
        """
    )
    assert result["timers"] == 1
    assert result["gen2"] > 0
    assert result["gen0"] > 0
