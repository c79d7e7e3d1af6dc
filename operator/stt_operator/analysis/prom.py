"""Typed, bounded Prometheus queries over prometheus-api-client.

Every query has a client-side timeout (requests) and a server-side one (the API's `timeout`
parameter), and connection errors / 5xx answers are retried with backoff (urllib3 Retry). Failures
come back as `PromQueryError` with a `kind` the engine turns into an explicit Error outcome.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry


class PromQueryError(Exception):
    """kind: unreachable | timeout | bad-query | server | not-allowed | not-configured.

    `detail` is always the operator's own words (and an HTTP status code): never bytes of a
    remote reply, which would let a namespace user read whatever an address answers."""

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
        except (ValueError, KeyError, TypeError) as e:  # a 200 that is not a Prometheus API answer
            raise PromQueryError("server", query, "the reply is not a Prometheus API answer") from e
        try:
            samples = parse_result(data, query)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise PromQueryError("server", query, "the reply is not a Prometheus API answer") from e
        return QueryResult(query, samples, time.monotonic() - t0, at)


_STATUS_CODE = re.compile(r"HTTP Status Code (\d{3})")
_ERROR_TYPE = re.compile(r'"errorType":\s*"([a-z_]+)"')
# Prometheus' documented API error types and what each means in our words.
_ERROR_TYPES = {
    "timeout": ("timeout", "the query timed out in Prometheus"),
    "canceled": ("timeout", "Prometheus canceled the query"),
    "bad_data": ("bad-query", "Prometheus refused the query as invalid PromQL"),
    "execution": ("server", "Prometheus failed to execute the query"),
    "internal": ("server", "Prometheus reported an internal error"),
    "unavailable": ("server", "Prometheus is unavailable"),
    "not_found": ("server", "Prometheus API endpoint not found"),
}


def _classify(message: str) -> tuple[str, str]:
    """Map an error reply to one of our kinds and a detail in our own words plus the HTTP status
    code: nothing of the reply's body is kept (an address that is not a Prometheus must not get
    its answer copied into status)."""
    code_m = _STATUS_CODE.search(message)
    code = f"HTTP {code_m.group(1)}" if code_m else "an error"
    type_m = _ERROR_TYPE.search(message)
    if type_m and type_m.group(1) in _ERROR_TYPES:
        kind, words = _ERROR_TYPES[type_m.group(1)]
        return kind, f"{words} ({code})"
    return "server", f"the address answered {code}, not a Prometheus API answer"


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


# --- which Prometheus: only what the operator's administrator configured ---------------------


def resolve_prometheus(
    *,
    default_url: str | None,
    sources: Mapping[str, str],
    allowed_urls: Sequence[str] = (),
    source: str | None = None,
    address: str | None = None,
) -> str:
    """The Prometheus base URL an object may use. A named `source` must be one of the
    configured sources; an `address` must be the default, a source's URL or an allowed URL.
    Raises PromQueryError (not-configured / not-allowed) in the operator's words."""
    if source is not None:
        if source not in sources:
            known = ", ".join(sorted(sources)) or "none"
            raise PromQueryError(
                "not-allowed",
                "",
                f"Prometheus source {source!r} is not configured (operator setting prometheusSources,"
                f" Helm value config.prometheusSources; configured: {known})",
            )
        return sources[source]
    if address is not None:
        allowed = {_norm(u) for u in (default_url, *sources.values(), *allowed_urls) if u}
        if _norm(address) not in allowed:
            raise PromQueryError(
                "not-allowed",
                "",
                "spec.analysis.prometheus.address is not among the addresses the operator allows"
                " (its prometheusUrl, prometheusSources or prometheusAllowedUrls); no request was sent",
            )
        return address
    if not default_url:
        raise PromQueryError("not-configured", "", NOT_CONFIGURED)
    return default_url


NOT_CONFIGURED = (
    "no Prometheus is configured for this operator (Helm value config.prometheusUrl or"
    " config.prometheusSources): analysis and analytics are off"
)


def _norm(url: str) -> str:
    return url.rstrip("/")
