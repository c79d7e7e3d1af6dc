"""What one scrape of the operator's /metrics allocates at N endpoints (observability.py:
EndpointSeries, the per-endpoint rollout, promotion, rollback and route-weight series).

No cluster: N endpoints recorded as a settled Immediate rollout leaves them (one backend at
100 %), then the exposition rendered as the metrics server renders it. tracemalloc gives the
peak allocated during the render above what was held before it (what the process must find
room for at each scrape; glibc hands it back only at the next `malloc_trim`, heap.py), and the
render's median time.

    python bench/scale/scrape_memory.py --endpoints 10000 --json bench/scale/results-scrape-memory.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
import tracemalloc
from pathlib import Path

from prometheus_client import REGISTRY, generate_latest

from stt_operator.observability import record_rollout, record_route


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", type=int, default=10000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    for i in range(args.endpoints):
        namespace, name = f"tenant-{i % args.namespaces:03d}", f"asr-{i:05d}"
        record_rollout(namespace, name, in_flight=False, promoted=False, rolled_back=False)
        record_route(namespace, name, {f"{name}-whisper-small-5f3c9a1e": 100})
    size = len(generate_latest(REGISTRY))

    seconds = []
    for _ in range(args.repeat):
        gc.collect()
        started = time.perf_counter()
        generate_latest(REGISTRY)
        seconds.append(time.perf_counter() - started)

    gc.collect()
    tracemalloc.start()
    held, _ = tracemalloc.get_traced_memory()
    output = generate_latest(REGISTRY)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del output

    result = {
        "command": f"python bench/scale/scrape_memory.py --endpoints {args.endpoints}"
        + (f" --json {args.json}" if args.json else ""),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "endpoints": args.endpoints,
        "exposition_mb": round(size / 2**20, 2),
        "render_peak_mb": round((peak - held) / 2**20, 2),
        "render_ms_median": round(statistics.median(seconds) * 1000, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
