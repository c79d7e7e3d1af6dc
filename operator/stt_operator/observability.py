"""The operator's own Prometheus metrics and log set-up."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("stt_operator_reconciles_total", "Reconciles by kind and result", ["kind", "result"])
RECONCILE_SECONDS = Histogram(
    "stt_operator_reconcile_duration_seconds",
    "Time spent in one reconcile",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ROLLOUTS_IN_FLIGHT = Gauge(
    "stt_operator_rollouts_in_flight", "ModelDeployments currently progressing", ["namespace", "name"]
)
ROLLBACKS = Counter("stt_operator_rollbacks_total", "Automatic and manual rollbacks", ["namespace", "name"])
PROMOTIONS = Counter("stt_operator_promotions_total", "Revisions promoted to stable", ["namespace", "name"])
# What the operator last wrote into each endpoint's route: reports draw weights over time from it.
ROUTE_WEIGHT = Gauge(
    "stt_operator_route_weight",
    "Weight (percent) of each backend in the endpoint's route, as last written",
    ["namespace", "endpoint", "backend"],
)
_routed: dict[tuple[str, str], set[str]] = {}


def record_route(namespace: str, endpoint: str, weights: Mapping[str, int]) -> None:
    """Set the route-weight gauge of one endpoint; backends no longer named drop out."""
    key = (namespace, endpoint)
    for gone in _routed.get(key, set()) - set(weights):
        ROUTE_WEIGHT.remove(namespace, endpoint, gone)
    for backend, weight in weights.items():
        ROUTE_WEIGHT.labels(namespace, endpoint, backend).set(weight)
    _routed[key] = set(weights)


@contextmanager
def track_reconcile(kind: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except Exception:
        RECONCILES.labels(kind, "error").inc()
        raise
    else:
        RECONCILES.labels(kind, "ok").inc()
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("k8s_namespace", "k8s_name", "kind"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
