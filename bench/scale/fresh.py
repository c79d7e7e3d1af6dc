"""Shared by the no-cluster memory benches: run a program in a fresh interpreter with the
operator's package importable, and describe the machine for the results file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_fresh(program: str, *args: str, timeout_s: float) -> dict[str, Any]:
    """Run `python -c program args...`; returns the JSON object it printed last."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{os.environ.get('PYTHONPATH', '')}"}
    run = subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
        env=env,
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "system": platform.platform()}
