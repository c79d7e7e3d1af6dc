"""What the operator process holds before its first object: RSS added by each import, in the
order the operator's own import brings them in, measured in one fresh interpreter.

    python bench/scale/import_memory.py --json bench/scale/results-import-memory.json

Each module's figure is what importing it added on top of those before it (its dependencies
already imported count under them), read from /proc/self/status (VmRSS)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fresh import machine, run_fresh

# Heaviest shared dependencies first, then the operator's layers up to the Kopf handlers.
MODULES = (
    "numpy",
    "urllib3",
    "yaml",
    "pydantic",
    "kubernetes.client",
    "kubernetes.dynamic",
    "kopf",
    "prometheus_client",
    "stt_operator.triton.config",  # Triton's model-config schema, without the gRPC client
    "stt_operator.api.modeldeployment",
    "stt_operator.controllers.modeldeployment",
    "stt_operator.controllers.sttmodel",
    "stt_operator.controllers.abtest",
)

_PROGRAM = r"""
import importlib, json, sys
def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
start = rss_mb()
added = {}
for name in sys.argv[1:]:
    before = rss_mb()
    importlib.import_module(name)
    added[name] = round(rss_mb() - before, 1)
print(json.dumps({"interpreter_mb": round(start, 1), "added_mb": added, "total_mb": round(rss_mb(), 1)}))
"""


def measure() -> dict[str, Any]:
    return run_fresh(_PROGRAM, *MODULES, timeout_s=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure()
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine(),
        **result,
    }
    print(f"{'interpreter':40s} {result['interpreter_mb']:7.1f} MB")
    for name, mb in result["added_mb"].items():
        print(f"{name:40s} +{mb:6.1f} MB")
    print(f"{'total':40s} {result['total_mb']:7.1f} MB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
