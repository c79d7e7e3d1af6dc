"""Pure judging: typed metric data + a metric's rules -> rule checks and a provisional result.

Statistical rules become two always-valid one-sided p-values per rule:
- `p_fail`: H0 "the rule holds"; small means the candidate breaks it (-> Failed),
- `p_pass`: H0 "the rule is broken"; small means the candidate meets it (-> Passed).
The engine applies a running minimum and Holm's correction across all statistical rules of all
metrics, then turns adjusted p-values into outcomes (neither small: Inconclusive).
"""

from __future__ import annotations

import math
from dataclasses import replace

from stt_operator.analysis.model import HIGHER, AnalysisContext, MetricResult, MetricRule, RuleCheck
from stt_operator.analysis.presets import CountData, Data, HistogramData, RatioData, ScalarData
from stt_operator.stats import histogram as hist
from stt_operator.stats.counts import compare_event_rates, proportion_difference_se
from stt_operator.stats.ratio import (
    one_sample,
    paired_difference,
    paired_relative,
    unpaired_difference,
    unpaired_relative,
)
from stt_operator.stats.results import Comparison, NotEnoughData
from stt_operator.stats.sequential import default_tuning_n, effective_n

NO_RULE = "no-harm"  # no rule given: fail only when significantly worse than the baseline


class RuleError(ValueError):
    """A rule that cannot be applied to this metric (e.g. relative without a baseline)."""


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if unit == "ms":
        return f"{v:.1f}ms"
    return f"{v:.4g}"


def _tuning(rule: MetricRule, ctx: AnalysisContext, arms: int) -> float:
    return ctx.tuning_n if ctx.tuning_n is not None else default_tuning_n(rule.min_samples, arms)


def _not_enough(rule: MetricRule, have: dict[str, float], unit: str) -> MetricResult | None:
    need = {k: float(rule.min_samples) for k in have}
    if all(have[k] >= rule.min_samples for k in have):
        return None
    ned = NotEnoughData(f"not enough {unit} yet", have=have, need=need)
    return MetricResult(
        rule.name,
        "Inconclusive",
        f"{rule.name}: {ned.explain()}",
        samples=have,
        details={"missing": ned.missing},
    )


def _no_data(rule: MetricRule, why: str, have: dict[str, float], **kw: float | None) -> MetricResult:
    """Data that cannot be judged (empty denominators, inconsistent counters): NoData, never a
    verdict, with the reason."""
    return MetricResult(rule.name, "NoData", f"{rule.name} NoData: {why}", samples=have, **kw)  # type: ignore[arg-type]


def _ab_confidence(ctx: AnalysisContext) -> float:
    """A/B verdicts spend alpha/2 per side (a winner either way): their interval has alpha/2 ends."""
    return 1.0 - (1.0 - ctx.confidence) / 2.0


def _sides(c: Comparison, worse_is_greater: bool) -> tuple[float, float]:
    """(p_fail, p_pass) from a comparison whose test statistic is (effect - bound)."""
    return (c.p_greater, c.p_less) if worse_is_greater else (c.p_less, c.p_greater)


def judge_ratio(rule: MetricRule, d: RatioData, ctx: AnalysisContext) -> MetricResult:
    cand, base, ps = d.candidate, d.baseline, d.paired
    have = {"candidate": ps.n if ps else cand.n}
    if base is not None:
        have["baseline"] = ps.n if ps else base.n
    ne = _not_enough(rule, have, d.unit or "samples")
    if ne is not None:
        return replace(ne, value=cand.ratio, baseline=base.ratio if base else None)
    values = {"value": cand.ratio, "baseline": base.ratio if base else None}
    arms = [("candidate", cand)] + ([("baseline", base)] if base is not None else [])
    for arm, rs in arms:
        if not rs.sum_y > 0:
            what = (
                "reference length"
                if d.unit == "utterances" and rule.preset in ("wer", "cer")
                else "denominator"
            )
            return _no_data(
                rule, f"empty {what} for the {arm} (sum is {rs.sum_y:g}): nothing to judge", have, **values
            )
    for why in [rs.inconsistency(f"{arm} ") for arm, rs in arms] + [ps.inconsistency() if ps else None]:
        if why:
            return _no_data(rule, why, have, **values)
    lower = rule.direction != HIGHER
    kw = {"confidence": ctx.confidence, "tuning_n": _tuning(rule, ctx, 1 if ps else 2)}
    checks: list[RuleCheck] = []
    main: Comparison | None = None
    details: dict[str, object] = {}
    if base is not None:
        main = paired_difference(ps, **kw) if ps else unpaired_difference(cand, base, **kw)
        kw_ab = {**kw, "confidence": _ab_confidence(ctx)}
        ab = paired_difference(ps, **kw_ab) if ps else unpaired_difference(cand, base, **kw_ab)
        details["ci_ab"] = (ab.ci_low, ab.ci_high)
    for bound, is_max in ((rule.threshold_max, True), (rule.threshold_min, False)):
        if bound is None:
            continue
        c = one_sample(
            cand.ratio, cand.se, cand.n, null=bound, confidence=ctx.confidence, tuning_n=_tuning(rule, ctx, 1)
        )
        pf, pp = _sides(c, worse_is_greater=is_max)
        checks.append(RuleCheck(f"threshold {'max' if is_max else 'min'} {bound:g}", True, pf, pp))
    if rule.max_relative_increase is not None:
        if base is None:
            raise RuleError("maxRelativeIncrease needs a baseline variant")
        r = rule.max_relative_increase if lower else -rule.max_relative_increase
        c = (
            paired_relative(ps, max_increase=r, **kw)
            if ps
            else unpaired_relative(cand, base, max_increase=r, **kw)
        )
        pf, pp = _sides(c, worse_is_greater=lower)
        checks.append(
            RuleCheck(
                f"maxRelativeIncrease {rule.max_relative_increase:g}",
                True,
                pf,
                pp,
                detail=f"relative {c.estimate:+.1%}",
            )
        )
    if rule.non_inferiority_margin is not None:
        if base is None:
            raise RuleError("nonInferiorityMargin needs a baseline variant")
        m = rule.non_inferiority_margin if lower else -rule.non_inferiority_margin
        c = paired_difference(ps, null=m, **kw) if ps else unpaired_difference(cand, base, null=m, **kw)
        pf, pp = _sides(c, worse_is_greater=lower)
        checks.append(RuleCheck(f"nonInferiorityMargin {rule.non_inferiority_margin:g}", True, pf, pp))
    if not checks and main is not None:
        # No rule: fail when significantly worse, never pass (there is nothing to pass).
        pf, _ = _sides(main, worse_is_greater=lower)
        checks.append(RuleCheck(NO_RULE, True, pf, 1.0))
    return MetricResult(
        rule.name,
        "Inconclusive",
        "",
        value=cand.ratio,
        baseline=base.ratio if base else None,
        effect=main.estimate if main else None,
        ci_low=main.ci_low if main else None,
        ci_high=main.ci_high if main else None,
        samples=have,
        method=main.method if main else "one-sample",
        checks=tuple(checks),
        details={"se": cand.se, "paired": ps is not None, **_main_p(main), **details},
    )


def _main_p(c: Comparison | None) -> dict[str, float]:
    """The candidate-vs-baseline comparison's own always-valid p-values (not Holm-adjusted), for
    A/B verdicts: `p_higher` small means the candidate's value is higher than the baseline's."""
    if c is None:
        return {}
    return {"p_two_sided": c.p_value, "p_higher": c.p_greater, "p_lower": c.p_less}


def judge_histogram(rule: MetricRule, d: HistogramData, ctx: AnalysisContext) -> MetricResult:
    q = d.quantile
    have = {"candidate": d.candidate.total}
    if d.baseline is not None:
        have["baseline"] = d.baseline.total
    value_ms = hist.quantile(d.candidate, q) * 1000.0
    base_ms = hist.quantile(d.baseline, q) * 1000.0 if d.baseline is not None else None
    ne = _not_enough(rule, have, "requests")
    if ne is not None:
        return replace(ne, value=value_ms, baseline=base_ms)
    if rule.threshold_min is not None:
        raise RuleError("thresholdRange.min is not supported for latency presets")
    kw = {"confidence": ctx.confidence, "tuning_n": _tuning(rule, ctx, 1)}
    bounds: list[tuple[str, float]] = []
    if rule.threshold_max is not None:
        bounds.append((f"threshold max {rule.threshold_max:g}ms", rule.threshold_max / 1000.0))
    relative = rule.max_relative_increase is not None or rule.non_inferiority_margin is not None
    if relative and base_ms is None:
        raise RuleError("relative / non-inferiority latency rules need a baseline variant")
    checks: list[RuleCheck] = []
    for label, c in bounds:
        # "p_q <= c" <=> share above c <= 1 - q; snap to bucket bounds on the conservative side.
        up, share_up, pf, _ = hist.one_sample_exceedance(d.candidate, c, 1 - q, snap="up", **kw)
        _, _, _, pp = hist.one_sample_exceedance(d.candidate, c, 1 - q, snap="down", **kw)
        checks.append(
            RuleCheck(label, True, pf, pp, detail=f"{share_up:.1%} above {up * 1000:g}ms (limit {1 - q:.0%})")
        )
    if d.baseline is not None and base_ms is not None:
        # Relative and margin rules: the baseline quantile is an estimate too (two-sample test,
        # one fixed null per rule across looks: Q_c <= (1 + r) Q_b, Q_c <= Q_b + m).
        kw2 = {"confidence": ctx.confidence, "tuning_n": _tuning(rule, ctx, 2)}
        two: list[tuple[str, float, float]] = []
        if rule.max_relative_increase is not None:
            two.append(
                (f"maxRelativeIncrease {rule.max_relative_increase:g}", 1 + rule.max_relative_increase, 0.0)
            )
        if rule.non_inferiority_margin is not None:
            two.append(
                (
                    f"nonInferiorityMargin {rule.non_inferiority_margin:g}ms",
                    1.0,
                    rule.non_inferiority_margin / 1000.0,
                )
            )
        for label, factor, shift in two:
            up_t = hist.two_sample_quantile_test(
                d.candidate, d.baseline, q, factor=factor, shift=shift, snap="up", **kw2
            )
            dn_t = hist.two_sample_quantile_test(
                d.candidate, d.baseline, q, factor=factor, shift=shift, snap="down", **kw2
            )
            checks.append(
                RuleCheck(
                    label,
                    True,
                    up_t.p_greater,
                    dn_t.p_less,
                    detail=f"{up_t.candidate_share:.1%} above {up_t.bound * 1000:g}ms (limit {1 - q:.0%}, "
                    "baseline quantile estimated)",
                )
            )
    details: dict[str, object] = {"quantile_ci_ms": tuple(x * 1000 for x in hist.quantile_ci(d.candidate, q))}
    effect = ci_low = ci_high = None
    if d.baseline is not None and base_ms is not None:
        tail = hist.tail_exceedance_test(
            d.candidate,
            d.baseline,
            base_ms / 1000.0,
            confidence=ctx.confidence,
            tuning_n=_tuning(rule, ctx, 2),
        )
        chi = hist.chi_square_buckets(d.candidate, d.baseline)
        mw = hist.mann_whitney_buckets(d.candidate, d.baseline)
        effect, ci_low, ci_high = tail.estimate, tail.ci_low, tail.ci_high
        details |= {"p_two_sided": tail.p_value, "p_higher": tail.p_greater, "p_lower": tail.p_less}
        tail_ab = hist.tail_exceedance_test(
            d.candidate,
            d.baseline,
            base_ms / 1000.0,
            confidence=_ab_confidence(ctx),
            tuning_n=_tuning(rule, ctx, 2),
        )
        details["ci_ab"] = (tail_ab.ci_low, tail_ab.ci_high)
        details |= {
            "tail_threshold_ms": tail.threshold * 1000,
            "tail_candidate": tail.candidate_share,
            "tail_baseline": tail.baseline_share,
            "tail_p": tail.p_value,
            "chi2_p": chi.p_value,
            "chi2_buckets": chi.buckets_used,
            "mann_whitney_p": mw.p_value,
            "prob_candidate_slower": mw.prob_candidate_slower,
        }
        if not checks:
            checks.append(
                RuleCheck(
                    NO_RULE,
                    True,
                    tail.p_greater,
                    1.0,
                    detail=f"tail above {tail.threshold * 1000:g}ms "
                    f"{tail.candidate_share:.1%} vs {tail.baseline_share:.1%}",
                )
            )
    return MetricResult(
        rule.name,
        "Inconclusive",
        "",
        value=value_ms,
        baseline=base_ms,
        effect=effect,
        ci_low=ci_low,
        ci_high=ci_high,
        samples=have,
        method="histogram-tail",
        checks=tuple(checks),
        details=details,
    )


def judge_counts(rule: MetricRule, d: CountData, ctx: AnalysisContext) -> MetricResult:
    have = {"candidate": d.candidate_exposure}
    if d.baseline_exposure is not None:
        have["baseline"] = d.baseline_exposure
    rate = d.candidate_events / d.candidate_exposure if d.candidate_exposure > 0 else math.nan
    base_rate = None
    if d.baseline_events is not None and d.baseline_exposure:
        base_rate = d.baseline_events / d.baseline_exposure
    ne = _not_enough(rule, have, "requests")
    if ne is not None:
        return replace(ne, value=rate, baseline=base_rate)
    for arm, ev, ex in (
        ("candidate", d.candidate_events, d.candidate_exposure),
        ("baseline", d.baseline_events, d.baseline_exposure),
    ):
        if ev is not None and ex is not None and not (0 <= ev <= ex * (1 + 1e-9) + 1e-9):
            why = f"inconsistent counters for the {arm}: {ev:g} failures out of {ex:g} requests"
            return _no_data(rule, why, have, value=rate, baseline=base_rate)
    checks: list[RuleCheck] = []
    n = d.candidate_exposure
    for bound, is_max in ((rule.threshold_max, True), (rule.threshold_min, False)):
        if bound is None:
            continue
        b = min(max(bound, 1e-9), 1 - 1e-9)
        # Score test: the variance under the null (the bound), never zero for a clean arm.
        c = one_sample(
            rate,
            math.sqrt(b * (1 - b) / n),
            n,
            null=bound,
            confidence=ctx.confidence,
            tuning_n=_tuning(rule, ctx, 1),
        )
        pf, pp = _sides(c, worse_is_greater=is_max)
        checks.append(RuleCheck(f"threshold {'max' if is_max else 'min'} {bound:g}", True, pf, pp))
    effect = ci_low = ci_high = None
    details: dict[str, object] = {"source": d.source}
    if d.baseline_events is not None and d.baseline_exposure:
        nb, xc, xb = d.baseline_exposure, d.candidate_events, d.baseline_events
        t = float(effective_n(n, nb))
        se = proportion_difference_se(xc, n, xb, nb)
        kw = {"tuning_n": _tuning(rule, ctx, 2), "method": "two-proportion"}
        diff = one_sample(rate - base_rate, se, t, null=0.0, confidence=ctx.confidence, **kw)  # type: ignore[operator, arg-type]
        ab = one_sample(rate - base_rate, se, t, null=0.0, confidence=_ab_confidence(ctx), **kw)  # type: ignore[operator, arg-type]
        effect, ci_low, ci_high = diff.estimate, diff.ci_low, diff.ci_high
        details["ci_ab"] = (ab.ci_low, ab.ci_high)
        # Which arm each error came from (Lindon & Malek), conditioned on the errors: exact for
        # rare events and unequal arms, never a zero-variance arm (docs/statistics.md).
        same = compare_event_rates(xc, n, xb, nb)
        details |= {"p_two_sided": same.p_value, "p_higher": same.p_greater, "p_lower": same.p_less}
        details["multinomial_p"] = same.p_value
        r = rule.max_relative_increase if rule.max_relative_increase is not None else 0.0
        if xc + xb > 0:
            mt = compare_event_rates(xc, (1 + r) * n, xb, nb) if r else same
            if rule.max_relative_increase is not None:
                checks.append(RuleCheck(f"maxRelativeIncrease {r:g}", True, mt.p_greater, mt.p_less))
            elif not rule.has_rule:
                checks.append(RuleCheck(NO_RULE, True, mt.p_greater, 1.0))
        elif rule.max_relative_increase is not None or not rule.has_rule:
            # Not one error in either arm: a rate ratio is undefined and there is no evidence
            # either way. Open, never Passed; thresholdRange.max can pass a clean candidate.
            label = f"maxRelativeIncrease {r:g}" if rule.has_rule else NO_RULE
            checks.append(
                RuleCheck(
                    label, True, 1.0, 1.0, detail="no errors in either arm: no evidence on a relative rule"
                )
            )
        if rule.non_inferiority_margin is not None:
            c = one_sample(
                rate - base_rate,  # type: ignore[operator]
                se,
                t,
                null=rule.non_inferiority_margin,
                confidence=ctx.confidence,
                **kw,  # type: ignore[arg-type]
            )
            checks.append(
                RuleCheck(
                    f"nonInferiorityMargin {rule.non_inferiority_margin:g}", True, c.p_greater, c.p_less
                )
            )
    elif rule.max_relative_increase is not None or rule.non_inferiority_margin is not None:
        raise RuleError("relative / non-inferiority error-rate rules need a baseline variant")
    return MetricResult(
        rule.name,
        "Inconclusive",
        "",
        value=rate,
        baseline=base_rate,
        effect=effect,
        ci_low=ci_low,
        ci_high=ci_high,
        samples=have,
        method="sequential-multinomial",
        checks=tuple(checks),
        details=details,
    )


def judge_scalar(rule: MetricRule, d: ScalarData, ctx: AnalysisContext) -> MetricResult:
    """Custom queries have no variance: plain point comparisons (Flagger-style)."""
    v, b = d.candidate, d.baseline
    lower = rule.direction != HIGHER
    checks: list[RuleCheck] = []

    def point(label: str, ok: bool, detail: str) -> None:
        checks.append(RuleCheck(label, False, verdict="Passed" if ok else "Failed", detail=detail))

    if rule.threshold_max is not None:
        point(
            f"threshold max {rule.threshold_max:g}",
            v <= rule.threshold_max,
            f"{v:.4g} <= {rule.threshold_max:g}",
        )
    if rule.threshold_min is not None:
        point(
            f"threshold min {rule.threshold_min:g}",
            v >= rule.threshold_min,
            f"{v:.4g} >= {rule.threshold_min:g}",
        )
    if rule.max_relative_increase is not None or rule.non_inferiority_margin is not None:
        if b is None:
            raise RuleError("relative / non-inferiority rules need a baseline variant")
        if rule.max_relative_increase is not None:
            r = rule.max_relative_increase
            limit = (1 + r) * b if lower else (1 - r) * b
            point(
                f"maxRelativeIncrease {r:g}",
                v <= limit if lower else v >= limit,
                f"{v:.4g} vs limit {limit:.4g}",
            )
        if rule.non_inferiority_margin is not None:
            m = rule.non_inferiority_margin
            limit = b + m if lower else b - m
            point(
                f"nonInferiorityMargin {m:g}",
                v <= limit if lower else v >= limit,
                f"{v:.4g} vs limit {limit:.4g}",
            )
    if not checks:
        point(NO_RULE, True, "no rule: value recorded only")
    return MetricResult(
        rule.name,
        "Inconclusive",
        "",
        value=v,
        baseline=b,
        effect=(v - b) if b is not None else None,
        method="point",
        checks=tuple(checks),
    )


def judge(rule: MetricRule, data: Data, ctx: AnalysisContext) -> MetricResult:
    if isinstance(data, RatioData):
        return judge_ratio(rule, data, ctx)
    if isinstance(data, HistogramData):
        return judge_histogram(rule, data, ctx)
    if isinstance(data, CountData):
        return judge_counts(rule, data, ctx)
    return judge_scalar(rule, data, ctx)


def rule_labels(rule: MetricRule, has_baseline: bool) -> list[str]:
    """The statistical rules (check labels) `judge` gives this metric, whatever the data: the
    engine's Holm family is fixed to these over the analysis's life (custom queries: none)."""
    if rule.query is not None or rule.preset is None:
        return []
    ms = "ms" if rule.preset in ("latency-p95", "latency-p99") else ""
    out: list[str] = []
    if rule.threshold_max is not None:
        out.append(f"threshold max {rule.threshold_max:g}{ms}")
    if rule.threshold_min is not None and not ms:
        out.append(f"threshold min {rule.threshold_min:g}")
    if rule.max_relative_increase is not None:
        out.append(f"maxRelativeIncrease {rule.max_relative_increase:g}")
    if rule.non_inferiority_margin is not None:
        out.append(f"nonInferiorityMargin {rule.non_inferiority_margin:g}{ms}")
    if not rule.has_rule and has_baseline:
        out.append(NO_RULE)
    return out


def value_unit(rule: MetricRule) -> str:
    return "ms" if rule.preset in ("latency-p95", "latency-p99") else ""


def summarize(result: MetricResult, rule: MetricRule, confidence: float) -> str:
    """One line for a status condition or an Event."""
    unit = value_unit(rule)
    parts = [f"{rule.name} {result.outcome}: candidate {_fmt(result.value, unit)}"]
    if result.baseline is not None:
        parts[0] += f" vs baseline {_fmt(result.baseline, unit)}"
    if result.effect is not None and result.ci_low is not None and not math.isnan(result.ci_low):
        kind = "paired diff" if result.details.get("paired") else "diff"
        if result.method == "histogram-tail":
            kind = "tail-share diff"
        parts.append(
            f"{kind} {result.effect:+.4g} [{confidence:.0%} CS {result.ci_low:+.4g}, {result.ci_high:+.4g}]"
        )
    for c in result.checks:
        if c.statistical and c.verdict == "Failed":
            rule_txt = f"{c.rule} failed (p={c.p_fail:.2g})"
        elif c.statistical and c.verdict == "Passed":
            rule_txt = f"{c.rule} passed (p={c.p_pass:.2g})"
        elif c.statistical:
            rule_txt = f"{c.rule} open (p_fail={c.p_fail:.2g}, p_pass={c.p_pass:.2g})"
        else:
            rule_txt = f"{c.rule} {c.verdict.lower() if c.verdict else 'open'}"
        if c.detail:
            rule_txt += f", {c.detail}"
        parts.append(rule_txt)
    return "; ".join(parts)
