"""Metric presets: which series to read for `wer`, `cer`, `latency-p95`, ... and how.

Each preset reads cumulative increases since the analysis start (never a sliding `rate()[5m]`)
of the evaluator's sufficient statistics (`stt_eval_*`, see `stt_operator.evalmetrics`) or of
Triton's counters (`nv_inference_*`), and returns typed data
for the pure judging step. A preset that finds no series says which query came back empty.

Increases are computed here from the raw samples of `x[<since start>]`, the way increase() does
but without its extrapolation to the window edges: extrapolation scales each scrape target by
its own factor, which is harmless for a ratio inside one target but biases comparisons across
targets (two Triton Deployments, a sample-ratio check) at exactly the sample sizes where a test
would notice. Counter resets are handled like Prometheus does (a drop means a restart from 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from stt_operator import evalmetrics as em
from stt_operator.analysis.model import AnalysisContext, MetricRule
from stt_operator.analysis.prom import PromQueryError, QueryClient, QueryResult, Sample
from stt_operator.analysis.scoping import ScopeError, scope_query
from stt_operator.analysis.templating import escape_label_value, render
from stt_operator.stats.histogram import Buckets, from_cumulative
from stt_operator.stats.ratio import PairedStats, RatioStats

TRITON_SUCCESS = "nv_inference_request_success"
TRITON_FAILURE = "nv_inference_request_failure"


class NoDataError(Exception):
    """The series a metric needs are absent, NaN or stale."""


@dataclass
class RatioData:
    candidate: RatioStats
    baseline: RatioStats | None
    paired: PairedStats | None = None
    unit: str = ""  # what a unit is, for messages: utterances / requests


@dataclass
class HistogramData:
    candidate: Buckets
    baseline: Buckets | None
    quantile: float = 0.95


@dataclass
class CountData:
    candidate_events: float
    candidate_exposure: float
    baseline_events: float | None
    baseline_exposure: float | None
    source: str = ""


@dataclass
class ScalarData:
    candidate: float
    baseline: float | None


Data = RatioData | HistogramData | CountData | ScalarData


@dataclass
class Fetcher:
    """Runs queries for one metric and keeps the PromQL it sent (for messages and debugging)."""

    client: QueryClient
    ctx: AnalysisContext
    queries: list[str] = field(default_factory=list)

    def run(self, promql: str) -> QueryResult:
        self.queries.append(promql)
        return self.client.instant(promql, at=self.ctx.eval_time())

    def increase(self, selector: str, by: tuple[str, ...] = ()) -> tuple[dict[tuple[str, ...], float], str]:
        """Counter increase since the start of every series of `selector`, summed by `by`: exact
        from raw samples up to `exact_window_max_s`, Prometheus' increase() beyond.

        Every series counts from its value at the start: the last sample at or before it. A
        series with none (a canary's or an A/B candidate's new Triton pod, an evaluator started
        with the test) was born inside the window and counts from zero. Counting from the first
        sample inside the window instead loses what each series counted before its first scrape
        there (up to a scrape interval's worth of requests, or all of a burst sent right after
        the start), and the loss differs between an old pod and a new one, so arms compared
        across the two are skewed."""
        if self.ctx.window_seconds() <= self.ctx.exact_window_max_s:
            q = f"{selector}[{self.ctx.window()}]"
            samples = self.run(q).samples
            return sum_increases(samples, by, self._values_at_start(selector, samples)), q
        grouping = f" by ({', '.join(by)})" if by else ""
        q = f"sum{grouping} (increase({selector}[{self.ctx.window()}]))"
        return {tuple(s.labels.get(label, "") for label in by): s.value for s in self.run(q).samples}, q

    def _values_at_start(self, selector: str, samples: Sequence[Sample]) -> dict[LabelKey, float]:
        """Each series' last value in the `BORN_LOOKBACK_S` before the window's start (one instant
        query at the start); a series missing here was born inside the window."""
        if not samples:
            return {}
        q = f"last_over_time({selector}[{BORN_LOOKBACK_S}s])"
        self.queries.append(q)
        return {label_key(s.labels): s.value for s in self.client.instant(q, at=self.ctx.start).samples}


# A series with no sample in this long before a window's start is taken as born inside it. An
# hour: far above any scrape interval, so a scrape missed at the start does not make an old
# series look new (which would count its whole lifetime).
BORN_LOOKBACK_S = 3600

LabelKey = frozenset[tuple[str, str]]


def label_key(labels: Mapping[str, str]) -> LabelKey:
    """A series' identity without its metric name (last_over_time drops the name)."""
    return frozenset((k, v) for k, v in labels.items() if k != "__name__")


def counter_increase(points: Iterable[tuple[float, float]], *, start: float | None = None) -> float:
    """Increase of one counter over its samples; a drop is a reset to zero (process restart).
    `start`: the counter's value when the window began (0 for a series born inside it), counted
    from before the first sample; without it, only the differences between the samples count."""
    v = np.array([p[1] for p in points], dtype=float)
    if start is not None and v.size:
        v = np.concatenate(([start], v))
    if v.size < 2:
        return 0.0 if v.size == 1 and not math.isnan(v[0]) else (math.nan if v.size else 0.0)
    d = np.diff(v)
    return float(np.sum(np.where(d >= 0, d, v[1:])))


def sum_increases(
    samples: Iterable[Sample], by: tuple[str, ...], at_start: Mapping[LabelKey, float]
) -> dict[tuple[str, ...], float]:
    """Counter increases summed by the labels `by`: each series counts from its value when the
    window began (`at_start`), or from zero when it has none (born inside the window)."""
    out: dict[tuple[str, ...], float] = {}
    for s in samples:
        key = tuple(s.labels.get(label, "") for label in by)
        points = s.values or ((0.0, s.value),)
        start = at_start.get(label_key(s.labels), 0.0)
        out[key] = out.get(key, 0.0) + counter_increase(points, start=start)
    return out


def matchers(**labels: str) -> str:
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items() if v)


def _slice_matchers(ctx: AnalysisContext) -> dict[str, str]:
    if not ctx.slice_key:
        return {}
    return {em.LABEL_SLICE: ctx.slice_key, em.LABEL_SLICE_VALUE: ctx.slice_value}


def _name(ctx: AnalysisContext, metric: str) -> str:
    """The evaluator series to read: the per-slice family when judging one slice value."""
    return em.sliced(metric) if ctx.slice_key else metric


def _eval_selector(ctx: AnalysisContext, **extra: str) -> str:
    lv = {"namespace": ctx.namespace, "endpoint": ctx.endpoint, "language": ctx.language}
    return "{" + matchers(**lv, **_slice_matchers(ctx), **extra) + "}"


def slice_values(f: Fetcher, key: str) -> list[str]:
    """The values of slice dimension `key` the evaluator has exported for this endpoint."""
    ctx = replace(f.ctx, slice_key=key, slice_value="")
    sel = (
        "{" + matchers(namespace=ctx.namespace, endpoint=ctx.endpoint, language=ctx.language, slice=key) + "}"
    )
    q = f"count by ({em.LABEL_SLICE_VALUE}) ({_name(ctx, em.UTTERANCES)}{sel})"
    return sorted(v for v in f.run(q).by(em.LABEL_SLICE_VALUE) if v)


def _arms(ctx: AnalysisContext) -> list[str]:
    return [ctx.candidate.variant] + ([ctx.baseline.variant] if ctx.baseline else [])


def _finite(value: float | None, what: str, query: str) -> float:
    if value is None:
        raise NoDataError(f"no series for {what} (query: {query})")
    if math.isnan(value) or math.isinf(value):
        raise NoDataError(f"{what} is {value} (query: {query})")
    return value


def sum_by_variant(f: Fetcher, metric: str, **extra: str) -> tuple[dict[str, float], str]:
    got, q = f.increase(f"{_name(f.ctx, metric)}{_eval_selector(f.ctx, **extra)}", (em.LABEL_VARIANT,))
    return {k[0]: v for k, v in got.items()}, q


def _check_fresh(f: Fetcher, metric: str, **extra: str) -> None:
    """A series that stopped being scraped has a staleness marker: it is absent from an instant
    query although increase() over the window still sees its old samples. Judging on data that
    stopped arriving could promote a dead variant, so stale is no data."""
    q = f"count by (variant) ({_name(f.ctx, metric)}{_eval_selector(f.ctx, **extra)})"
    present = f.run(q).by(em.LABEL_VARIANT)
    stale = [v for v in _arms(f.ctx) if v not in present]
    if stale:
        raise NoDataError(f"series of variant(s) {', '.join(stale)} are stale (target down?) (query: {q})")


def _ratio_per_arm(
    f: Fetcher, count: str, x: str, y: str | None, xx: str, yy: str | None, xy: str | None, **extra: str
) -> dict[str, RatioStats]:
    """RatioStats per arm from exported sums; y=None means y_i = 1 (a plain mean)."""
    names = {"n": (count, {}), "x": (x, extra), "xx": (xx, extra)}
    if y is not None:
        names |= {"y": (y, extra), "yy": (yy, extra), "xy": (xy, extra)}
    got: dict[str, tuple[dict[str, float], str]] = {
        key: sum_by_variant(f, metric, **lbl)
        for key, (metric, lbl) in names.items()  # type: ignore[arg-type]
    }
    out: dict[str, RatioStats] = {}
    for arm in _arms(f.ctx):
        v = {k: _finite(r.get(arm), f"{names[k][0]} of variant {arm}", q) for k, (r, q) in got.items()}
        if y is None:
            v |= {"y": v["n"], "yy": v["n"], "xy": v["x"]}
        out[arm] = RatioStats(v["n"], v["x"], v["y"], v["xx"], v["yy"], v["xy"])
    return out


def _paired(f: Fetcher, unit: str) -> PairedStats | None:
    ctx = f.ctx
    if not (ctx.paired and ctx.baseline):
        return None
    sel = (
        "{"
        + matchers(
            namespace=ctx.namespace,
            endpoint=ctx.endpoint,
            language=ctx.language,
            variant=ctx.candidate.variant,
            baseline=ctx.baseline.variant,
            unit=unit,
            **_slice_matchers(ctx),
        )
        + "}"
    )

    def total(metric: str) -> float | None:
        return f.increase(f"{_name(ctx, metric)}{sel}")[0].get(())

    pairs = total(em.PAIRS)
    if pairs is None or math.isnan(pairs) or pairs < 2:
        return None  # no paired replay for this pair of variants: fall back to unpaired
    vals = {
        m: total(m)
        for m in (
            em.PAIR_REF_LEN,
            em.PAIR_REF_LEN_SQ,
            em.PAIR_CAND_ERRORS,
            em.PAIR_BASE_ERRORS,
            em.PAIR_DIFF_SQ,
            em.PAIR_CAND_ERRORS_SQ,
            em.PAIR_BASE_ERRORS_SQ,
            em.PAIR_CAND_ERRORS_X_REF,
            em.PAIR_BASE_ERRORS_X_REF,
        )
    }
    clean = {m: _finite(v, m, sel) for m, v in vals.items()}
    return PairedStats.from_exported(
        pairs=pairs,
        sum_len=clean[em.PAIR_REF_LEN],
        sum_len_sq=clean[em.PAIR_REF_LEN_SQ],
        sum_cand=clean[em.PAIR_CAND_ERRORS],
        sum_base=clean[em.PAIR_BASE_ERRORS],
        sum_diff_sq=clean[em.PAIR_DIFF_SQ],
        sum_cand_sq=clean[em.PAIR_CAND_ERRORS_SQ],
        sum_base_sq=clean[em.PAIR_BASE_ERRORS_SQ],
        sum_cand_len=clean[em.PAIR_CAND_ERRORS_X_REF],
        sum_base_len=clean[em.PAIR_BASE_ERRORS_X_REF],
    )


def fetch_error_ratio(f: Fetcher, unit: str) -> RatioData:
    """WER (unit=word) / CER (unit=char)."""
    arms = _ratio_per_arm(
        f, em.UTTERANCES, em.ERRORS, em.REF_LEN, em.ERRORS_SQ, em.REF_LEN_SQ, em.ERRORS_X_REF, unit=unit
    )
    _check_fresh(f, em.UTTERANCES)
    base = arms.get(f.ctx.baseline.variant) if f.ctx.baseline else None
    return RatioData(arms[f.ctx.candidate.variant], base, _paired(f, unit), "utterances")


def fetch_rtf(f: Fetcher) -> RatioData:
    arms = _ratio_per_arm(
        f,
        em.UTTERANCES,
        em.PROCESSING_SECONDS,
        em.AUDIO_SECONDS,
        em.PROCESSING_SECONDS_SQ,
        em.AUDIO_SECONDS_SQ,
        em.PROCESSING_X_AUDIO,
    )
    _check_fresh(f, em.UTTERANCES)
    base = arms.get(f.ctx.baseline.variant) if f.ctx.baseline else None
    return RatioData(arms[f.ctx.candidate.variant], base, None, "utterances")


def fetch_confidence(f: Fetcher) -> RatioData:
    arms = _ratio_per_arm(f, em.CONFIDENCE_COUNT, em.CONFIDENCE, None, em.CONFIDENCE_SQ, None, None)
    _check_fresh(f, em.CONFIDENCE_COUNT)
    base = arms.get(f.ctx.baseline.variant) if f.ctx.baseline else None
    return RatioData(arms[f.ctx.candidate.variant], base, None, "utterances")


def fetch_latency(f: Fetcher, q: float) -> HistogramData:
    ctx = f.ctx
    got, query = f.increase(f"{_name(ctx, em.LATENCY)}_bucket{_eval_selector(ctx)}", (em.LABEL_VARIANT, "le"))
    per_arm: dict[str, dict[str, float]] = {}
    for (variant, le), value in got.items():
        per_arm.setdefault(variant, {})[le] = value
    out: dict[str, Buckets] = {}
    for arm in _arms(ctx):
        if arm not in per_arm:
            raise NoDataError(f"no latency histogram for variant {arm} (query: {query})")
        if any(math.isnan(v) for v in per_arm[arm].values()):
            raise NoDataError(f"latency histogram of variant {arm} has NaN buckets (query: {query})")
        out[arm] = from_cumulative(per_arm[arm])
    _check_fresh(f, f"{em.LATENCY}_count")  # _name() maps it to the sliced family too
    base = out.get(ctx.baseline.variant) if ctx.baseline else None
    return HistogramData(out[ctx.candidate.variant], base, q)


def fetch_error_rate(f: Fetcher) -> CountData:
    """Failed / all requests. From Triton (`nv_inference_request_*`, selected by each arm's
    Service) when the arms name a Service, else from the evaluator's request counters."""
    ctx = f.ctx
    if ctx.slice_key:
        raise ValueError("error-rate is not exported per slice")
    arms = [ctx.candidate] + ([ctx.baseline] if ctx.baseline else [])
    counts: list[tuple[float, float]] = []
    if all(a.service for a in arms):
        for a in arms:
            sel = "{" + matchers(namespace=ctx.namespace, service=a.service) + "}"
            got_s, qs = f.increase(f"{TRITON_SUCCESS}{sel}")
            got_f, qf = f.increase(f"{TRITON_FAILURE}{sel}")
            succ = _finite(got_s.get(()), f"{TRITON_SUCCESS} of service {a.service}", qs)
            fail_v = got_f.get(())  # no failure series at all means no failures yet
            fail = 0.0 if fail_v is None else _finite(fail_v, TRITON_FAILURE, qf)
            counts.append((fail, succ + fail))
        source = "triton"
    else:
        fails, qf = sum_by_variant(f, em.FAILURES)
        reqs, qr = sum_by_variant(f, em.REQUESTS)
        for a in arms:
            total = _finite(reqs.get(a.variant), f"{em.REQUESTS} of variant {a.variant}", qr)
            fail = fails.get(a.variant, 0.0)
            counts.append((_finite(fail, em.FAILURES, qf), total))
        _check_fresh(f, em.REQUESTS)
        source = "evaluator"
    base = counts[1] if len(counts) > 1 else (None, None)
    return CountData(counts[0][0], counts[0][1], base[0], base[1], source)


def fetch_custom(f: Fetcher, rule: MetricRule) -> ScalarData:
    ctx = f.ctx
    assert rule.query is not None

    def value_for(arm_variant: str, service: str, model: str) -> float:
        values = {
            "namespace": ctx.namespace,
            "endpoint": ctx.endpoint,
            "service": service,
            "model": model,
            "variant": arm_variant,
            "language": ctx.language,
            "start": f"{ctx.start:.0f}",
            "interval": ctx.interval,
            "window": ctx.window(),
            "baseline": ctx.baseline.variant if ctx.baseline else "",
        }
        q = render(rule.query or "", values, f"metric {rule.name!r}.query")
        if ctx.scope_queries:
            try:
                q = scope_query(q, ctx.namespace)
            except ScopeError as e:
                raise PromQueryError(
                    "bad-query",
                    q,
                    f"metric {rule.name!r}: cannot confine the query to namespace {ctx.namespace}: {e}",
                ) from e
        res = f.run(q)
        if len(res.samples) > 1:
            raise PromQueryError(
                "bad-query", q, f"returned {len(res.samples)} series; aggregate it (sum, max)"
            )
        return _finite(res.scalar(), f"metric {rule.name!r} for variant {arm_variant}", q)

    cand = value_for(ctx.candidate.variant, ctx.candidate.service, ctx.candidate.model)
    base = value_for(ctx.baseline.variant, ctx.baseline.service, ctx.baseline.model) if ctx.baseline else None
    return ScalarData(cand, base)


FETCHERS: dict[str, Callable[[Fetcher], Data]] = {
    "wer": lambda f: fetch_error_ratio(f, em.UNIT_WORD),
    "cer": lambda f: fetch_error_ratio(f, em.UNIT_CHAR),
    "rtf": fetch_rtf,
    "confidence": fetch_confidence,
    "latency-p95": lambda f: fetch_latency(f, 0.95),
    "latency-p99": lambda f: fetch_latency(f, 0.99),
    "error-rate": fetch_error_rate,
}


def fetch(client: QueryClient, rule: MetricRule, ctx: AnalysisContext) -> tuple[Data, list[str]]:
    f = Fetcher(client, ctx)
    data = fetch_custom(f, rule) if rule.query is not None else FETCHERS[rule.preset or ""](f)
    return data, f.queries
