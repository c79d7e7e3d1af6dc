"""Webhook notifications of what matters to people: rollbacks, promotions, A/B winners and
rollouts that stopped moving (docs/notifications.md).

Every Event the controllers post goes through `publish` (controllers/status.py). Those whose
reason maps to a category a receiver subscribes to are queued for that receiver and sent by its
own worker thread, so a slow or unreachable receiver never blocks a reconcile or another
receiver. A failed send (connection error, timeout, HTTP 429 or 5xx) is retried with exponential
backoff up to `maxAttempts`; other HTTP errors are final. URLs and tokens come from environment
variables the Deployment fills from a Secret (the chart's `notifications.receivers[].urlSecret`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import urllib3
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

Category = Literal["rollback", "promotion", "winner", "stuck"]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]

# Event reason -> category. "stuck": a rollout that waits for data, for a person, or past its deadline.
REASONS: dict[str, str] = {
    "RolledBack": "rollback",
    "Promoted": "promotion",
    "WinnerPromoted": "promotion",
    "WinnerFound": "winner",
    "WinnerAnnounced": "winner",
    "AnalysisNoData": "stuck",
    "AnalysisPaused": "stuck",
    "AnalysisFailed": "stuck",
    "ProgressDeadlineExceeded": "stuck",
}

SENT = Counter(
    "stt_operator_notifications_total",
    "Webhook notifications by receiver and outcome (sent, failed, dropped)",
    ["receiver", "outcome"],
)


class Receiver(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=63)
    format: Literal["json", "slack", "teams"] = "json"
    url: str | None = Field(None, description="the webhook URL (prefer url_env for secrets)")
    url_env: str | None = Field(None, description="environment variable holding the URL (from a Secret)")
    token_env: str | None = Field(None, description="environment variable holding a bearer token")
    events: list[Category] = Field(default_factory=lambda: list(CATEGORIES))
    max_attempts: int = Field(5, ge=1, le=20)
    timeout_s: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _one_url(self) -> Receiver:
        if bool(self.url) == bool(self.url_env):
            raise ValueError(f"receiver {self.name}: set exactly one of url and url_env")
        return self

    def resolved_url(self) -> str:
        url = self.url or os.environ.get(self.url_env or "", "")
        if not url:
            raise ValueError(f"receiver {self.name}: environment variable {self.url_env} is empty")
        return url


class NotificationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    receivers: list[Receiver] = Field(default_factory=list)
    queue_size: int = Field(1000, ge=1, description="per receiver; when full the oldest is dropped")
    backoff_s: float = Field(1.0, gt=0, description="first retry delay; doubles per attempt")
    max_backoff_s: float = Field(60.0, gt=0)
    dedupe_window_s: float = Field(600.0, ge=0, description="the same event of an object is sent once")


# --- payloads ---------------------------------------------------------------------------------


def notification(
    body: Mapping[str, Any], type_: str, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """The generic JSON payload: what happened to which object."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        "event": REASONS.get(reason, "other"),
        "reason": reason,
        "type": type_,
        "message": message,
        "time": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "object": {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
        },
        "phase": status.get("phase"),
    }


def _title(n: Mapping[str, Any]) -> str:
    obj = n["object"]
    return f"{n['reason']}: {obj['kind']} {obj['namespace']}/{obj['name']}"


def slack_payload(n: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message (mrkdwn text plus one section block)."""
    icon = ":rotating_light:" if n["type"] == "Warning" else ":white_check_mark:"
    text = f"{icon} *{_title(n)}*\n{n['message']}"
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def teams_payload(n: Mapping[str, Any]) -> dict[str, Any]:
    """A Microsoft Teams workflow-webhook message carrying one Adaptive Card."""
    obj = n["object"]
    facts = [
        {"title": "Kind", "value": str(obj["kind"])},
        {"title": "Object", "value": f"{obj['namespace']}/{obj['name']}"},
        {"title": "Event", "value": f"{n['event']} ({n['reason']})"},
        {"title": "Phase", "value": str(n.get("phase") or "-")},
        {"title": "Time", "value": n["time"]},
    ]
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": _title(n),
                "weight": "Bolder",
                "size": "Medium",
                "color": "Attention" if n["type"] == "Warning" else "Good",
                "wrap": True,
            },
            {"type": "TextBlock", "text": n["message"], "wrap": True},
            {"type": "FactSet", "facts": facts},
        ],
    }
    return {
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
    }


FORMATS: dict[str, Callable[[Mapping[str, Any]], Mapping[str, Any]]] = {
    "json": lambda n: dict(n),
    "slack": slack_payload,
    "teams": teams_payload,
}


# --- sending ------------------------------------------------------------------------------------


def retryable(status: int) -> bool:
    return status == 429 or status >= 500


class _Worker:
    """One receiver's queue and sender thread."""

    def __init__(self, receiver: Receiver, settings: NotificationSettings, http: urllib3.PoolManager) -> None:
        self.receiver, self.settings, self.http = receiver, settings, http
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=settings.queue_size)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"notify-{receiver.name}", daemon=True)
        self.thread.start()

    def put(self, payload: dict[str, Any]) -> None:
        while True:
            try:
                self.queue.put_nowait(payload)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()  # the oldest goes: the newest state matters more
                    SENT.labels(self.receiver.name, "dropped").inc()
                    log.warning("notification queue of %s is full; dropped the oldest", self.receiver.name)
                except queue.Empty:
                    pass

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                payload = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if payload is None:
                return
            ok = self.send(payload)
            SENT.labels(self.receiver.name, "sent" if ok else "failed").inc()
            self.queue.task_done()

    def send(self, payload: Mapping[str, Any]) -> bool:
        r = self.receiver
        headers = {"Content-Type": "application/json"}
        if r.token_env and os.environ.get(r.token_env):
            headers["Authorization"] = f"Bearer {os.environ[r.token_env]}"
        body = json.dumps(FORMATS[r.format](payload)).encode()
        delay = self.settings.backoff_s
        for attempt in range(1, r.max_attempts + 1):
            try:
                resp = self.http.request(
                    "POST",
                    r.resolved_url(),
                    body=body,
                    headers=headers,
                    timeout=urllib3.Timeout(total=r.timeout_s),
                    retries=False,
                )
                if resp.status < 300:
                    return True
                error = f"HTTP {resp.status}"
                if not retryable(resp.status):
                    log.warning("notification to %s refused (%s); not retried", r.name, error)
                    return False
            except (urllib3.exceptions.HTTPError, ValueError) as exc:
                error = str(exc)
            if attempt < r.max_attempts:
                log.info("notification to %s failed (%s); retry %d in %.1fs", r.name, error, attempt, delay)
                if self.stop.wait(delay):
                    return False
                delay = min(delay * 2, self.settings.max_backoff_s)
        log.warning("notification to %s failed after %d attempts: %s", r.name, r.max_attempts, error)
        return False


class Notifier:
    """Routes Events to the receivers that subscribe to their category."""

    def __init__(self, settings: NotificationSettings) -> None:
        self.settings = settings
        http = urllib3.PoolManager(num_pools=4)
        self.workers = [_Worker(r, settings, http) for r in settings.receivers]
        self._seen: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def publish(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> int:
        """Queue one Event for every subscribed receiver; returns how many. Never blocks."""
        category = REASONS.get(reason)
        if category is None or not self.workers:
            return 0
        meta = body.get("metadata") or {}
        key = (str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"), reason, message)
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < self.settings.dedupe_window_s:
                return 0
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.settings.dedupe_window_s}
            self._seen[key] = now
        payload = notification(body, type_, reason, message, datetime.now(UTC))
        queued = 0
        for worker in self.workers:
            if category in worker.receiver.events:
                worker.put(payload)
                queued += 1
        return queued

    def close(self, timeout: float = 5.0) -> None:
        for worker in self.workers:
            worker.stop.set()
            with contextlib.suppress(queue.Full):
                worker.queue.put_nowait(None)
        for worker in self.workers:
            worker.thread.join(timeout)


_notifier: Notifier | None = None


def configure(settings: NotificationSettings) -> Notifier | None:
    """Start the senders (once, at operator start); none without receivers."""
    global _notifier
    if _notifier is not None:
        _notifier.close()
    _notifier = Notifier(settings) if settings.receivers else None
    return _notifier


def publish(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Called for every Event posted; a no-op until `configure` set receivers up."""
    if _notifier is not None:
        try:
            _notifier.publish(body, type_, reason, message)
        except Exception:  # a notification must never fail a reconcile
            log.exception("could not queue a notification for %s", reason)
