"""Time per verdict: the analysis engine against a real Prometheus holding 2 h of history.

Backfills 2 h of evaluator and Triton series at a 15 s scrape interval (promtool
`tsdb create-blocks-from openmetrics`) for the analysed endpoint plus other endpoints that the
selectors must skip, starts Debian's Prometheus on those blocks, and times
`evaluate_metrics` for the full preset set (wer, cer, latency-p95, latency-p99, error-rate,
confidence, rtf) over the whole 2 h window.

    python bench/stats/verdict_time.py [--hours 2] [--endpoints 10] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from stt_harness.prometheus import PrometheusServer
from stt_operator import evalmetrics as em
from stt_operator.analysis.engine import evaluate_metrics
from stt_operator.analysis.model import AnalysisContext, Arm
from stt_operator.analysis.prom import PrometheusClient
from stt_operator.api.common import MetricSpec

NS = "bench"
SCRAPE = 15.0
PRESETS = [
    MetricSpec.model_validate(body)
    for body in (
        {"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.05},
        {"name": "cer", "preset": "cer", "nonInferiorityMargin": 0.01},
        {"name": "latency-p95", "preset": "latency-p95", "maxRelativeIncrease": 0.2},
        {"name": "latency-p99", "preset": "latency-p99", "thresholdRange": {"max": 3000}},
        {"name": "error-rate", "preset": "error-rate", "maxRelativeIncrease": 0.5},
        {"name": "confidence", "preset": "confidence", "thresholdRange": {"min": 0.5}},
        {"name": "rtf", "preset": "rtf", "thresholdRange": {"max": 1.0}},
    )
]


def _fmt_labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def backfill(path: Path, hours: float, endpoints: int, seed: int = 0) -> tuple[float, float, int]:
    """Write an OpenMetrics file of `hours` of history; return (start, end, series)."""
    rng = np.random.default_rng(seed)
    reg = CollectorRegistry()
    m = em.build_eval_metrics(reg)
    names = [f"ep{i}" for i in range(endpoints)]
    for ep in names:
        for v in ("stable", "canary"):
            m.init_variant({"endpoint": ep, "variant": v, "model": f"m-{v}", "language": "en-US"})
        m.init_pair({"endpoint": ep, "variant": "canary", "baseline": "stable", "language": "en-US"})
    triton = {f"{ep}-{v}": [0.0, 0.0] for ep in names for v in ("stable", "canary")}
    steps = int(hours * 3600 / SCRAPE)
    end = float(int(time.time()) - 60)
    start = end - steps * SCRAPE
    series: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(
        list
    )  # (family, type, sample)
    for step in range(steps + 1):
        ts = start + step * SCRAPE
        if step > 0:
            for ep in names:
                for _ in range(3):  # three replayed utterances per scrape interval and endpoint
                    words = int(rng.integers(4, 25))
                    p = rng.beta(1, 8)
                    errs = {
                        "stable": int(rng.binomial(words, p)),
                        "canary": int(rng.binomial(words, p * 1.05)),
                    }
                    for v, e in errs.items():
                        labels = {"endpoint": ep, "variant": v, "model": f"m-{v}", "language": "en-US"}
                        m.record_request(labels)
                        m.record_utterance(
                            labels,
                            word_errors=e,
                            ref_words=words,
                            char_errors=2 * e,
                            ref_chars=5 * words,
                            latency_seconds=float(rng.gamma(4, 0.06)),
                            audio_seconds=words * 0.4,
                            confidence=float(rng.uniform(0.6, 0.95)),
                        )
                    pl = {"endpoint": ep, "variant": "canary", "baseline": "stable", "language": "en-US"}
                    for unit, k in (("word", 1), ("char", 2)):
                        m.record_pair(
                            pl,
                            unit=unit,
                            candidate_errors=k * errs["canary"],
                            baseline_errors=k * errs["stable"],
                            ref_len=(1 if k == 1 else 5) * words,
                        )
                for v in ("stable", "canary"):
                    triton[f"{ep}-{v}"][0] += float(rng.poisson(150))
                    triton[f"{ep}-{v}"][1] += float(rng.poisson(0.3 if v == "stable" else 0.4))
        for fam in reg.collect():
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                key = (
                    fam.name,
                    fam.type,
                    s.name
                    + _fmt_labels(
                        {**s.labels, "namespace": NS, "job": "evaluator", "instance": "evaluator:8000"}
                    ),
                )
                series[key].append((ts, s.value))
        for svc, (ok, bad) in triton.items():
            lbl = {
                "namespace": NS,
                "service": svc,
                "model": "asr",
                "version": "1",
                "job": "triton",
                "instance": f"{svc}:8002",
            }
            series[
                ("nv_inference_request_success", "unknown", "nv_inference_request_success" + _fmt_labels(lbl))
            ].append((ts, ok))
            series[
                (
                    "nv_inference_request_failure",
                    "unknown",
                    "nv_inference_request_failure" + _fmt_labels({**lbl, "reason": "BACKEND"}),
                )
            ].append((ts, bad))
    by_family: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (fam, typ, sample), points in series.items():
        by_family[(fam, typ)].extend(f"{sample} {v:.17g} {t:.3f}" for t, v in points)
    with path.open("w") as f:
        for (fam, typ), lines in by_family.items():
            f.write(f"# TYPE {fam} {typ}\n")
            f.write("\n".join(lines) + "\n")
        f.write("# EOF\n")
    return start, end, len(series)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        start, end, nseries = backfill(work / "history.om", args.hours, args.endpoints)
        subprocess.run(
            [
                "promtool",
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                "--quiet",
                str(work / "history.om"),
                str(work / "prom" / "tsdb"),
            ],
            check=True,
        )
        print(
            f"backfilled {nseries} series x {int((end - start) / SCRAPE) + 1} samples "
            f"({args.hours:g} h at {SCRAPE:g}s) in {time.perf_counter() - t0:.1f}s"
        )
        server = PrometheusServer(work / "prom", retention="30d")
        server.start()
        try:
            client = PrometheusClient(server.url, timeout_s=10)
            ctx = AnalysisContext(
                namespace=NS,
                endpoint="ep0",
                candidate=Arm("canary", "ep0-canary"),
                baseline=Arm("stable", "ep0-stable"),
                language="en-US",
                start=start,
                now=end,
            )
            first = evaluate_metrics(client, PRESETS, ctx)  # warm-up (block loading, caches)
            times = []
            for _ in range(args.repeats):
                r = evaluate_metrics(client, PRESETS, ctx)
                times.append(r.elapsed_s)
            queries = sum(len(mm.queries) for mm in r.metrics)
            print(
                f"first verdict {first.elapsed_s * 1000:.0f} ms; then over {args.repeats} verdicts: "
                f"median {statistics.median(times) * 1000:.0f} ms, "
                f"p95 {sorted(times)[int(0.95 * (len(times) - 1))] * 1000:.0f} ms, "
                f"max {max(times) * 1000:.0f} ms; {len(PRESETS)} metrics, {queries} queries per verdict"
            )
            print(f"outcome {r.outcome}")
            for mm in r.metrics:
                print(f"  {mm.message}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
