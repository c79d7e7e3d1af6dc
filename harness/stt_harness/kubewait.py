"""Small helpers for tests that watch real objects change: polling and reading conditions."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from stt_operator.services.kube import Kube


def wait_for(
    check: Callable[[], Any],
    timeout: float = 90.0,
    what: str = "condition",
    every: float = 0.5,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll `check` until it returns something truthy; fail with the last value seen, and what
    `explain` says of the objects involved (a failure in CI is read only from its message)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    message = f"timed out after {timeout}s waiting for {what}; last value: {last!r}"
    if explain is not None:
        try:
            message += "\n" + explain()
        except Exception as exc:  # the explanation must not hide the timeout itself
            message += f"\n(explaining failed: {type(exc).__name__}: {exc})"
    raise AssertionError(message)


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def event_reasons(kube: Kube, namespace: str, name: str) -> list[str]:
    return [
        e["reason"]
        for e in kube.list("v1", "Event", namespace)
        if (e.get("involvedObject") or {}).get("name") == name
    ]


def wait_reasons(kube: Kube, namespace: str, name: str, *wanted: str, timeout: float = 30.0) -> list[str]:
    """Wait until `name` has Events with every reason in `wanted`: Events are posted apart from
    the status patch, and may land a moment after it."""
    found: list[str] = wait_for(
        lambda: set(wanted) <= set(reasons := event_reasons(kube, namespace, name)) and reasons,
        timeout,
        f"Events {wanted} of {name}",
    )
    return found
