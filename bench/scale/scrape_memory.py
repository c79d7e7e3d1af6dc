"""What one scrape of the operator's /metrics allocates at N endpoints (observability.py:
EndpointSeries, the per-endpoint rollout, promotion, rollback and route-weight series).

No cluster: N endpoints recorded as a settled Immediate rollout leaves them (one backend at
100 %), then the exposition rendered four ways in the same run: whole, by prometheus_client's
renderers (what its `start_http_server` writes, and what the operator served before
`serve_metrics`), in plain text and as Prometheus asks (OpenMetrics, gzip); and streamed,
chunk by chunk as the operator's metrics server writes them (observability.py: `metrics_app`,
a family or a slice of 1,000 series at a time), the same two ways. tracemalloc gives the peak
allocated during a render above what was held before it (what the process must find room for
at each scrape; glibc hands it back only at the next `malloc_trim`, heap.py), and the render's
median time.

    python bench/scale/scrape_memory.py --endpoints 10000 --json bench/scale/results-scrape-memory.json
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from stt_operator.observability import metrics_app, record_rollout, record_route

PROMETHEUS_HEADERS = {
    "HTTP_ACCEPT": "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
    "HTTP_ACCEPT_ENCODING": "gzip",
}


def streamed(headers: dict[str, str]) -> Callable[[], int]:
    """A scrape through the operator's app: each chunk dropped once counted, as a socket would."""
    app = metrics_app(REGISTRY)

    def scrape() -> int:
        return sum(len(chunk) for chunk in app({"REQUEST_METHOD": "GET", **headers}, lambda *_: None))

    return scrape


def measure(render: Callable[[], object], repeat: int) -> dict[str, float]:
    seconds = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        render()
        seconds.append(time.perf_counter() - started)
    gc.collect()
    tracemalloc.start()
    held, _ = tracemalloc.get_traced_memory()
    output = render()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del output
    return {
        "render_peak_mb": round((peak - held) / 2**20, 2),
        "render_ms_median": round(statistics.median(seconds) * 1000, 1),
    }


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
    renders = {
        "whole (generate_latest)": lambda: generate_latest(REGISTRY),
        "whole, OpenMetrics + gzip": lambda: gzip.compress(generate_openmetrics(REGISTRY)),
        "streamed, text": streamed({}),
        "streamed, OpenMetrics + gzip": streamed(PROMETHEUS_HEADERS),
    }
    sizes = {"streamed, text": streamed({})(), "streamed, OpenMetrics + gzip": streamed(PROMETHEUS_HEADERS)()}

    result = {
        "command": f"python bench/scale/scrape_memory.py --endpoints {args.endpoints}"
        + (f" --json {args.json}" if args.json else ""),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "endpoints": args.endpoints,
        "exposition_mb": round(size / 2**20, 2),
        "body_mb": {name: round(length / 2**20, 2) for name, length in sizes.items()},
        "renders": {name: measure(render, args.repeat) for name, render in renders.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
