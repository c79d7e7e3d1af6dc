"""Typed, bounded Prometheus queries over prometheus-api-client.

Every query has a client-side timeout (requests) and a server-side one (the API's `timeout`
parameter), and connection errors / 5xx answers are retried with backoff (urllib3 Retry). Failures
come back as `PromQueryError` with a `kind` the engine turns into an explicit Error outcome.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry


class PromQueryError(Exception):
    """kind: unreachable | timeout | bad-query | server."""

    def __init__(self, kind: str, query: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail} (query: {query})")
        self.kind = kind
        self.query = query
        self.detail = detail


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float  # may be NaN / +-Inf as Prometheus returned it; a range's last value
    values: tuple[tuple[float, float], ...] | None = None  # (t, v) pairs of a range-vector query


@dataclass(frozen=True)
class QueryResult:
    query: str
    samples: tuple[Sample, ...]
    elapsed_s: float
    at: float | None = None

    @property
    def empty(self) -> bool:
        return not self.samples

    def by(self, label: str) -> dict[str, float]:
        return {s.labels.get(label, ""): s.value for s in self.samples}

    def scalar(self) -> float | None:
        """The single value of a one-series result; None when empty; error when ambiguous."""
        if not self.samples:
            return None
        if len(self.samples) > 1:
            raise PromQueryError("bad-query", self.query, f"expected one series, got {len(self.samples)}")
        return self.samples[0].value


class QueryClient(Protocol):
    def instant(self, query: str, at: float | None = None) -> QueryResult: ...


@dataclass
class PrometheusClient:
    """Instant queries against one Prometheus."""

    url: str
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.2
    headers: dict[str, str] | None = None
    _conn: PrometheusConnect = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"prometheus address {self.url!r} must start with http:// or https://")
        if self.timeout_s <= 0:
            raise ValueError(f"prometheus timeout must be > 0, got {self.timeout_s}")
        retry = Retry(
            total=self.retries,
            connect=self.retries,
            read=0,  # a slow query is not retried: it would only be slow again
            status=self.retries,
            backoff_factor=self.backoff_s,
            status_forcelist=(502, 503, 504),
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,
        )
        self._conn = PrometheusConnect(
            url=self.url.rstrip("/"), headers=self.headers, retry=retry, timeout=self.timeout_s
        )

    def instant(self, query: str, at: float | None = None) -> QueryResult:
        # Server-side limit too, so Prometheus stops work nobody waits for (durations take ms, not 1.5s).
        params: dict[str, Any] = {"timeout": f"{max(1, round(self.timeout_s * 1000))}ms"}
        if at is not None:
            params["time"] = f"{at:.3f}"
        t0 = time.monotonic()
        try:
            data = self._conn.custom_query(query, params=params, timeout=self.timeout_s)
        except requests.exceptions.Timeout as e:
            raise PromQueryError("timeout", query, f"no answer within {self.timeout_s:g}s") from e
        except (requests.exceptions.ConnectionError, requests.exceptions.RetryError) as e:
            # requests reports a read timeout that exhausted urllib3's retries as a ConnectionError.
            reason = getattr(e.args[0], "reason", None) if e.args else None
            if isinstance(reason, ReadTimeoutError):
                raise PromQueryError("timeout", query, f"no answer within {self.timeout_s:g}s") from e
            raise PromQueryError("unreachable", query, f"cannot reach {self.url}: {type(e).__name__}") from e
        except PrometheusApiClientException as e:
            kind, detail = _classify(str(e))
            raise PromQueryError(kind, query, detail) from e
        return QueryResult(query, parse_result(data, query), time.monotonic() - t0, at)


_ERROR_TYPE = re.compile(r'"errorType":\s*"([a-z_]+)"(?:.*?"error":\s*"(.*)")?')


def _classify(message: str) -> tuple[str, str]:
    """Map Prometheus' API errorType to our kinds; keep its error text as the detail."""
    m = _ERROR_TYPE.search(message)
    if not m:
        return "server", message[:300]
    error_type = m.group(1)
    text = (m.group(2) or "").replace("\\\\", "").replace('\\"', '"')
    kind = {"timeout": "timeout", "canceled": "timeout", "bad_data": "bad-query"}.get(error_type, "server")
    return kind, f"{error_type}: {text}"[:300]


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def parse_result(data: Any, query: str = "") -> tuple[Sample, ...]:
    """Instant vectors ({metric, value}), range vectors ({metric, values}) and scalars ([ts, "v"])."""
    if isinstance(data, list) and len(data) == 2 and not isinstance(data[0], dict):
        return (Sample({}, _float(data[1])),)
    out = []
    for item in data or []:
        if "values" in item:
            points = tuple((float(t), _float(v)) for t, v in item["values"])
            out.append(Sample(dict(item.get("metric", {})), points[-1][1] if points else math.nan, points))
        elif "value" in item:
            out.append(Sample(dict(item.get("metric", {})), _float(item["value"][1])))
        else:
            raise PromQueryError("bad-query", query, "result has neither value nor values")
    return tuple(out)
