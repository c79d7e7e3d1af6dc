"""A real Prometheus (Debian's `/usr/bin/prometheus`) for tests, benchmarks and the local demo.

`PrometheusServer` starts the binary on a free loopback port with a temporary config and TSDB,
a short scrape interval and `--web.enable-lifecycle`, so targets can be added at run time
(rewrite the config, POST /-/reload). `start_exporter` serves a prometheus_client registry over
HTTP on loopback: a real exporter the test drives.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client import CollectorRegistry, start_http_server

DEFAULT_BINARY = "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ScrapeTarget:
    job: str
    address: str  # host:port
    labels: dict[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


class PrometheusServer:
    """One Prometheus process with a mutable set of static scrape targets."""

    def __init__(
        self,
        workdir: Path,
        *,
        binary: str | None = None,
        scrape_interval: str = "1s",
        lookback_delta: str = "5m",
        retention: str = "2h",
        port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.binary = binary or os.environ.get("STT_PROMETHEUS_BINARY", DEFAULT_BINARY)
        self.scrape_interval = scrape_interval
        self.lookback_delta = lookback_delta
        self.retention = retention  # longer when a test backfills older blocks (promtool)
        self.port = port or free_port()
        self.targets: list[ScrapeTarget] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    def _render_config(self) -> dict[str, Any]:
        jobs: dict[str, list[ScrapeTarget]] = {}
        for t in self.targets:
            jobs.setdefault(f"{t.job}\x00{t.metrics_path}", []).append(t)
        scrape_configs = []
        for key, targets in jobs.items():
            job, path = key.split("\x00")
            scrape_configs.append(
                {
                    "job_name": job,
                    "metrics_path": path,
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "static_configs": [{"targets": [t.address], "labels": t.labels} for t in targets],
                }
            )
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": scrape_configs,
        }

    def _write_config(self) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self._render_config(), sort_keys=False))
        tmp.replace(self.config_path)

    def start(self, timeout: float = 30.0) -> None:
        if not Path(self.binary).exists() and shutil.which(self.binary) is None:
            raise FileNotFoundError(
                f"prometheus binary {self.binary!r} not found; install Debian's `prometheus` package "
                "or set STT_PROMETHEUS_BINARY"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        args = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--web.enable-admin-api",
            f"--query.lookback-delta={self.lookback_delta}",
            f"--storage.tsdb.retention.time={self.retention}",
            "--log.level=warn",
        ]
        log = self._log.open("ab")
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready on {self.url} after {timeout}s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): queries then hang, as with an overloaded server."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def reload(self) -> None:
        self._write_config()
        r = requests.post(f"{self.url}/-/reload", timeout=10)
        if r.status_code != 200:
            raise RuntimeError(f"prometheus reload failed ({r.status_code}): {r.text}")

    def add_target(
        self,
        job: str,
        address: str,
        labels: Mapping[str, str] | None = None,
        metrics_path: str = "/metrics",
        wait: bool = True,
        timeout: float = 30.0,
    ) -> ScrapeTarget:
        """Scrape `address` (host:port) under `job`; by default wait until its first scrape is up
        (about 5 s: Prometheus's discovery throttle)."""
        target = ScrapeTarget(job=job, address=address, labels=dict(labels or {}), metrics_path=metrics_path)
        self.targets.append(target)
        self.reload()
        if wait:
            self.wait_target_up(job, address, timeout=timeout)
        return target

    def add_targets(self, targets: list[ScrapeTarget], wait: bool = True, timeout: float = 30.0) -> None:
        """Add several targets with one reload. Prometheus hands new targets to the scrapers only
        every 5 s (its discovery throttle), so batch them rather than add one at a time."""
        self.targets.extend(targets)
        self.reload()
        if wait:
            for t in targets:
                self.wait_target_up(t.job, t.address, timeout=timeout)

    def remove_target(self, job: str, address: str) -> None:
        self.targets = [t for t in self.targets if not (t.job == job and t.address == address)]
        self.reload()

    def active_targets(self) -> list[dict[str, Any]]:
        r = requests.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=10)
        r.raise_for_status()
        return list(r.json()["data"]["activeTargets"])

    def wait_target_up(self, job: str, address: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            for t in self.active_targets():
                if t["labels"].get("job") == job and t["labels"].get("instance") == address:
                    last = t
                    if t["health"] == "up":
                        return
            time.sleep(0.2)
        raise TimeoutError(f"target {job}/{address} not up after {timeout}s (last state: {last})")

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        r = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        r.raise_for_status()
        return list(r.json()["data"]["result"])

    def wait_for(self, promql: str, predicate: Any = None, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns a result that satisfies `predicate` (default: any)."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result and (predicate is None or predicate(result)):
                return result
            time.sleep(0.25)
        raise TimeoutError(f"query {promql!r} did not satisfy the condition after {timeout}s: {result}")

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Exporter:
    """A prometheus_client HTTP exporter on loopback serving `registry`."""

    registry: CollectorRegistry
    port: int
    _server: Any = None
    _thread: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start_exporter(registry: CollectorRegistry | None = None, port: int | None = None) -> Exporter:
    registry = registry if registry is not None else CollectorRegistry()
    port = port or free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return Exporter(registry=registry, port=port, _server=server, _thread=thread)


@contextlib.contextmanager
def running_prometheus(workdir: Path, **kwargs: Any) -> Iterator[PrometheusServer]:
    server = PrometheusServer(workdir, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
