"""Run the real operator (`stt-operator run`) as a subprocess against a kubeconfig.

Used by integration tests and the demo: the operator under test is the same console script
users run, talking to a real kube-apiserver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from stt_harness.cluster import free_port


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path | str,
        *,
        reconcile_interval_s: float = 1.0,
        namespaces: list[str] | None = None,
        extra_args: list[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.kubeconfig = str(kubeconfig)
        self.reconcile_interval_s = reconcile_interval_s
        self.namespaces = namespaces or []
        self.extra_args = extra_args or []
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="stt-operator-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        args = [
            sys.executable,
            "-m",
            "stt_operator.cli",
            "run",
            "--kubeconfig",
            self.kubeconfig,
            *([f"--namespace={ns}" for ns in self.namespaces] or ["--all-namespaces"]),
            "--liveness-port",
            str(self.liveness_port),
            "--metrics-port",
            str(self.metrics_port),
            "--reconcile-interval",
            str(self.reconcile_interval_s),
            *self.extra_args,
        ]
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2):
                    return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"operator not live after {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def loops(self, namespace: str) -> dict[str, float]:
        """Its reconcile loops in `namespace` by kind (`stt_operator_loops`; none: absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        found: dict[str, float] = {}
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == "stt_operator_loops" and sample.labels.get("namespace") == namespace:
                    found[sample.labels["kind"]] = sample.value
        return found

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def stop_after_the_tests(self) -> None:
        """Stop it, then fail if it had died while the tests ran (with its last log lines)."""
        alive = self.process is not None and self.process.poll() is None
        self.stop()
        assert alive, f"the operator died during the tests:\n{self.log_tail()}"

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
