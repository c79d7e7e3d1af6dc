"""The analysis engine: metric specs + context -> per-metric outcomes with one-line reasons.

    result = evaluate_metrics(PrometheusClient(url), analysis.metrics, context)
    decision = policy.decide(history + [result], analysis)

Outcomes: Passed / Failed / Inconclusive (not enough data, or not yet conclusive) / NoData
(series absent, NaN or stale) / Error (Prometheus unreachable, timed out, bad query or bad rule).
Statistical rules are always-valid (safe to look every interval) and Holm-corrected across all
metrics of one analysis.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from stt_operator import evalmetrics as em
from stt_operator.analysis import presets
from stt_operator.analysis.judge import RuleError, judge, rule_labels, summarize
from stt_operator.analysis.model import AnalysisContext, AnalysisResult, MetricResult, MetricRule, RuleCheck
from stt_operator.analysis.prom import PromQueryError, QueryClient
from stt_operator.analysis.verdicts import aggregate, p_value_key
from stt_operator.api.common import MetricSpec
from stt_operator.stats.counts import SRMResult, live_counts, sample_ratio_mismatch
from stt_operator.stats.multiple import holm
from stt_operator.stats.sequential import running_min

log = logging.getLogger(__name__)


def _fetch_and_judge(client: QueryClient, rule: MetricRule, ctx: AnalysisContext) -> MetricResult:
    f = presets.Fetcher(client, ctx)
    try:
        if rule.query is not None:
            data: presets.Data = presets.fetch_custom(f, rule)
        else:
            data = presets.FETCHERS[rule.preset or ""](f)
        result = judge(rule, data, ctx)
    except presets.NoDataError as e:
        return MetricResult(rule.name, "NoData", f"{rule.name} NoData: {e}", queries=tuple(f.queries))
    except PromQueryError as e:
        what = {
            "unreachable": "Prometheus unreachable",
            "timeout": "Prometheus query timed out",
            "bad-query": "bad query",
            "server": "Prometheus error",
        }.get(e.kind, e.kind)
        return MetricResult(
            rule.name,
            "Error",
            f"{rule.name} Error: {what}: {e.detail}",
            queries=tuple(f.queries),
            details={"kind": e.kind},
        )
    except (RuleError, ValueError) as e:
        return MetricResult(
            rule.name, "Error", f"{rule.name} Error: {e}", queries=tuple(f.queries), details={"kind": "rule"}
        )
    except Exception as e:  # one metric's surprise must not take the whole analysis down
        log.exception("analysis of metric %s failed", rule.name)
        return MetricResult(
            rule.name,
            "Error",
            f"{rule.name} Error: internal error: {type(e).__name__}: {e}",
            queries=tuple(f.queries),
            details={"kind": "internal"},
        )
    return replace(result, queries=tuple(f.queries))


def finalize(
    results: list[MetricResult], rules: Mapping[str, MetricRule], ctx: AnalysisContext
) -> list[MetricResult]:
    """Running minima, Holm across every statistical rule of every metric, outcomes, messages."""
    alpha = 1.0 - ctx.confidence
    judged = [r for r in results if r.outcome == "Inconclusive" and r.checks]
    raw_fail: dict[str, float] = {}
    raw_pass: dict[str, float] = {}
    # The Holm family is every statistical rule of every metric, fixed over the analysis's life:
    # a rule not judged at this look (not enough data, NoData) keeps its running minimum, or 1.
    family: dict[str, list[str]] = {
        name: rule_labels(rule, ctx.baseline is not None) for name, rule in rules.items()
    }
    for name, labels in family.items():
        for label in labels:
            prev = ctx.previous_p.get(p_value_key(name, label))
            raw_fail[p_value_key(name, label)] = prev[0] if prev else 1.0
            raw_pass[p_value_key(name, label)] = prev[1] if prev else 1.0
    # A slice value seen at an earlier look stays in the family although absent now: the family
    # only grows, so dropping a slice can never make the correction milder.
    for k, (pf, pp) in ctx.previous_p.items():
        if "[" in k.split("/", 1)[0] and k not in raw_fail:
            raw_fail[k], raw_pass[k] = pf, pp
    for r in judged:
        for c in r.checks:
            if c.statistical:
                prev = ctx.previous_p.get(p_value_key(r.name, c.rule))
                k = p_value_key(r.name, c.rule)
                raw_fail[k] = running_min(prev[0] if prev else None, c.p_fail)
                raw_pass[k] = running_min(prev[1] if prev else None, c.p_pass)
    adj_fail, adj_pass = holm(raw_fail, alpha), holm(raw_pass, alpha)
    out: list[MetricResult] = []
    for r in results:
        if not (r.outcome == "Inconclusive" and r.checks):
            carried = {
                label: ctx.previous_p[p_value_key(r.name, label)]
                for label in family.get(r.name, [])
                if p_value_key(r.name, label) in ctx.previous_p
            }
            # Keep the running minima through looks that could not judge this metric.
            out.append(replace(r, details={**r.details, "p_raw": carried}) if carried else r)
            continue
        checks: list[RuleCheck] = []
        deciding: float | None = None
        for c in r.checks:
            if not c.statistical:
                checks.append(c)
                continue
            k = p_value_key(r.name, c.rule)
            pf, failed = adj_fail[k]
            pp, passed = adj_pass[k]
            verdict = "Failed" if failed else ("Passed" if passed else None)
            checks.append(replace(c, p_fail=pf, p_pass=pp, verdict=verdict))
        verdicts = [c.verdict for c in checks]
        if "Failed" in verdicts:
            outcome = "Failed"
            deciding = min(
                (c.p_fail for c in checks if c.verdict == "Failed" and c.statistical), default=None
            )
        elif all(v == "Passed" for v in verdicts):
            outcome = "Passed"
            deciding = max((c.p_pass for c in checks if c.statistical), default=None)
        else:
            outcome = "Inconclusive"
            deciding = min((c.p_fail for c in checks if c.statistical), default=None)
        final = replace(
            r,
            outcome=outcome,
            checks=tuple(checks),
            p_value=deciding,
            details={
                **r.details,
                "p_raw": {
                    c.rule: (
                        raw_fail.get(p_value_key(r.name, c.rule)),
                        raw_pass.get(p_value_key(r.name, c.rule)),
                    )
                    for c in r.checks
                    if c.statistical
                },
            },
        )
        out.append(replace(final, message=summarize(final, rules[r.name], ctx.confidence)))
    return out


def evaluate_metrics(
    client: QueryClient,
    metric_specs: Sequence[MetricSpec | MetricRule],
    context: AnalysisContext,
    *,
    max_workers: int = 8,
) -> AnalysisResult:
    """Evaluate every metric (the API's MetricSpec, or a MetricRule as it is) against Prometheus.
    A spec the engine cannot judge is that metric's Error, never the whole analysis's."""
    t0 = time.monotonic()
    ctx = context
    if ctx.now is None:
        # One evaluation instant for every query: increase() extrapolates to the window end, so
        # sums read at different instants would be scaled differently and ratios would drift.
        ctx = replace(ctx, now=time.time())
    results: list[MetricResult | None] = [None] * len(metric_specs)
    rules: dict[str, MetricRule] = {}
    todo: list[tuple[int, MetricRule, AnalysisContext]] = []
    for i, spec in enumerate(metric_specs):
        try:
            rule = spec if isinstance(spec, MetricRule) else MetricRule.from_spec(spec, i)
        except ValueError as e:
            name = spec.name or f"metrics[{i}]"
            results[i] = MetricResult(name, "Error", f"{name} Error: {e}", details={"kind": "spec"})
            continue
        if rule.name in rules:
            results[i] = MetricResult(rule.name, "Error", f"{rule.name} Error: duplicate metric name")
            continue
        if rule.slice:
            # One rule per slice value, each judged on its own series (docs/analysis.md).
            try:
                values = presets.slice_values(presets.Fetcher(client, ctx), rule.slice)
            except PromQueryError as e:
                results[i] = MetricResult(rule.name, "Error", f"{rule.name} Error: {e.detail}")
                continue
            if not values:
                results[i] = MetricResult(
                    rule.name, "NoData", f"{rule.name} NoData: no {rule.slice} slices exported yet"
                )
                continue
            rules[rule.name] = rule  # reserves the name; its results are the slices'
            for value in values:
                sub = replace(rule, name=slice_name(rule.name, rule.slice, value), slice=None)
                rules[sub.name] = sub
                todo.append((i, sub, replace(ctx, slice_key=rule.slice, slice_value=value)))
            continue
        rules[rule.name] = rule
        todo.append((i, rule, ctx))
    extra: dict[int, list[MetricResult]] = {}
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(todo)))) as pool:
            futures = [(i, pool.submit(_fetch_and_judge, client, rule, c)) for i, rule, c in todo]
            for i, fut in futures:
                extra.setdefault(i, []).append(fut.result())
    flat: list[MetricResult] = []
    for i, r in enumerate(results):
        flat.extend([r] if r is not None else extra.get(i, []))
    judged_rules = {n: r for n, r in rules.items() if not r.slice}
    final = finalize(flat, judged_rules, ctx)
    outcome = aggregate((m.outcome for m in final), ctx.no_data_policy)
    lead = [m for m in final if m.outcome == outcome] or final
    message = lead[0].message if lead else "no metrics to analyse"
    if len(final) > 1:
        counts = {
            o: sum(1 for m in final if m.outcome == o)
            for o in ("Passed", "Failed", "Inconclusive", "NoData", "Error")
        }
        tally = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
        message = f"{outcome} ({tally}): {message}"
    return AnalysisResult(outcome, message, tuple(final), time.monotonic() - t0, ctx.eval_time())


def slice_name(metric: str, key: str, value: str) -> str:
    """Name of one slice's result, e.g. wer[noise=noisy] (status and Holm family key)."""
    return f"{metric}[{key}={value}]"


def check_sample_ratio(
    client: QueryClient,
    context: AnalysisContext,
    weights: Mapping[str, float],
    *,
    threshold: float = 0.001,
    services: Mapping[str, str] | None = None,
) -> SRMResult | str:
    """Sample-ratio mismatch of requests per variant since the start against the configured weights.

    Counts come from Triton (`services`: variant -> Service name) or else from the evaluator's
    request counter. Returns an `SRMResult`, or a one-line reason when there is no data."""
    ctx = context if context.now is not None else replace(context, now=time.time())
    f = presets.Fetcher(client, ctx)
    counts: dict[str, float] = {}
    try:
        if services:
            for variant, svc in services.items():
                sel = "{" + presets.matchers(namespace=ctx.namespace, service=svc) + "}"
                ok, q = f.increase(f"{presets.TRITON_SUCCESS}{sel}")
                bad, _ = f.increase(f"{presets.TRITON_FAILURE}{sel}")
                v = ok.get(())
                if v is None or math.isnan(v):
                    return f"no request counts for variant {variant} (query: {q})"
                v += bad.get((), 0.0)
                counts[variant] = v
        else:
            got, q = presets.sum_by_variant(f, em.REQUESTS)
            for variant in weights:
                v = got.get(variant)
                if v is None or math.isnan(v):
                    return f"no request counts for variant {variant} (query: {q})"
                counts[variant] = v
    except PromQueryError as e:
        return f"Prometheus {e.kind}: {e.detail}"
    return sample_ratio_mismatch(counts, weights, threshold)


def check_live_split(
    client: QueryClient,
    context: AnalysisContext,
    weights: Mapping[str, float],
    services: Mapping[str, str],
    *,
    threshold: float = 0.001,
    min_requests: float = 10.0,
) -> SRMResult | str:
    """Sample-ratio mismatch of the live split: Triton's request counters per variant Service
    (`nv_inference_request_success` + `_failure` since the start) minus the evaluator's replay
    requests to that variant, against the route's weights. A string when there is no live
    traffic to judge (fewer than `min_requests` live requests in all)."""
    ctx = context if context.now is not None else replace(context, now=time.time())
    f = presets.Fetcher(client, ctx)
    served: dict[str, float] = {}
    try:
        for variant, svc in services.items():
            sel = "{" + presets.matchers(namespace=ctx.namespace, service=svc) + "}"
            ok, q = f.increase(f"{presets.TRITON_SUCCESS}{sel}")
            bad, _ = f.increase(f"{presets.TRITON_FAILURE}{sel}")
            v = ok.get(())
            if v is None or math.isnan(v):
                return f"no Triton request counts for variant {variant} (query: {q})"
            served[variant] = v + (bad.get(()) or 0.0)
        replayed, _ = presets.sum_by_variant(f, em.REQUESTS)
    except PromQueryError as e:
        return f"Prometheus {e.kind}: {e.detail}"
    counts = live_counts(served, {k: v for k, v in replayed.items() if not math.isnan(v)})
    if sum(counts.values()) < min_requests:
        return f"no live traffic yet (Triton counted {sum(served.values()):.0f} requests, all replay)"
    return sample_ratio_mismatch(counts, weights, threshold)
