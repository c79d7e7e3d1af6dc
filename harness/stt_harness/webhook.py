"""A real HTTP webhook receiver on loopback (http.server), for the notification tests: it records
every request and answers with scripted status codes (e.g. 503 first, to make the sender retry)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    at: float = field(default_factory=time.monotonic)


class WebhookReceiver:
    def __init__(self, statuses: dict[str, list[int]] | None = None, delay_s: float = 0.0) -> None:
        """`statuses`: per path, the codes of the first requests (then 200); `delay_s`: answer slowly."""
        self.statuses = {k: list(v) for k, v in (statuses or {}).items()}
        self.delay_s = delay_s
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                time.sleep(receiver.delay_s)
                with receiver.lock:
                    queue = receiver.statuses.get(self.path) or []
                    status = queue.pop(0) if queue else 200
                    receiver.requests.append(
                        Request(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw),
                            status,
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def at(self, path: str, ok_only: bool = False) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path and (not ok_only or r.status < 300)]

    def wait(self, check: Callable[[], Any], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := check():
                return result
            time.sleep(0.1)
        raise AssertionError(f"webhook receiver: condition not met in {timeout}s; got {self.requests}")
