"""Gather a report's data: the object (and its endpoint) from Kubernetes, range series from Prometheus.

The range queries select the evaluator's `stt_eval_*` series of the object's endpoint (and
namespace when the series carry one, as they do when scraped through the chart's
ServiceMonitor), summed by variant, over the object's lifetime. Everything returned is plain
data for `report.timeline` and `report.html`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from stt_operator import evalmetrics as em
from stt_operator.analysis.presets import TRITON_FAILURE, TRITON_SUCCESS
from stt_operator.api.common import parse_iso
from stt_operator.builders.serving import revision_object_name
from stt_operator.report.timeline import PairSums, Points, RatioSums

# Grid of a report: at most this many points per series, at least one per 15 s.
MAX_POINTS = 240
MIN_STEP_S = 15.0


class RangeSource(Protocol):
    def range(self, query: str, start: float, end: float, step: float) -> list[tuple[dict[str, str], Points]]:
        """(labels, points) per series of a PromQL range query."""
        ...


class PrometheusRange:
    """`RangeSource` over Prometheus' HTTP API (the report's only network client)."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        from prometheus_api_client import PrometheusConnect

        self.client = PrometheusConnect(url=url, disable_ssl=not url.startswith("https"))
        self.timeout_s = timeout_s

    def range(self, query: str, start: float, end: float, step: float) -> list[tuple[dict[str, str], Points]]:
        got = self.client.custom_query_range(
            query,
            start_time=dt.datetime.fromtimestamp(start, dt.UTC),
            end_time=dt.datetime.fromtimestamp(end, dt.UTC),
            step=f"{max(1, int(step))}s",
            params={"timeout": f"{int(self.timeout_s)}s"},
        )
        return [
            (dict(s.get("metric") or {}), [(float(t), float(v)) for t, v in s.get("values") or []])
            for s in got
        ]


def window(start: str | None, end: str | None, now: float) -> tuple[float, float, float]:
    """(start, end, step) of the report: the object's lifetime, capped at MAX_POINTS points."""
    t_start, t_end = parse_iso(start), parse_iso(end)
    t0 = t_start.timestamp() if t_start else now - 3600.0
    t1 = t_end.timestamp() if t_end else now
    t1 = max(t1, t0 + MIN_STEP_S)
    step = max(MIN_STEP_S, math.ceil((t1 - t0) / MAX_POINTS))
    # Prometheus evaluates a range at start + k·step: start a whole number of steps before the
    # end so the last point is the end itself (the newest samples are always in the report).
    t0 = t1 - math.ceil((t1 - t0) / step) * step
    return t0, t1, float(step)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class Selector:
    endpoint: str
    namespace: str | None = None  # None: the series carry no namespace label
    language: str | None = None

    def matchers(self, **extra: str) -> str:
        labels = {"endpoint": self.endpoint, "namespace": self.namespace, "language": self.language, **extra}
        return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items() if v) + "}"


@dataclass
class SeriesData:
    """Range data a report plots (all cumulative counters, by variant)."""

    start: float
    end: float
    step: float
    requests: dict[str, Points] = field(default_factory=dict)
    wer: RatioSums | None = None
    cer: RatioSums | None = None
    pairs: dict[str, PairSums] = field(default_factory=dict)  # candidate -> its pair with the control
    latency_buckets: dict[str, dict[str, Points]] = field(default_factory=dict)  # variant -> le -> points
    route_weights: dict[str, Points] = field(default_factory=dict)  # backend -> weight gauge
    # Live traffic: Triton's requests (success + failure) per variant (an ABTest) or revision
    # Service (a rollout), and the evaluator's replay to the same key, to subtract.
    served: dict[str, Points] = field(default_factory=dict)
    replayed: dict[str, Points] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)


def _range(source: RangeSource, data: SeriesData, query: str) -> list[tuple[dict[str, str], Points]]:
    """One step before the window too: a sample there shows the series existed before it
    (see `timeline.increases`)."""
    data.queries.append(query)
    return source.range(query, data.start - data.step, data.end, data.step)


def _by(source: RangeSource, data: SeriesData, query: str, label: str) -> dict[str, Points]:
    return {labels.get(label, ""): pts for labels, pts in _range(source, data, query)}


def collect_series(
    source: RangeSource, sel: Selector, start: float, end: float, step: float, control: str | None = None
) -> SeriesData:
    data = SeriesData(start, end, step)

    def by_variant(metric: str, **extra: str) -> dict[str, Points]:
        return _by(source, data, f"sum by (variant) ({metric}{sel.matchers(**extra)})", em.LABEL_VARIANT)

    data.requests = by_variant(em.REQUESTS)
    for unit, attr in ((em.UNIT_WORD, "wer"), (em.UNIT_CHAR, "cer")):
        sums = RatioSums(
            count=by_variant(em.UTTERANCES),
            x=by_variant(em.ERRORS, unit=unit),
            y=by_variant(em.REF_LEN, unit=unit),
            xx=by_variant(em.ERRORS_SQ, unit=unit),
            yy=by_variant(em.REF_LEN_SQ, unit=unit),
            xy=by_variant(em.ERRORS_X_REF, unit=unit),
        )
        if sums.count and sums.y:
            setattr(data, attr, sums)
    if control:
        names = {
            "pairs": em.PAIRS,
            "ref": em.PAIR_REF_LEN,
            "ref_sq": em.PAIR_REF_LEN_SQ,
            "cand": em.PAIR_CAND_ERRORS,
            "base": em.PAIR_BASE_ERRORS,
            "diff_sq": em.PAIR_DIFF_SQ,
            "cand_sq": em.PAIR_CAND_ERRORS_SQ,
            "base_sq": em.PAIR_BASE_ERRORS_SQ,
            "cand_x_ref": em.PAIR_CAND_ERRORS_X_REF,
            "base_x_ref": em.PAIR_BASE_ERRORS_X_REF,
        }
        got = {k: by_variant(m, baseline=control, unit=em.UNIT_WORD) for k, m in names.items()}
        for candidate in got["pairs"]:
            data.pairs[candidate] = PairSums(**{k: got[k].get(candidate, ()) for k in names})
    q = f"sum by (variant, le) ({em.LATENCY}_bucket{sel.matchers()})"
    for labels, pts in _range(source, data, q):
        data.latency_buckets.setdefault(labels.get("variant", ""), {})[labels.get("le", "+Inf")] = pts
    return data


def route_weight_series(
    source: RangeSource, data: SeriesData, namespace: str, endpoint: str
) -> dict[str, Points]:
    """The operator's own gauge of the weights it wrote into the endpoint's route."""
    sel = Selector(endpoint=endpoint, namespace=namespace)
    q = f"max by (backend) (stt_operator_route_weight{sel.matchers()})"
    return _by(source, data, q, "backend")


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def triton_requests(
    source: RangeSource, data: SeriesData, namespace: str | None, services: Mapping[str, str]
) -> dict[str, Points]:
    """Requests each Service's Triton served (success + failure counters), keyed as `services`
    maps them (Service -> key). Only DNS-label names go into the regex, so none can widen it."""
    names = sorted(svc for svc in services if _DNS_LABEL.match(svc))
    if not names:
        return {}
    labels = [f'__name__=~"{TRITON_SUCCESS}|{TRITON_FAILURE}"', f'service=~"{"|".join(names)}"']
    if namespace:
        labels.append(f'namespace="{_escape(namespace)}"')
    q = "sum by (service) ({" + ",".join(labels) + "})"
    return {services[svc]: pts for svc, pts in _by(source, data, q, "service").items() if svc in services}


def replay_by_model(source: RangeSource, data: SeriesData, sel: Selector) -> dict[str, Points]:
    """The evaluator's replay requests of an endpoint summed by model (a rollout's variants are
    roles, stable and canary, that change model as it goes)."""
    return _by(source, data, f"sum by (model) ({em.REQUESTS}{sel.matchers()})", em.LABEL_MODEL)


def live_keys(obj: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(Service -> plotted key, replay key -> plotted key) of an ABTest (keys: its variants) or
    a ModelDeployment (keys: its revisions' Services, as the route names them; the replay of a
    model counts against its newest revision)."""
    status = obj.get("status") or {}
    if obj.get("kind") == "ABTest":
        variants = [v for v in status.get("variants") or [] if v.get("service") and v.get("name")]
        return {v["service"]: v["name"] for v in variants}, {v["name"]: v["name"] for v in variants}
    endpoint = obj["metadata"]["name"]
    services: dict[str, str] = {}
    by_model: dict[str, str] = {}
    for rec in sorted(status.get("revisions") or [], key=lambda r: r.get("revision") or 0):
        if rec.get("model") and rec.get("revisionId"):
            svc = revision_object_name(endpoint, rec["model"], rec["revisionId"])
            services[svc] = svc
            by_model[rec["model"]] = svc
    return services, by_model


def add_live_traffic(source: RangeSource, data: SeriesData, obj: Mapping[str, Any], sel: Selector) -> None:
    """Fill `data.served` and `data.replayed` for an ABTest or a ModelDeployment (after
    `collect_series`, whose per-variant requests are an ABTest's replay)."""
    services, replay_keys = live_keys(obj)
    replay = data.requests if obj.get("kind") == "ABTest" else replay_by_model(source, data, sel)
    data.replayed = {replay_keys[k]: pts for k, pts in replay.items() if k in replay_keys}
    data.served = triton_requests(source, data, sel.namespace, services)


def lifetime(obj: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(start, end) timestamps of an ABTest or a ModelDeployment's current rollout."""
    status = obj.get("status") or {}
    start = (
        status.get("startedAt") or status.get("rolloutStartedAt") or obj["metadata"].get("creationTimestamp")
    )
    return start, status.get("endedAt")
