"""The closed-loop scenarios on the real node, as a benchmark: the same runs as
tests/integration/test_closed_loop.py (the scenarios live there and in
harness/stt_harness/closedloop.py), with their figures collected and tabulated.

    nice -n 10 python bench/e2e/run.py --json bench/e2e/results.json

Each scenario writes its figures through `closedloop.record` (the file `$STT_E2E_RESULTS`
names): time from the `spec.model` change to the decision, utterances both revisions had
transcribed when it was taken (Prometheus, at the decision's timestamp), the WERs the analysis
compared, and the client requests sent through the Gateway while each route was in force, with
the failed ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = "tests/integration/test_closed_loop.py"


def route_label(route: dict[str, int]) -> str:
    return " / ".join(f"{name.split('-', 1)[1].rsplit('-', 1)[0]} {w}%" for name, w in sorted(route.items()))


def table(results: dict[str, dict]) -> str:
    lines = [
        "| scenario | decision after | utterances at decision | WER canary / stable | requests | failed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        seconds = r.get("decision_s", r.get("detection_s", r.get("promotion_s")))
        if "utterances_at_decision" not in r:  # monitoring: judged on request counts, not WER
            continue
        lines.append(
            f"| {name} | {seconds} s | {r['utterances_at_decision']:.0f} |"
            f" {r['wer_canary']:.3f} / {r['wer_stable']:.3f} | {r['requests']} | {r['failed']} |"
        )
    monitored = {n: r for n, r in results.items() if "error_rate_at_verdict" in r}
    if monitored:
        lines += [
            "",
            "| scenario | detection after | looks | error rate / requests at verdict | requests | failed |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in monitored.items():
            lines.append(
                f"| {name} | {r['detection_s']} s | {r['looks']} | {r['error_rate_at_verdict']:.3f} /"
                f" {r['requests_at_verdict']} | {r['requests']} | {r['failed']} |"
            )
    lines += ["", "| scenario | route in force | requests | failed |", "| --- | --- | --- | --- |"]
    for name, r in results.items():
        for row in r["per_route"]:
            lines.append(f"| {name} | {route_label(row['route'])} | {row['requests']} | {row['failed']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "e2e" / "results.json")
    parser.add_argument("-k", default="", help="pytest -k expression to run some scenarios only")
    args = parser.parse_args()
    args.json.unlink(missing_ok=True)
    env = {**os.environ, "STT_E2E_RESULTS": str(args.json)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", TESTS, *(["-k", args.k] if args.k else [])]
    t0 = time.monotonic()
    rc = subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode
    wall = time.monotonic() - t0
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    results_meta = {
        "command": " ".join(cmd[1:]),
        "wall_s": round(wall, 1),
        "exit": rc,
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, load average {os.getloadavg()}",
    }
    if results:
        args.json.write_text(json.dumps({"meta": results_meta, "scenarios": results}, indent=2) + "\n")
    print(json.dumps(results_meta))
    print(table(results))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
