"""Judging typed data into outcomes (Holm, running minimum, messages) and the policy layer."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from stt_operator.analysis.engine import finalize
from stt_operator.analysis.judge import judge
from stt_operator.analysis.model import AnalysisContext, Arm, MetricResult, MetricRule
from stt_operator.analysis.policy import PolicySpec, decide
from stt_operator.analysis.presets import CountData, HistogramData, RatioData, ScalarData
from stt_operator.analysis.verdicts import aggregate
from stt_operator.api.common import AnalysisSpec, MetricSpec
from stt_operator.stats.histogram import Buckets
from stt_operator.stats.ratio import PairedStats

CTX = AnalysisContext(namespace="ns", endpoint="ep", candidate=Arm("canary"), baseline=Arm("stable"))


def _paired(extra: float, n: int = 1500, seed: int = 0) -> PairedStats:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 30, n)
    base = rng.binomial(lengths, rng.beta(2, 16, n))
    cand = base + rng.binomial(lengths, extra) - rng.binomial(base, 0.02)
    return PairedStats.from_arrays(np.maximum(cand, 0), base, lengths)


def _run(specs: list[dict], data: list, ctx: AnalysisContext = CTX) -> list[MetricResult]:
    rules = [MetricRule.from_spec(MetricSpec.model_validate(s)) for s in specs]
    provisional = [judge(r, d, ctx) for r, d in zip(rules, data, strict=True)]
    return finalize(provisional, {r.name: r for r in rules}, ctx)


def _ratio(ps: PairedStats, paired: bool = True) -> RatioData:
    return RatioData(ps.candidate, ps.baseline, ps if paired else None, "utterances")


def test_clear_regression_fails_with_an_explaining_line() -> None:
    (res,) = _run([{"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.05}], [_ratio(_paired(0.03))])
    assert res.outcome == "Failed"
    assert res.message.startswith("wer Failed: candidate 0.")
    assert "paired diff" in res.message and "maxRelativeIncrease 0.05 failed (p=" in res.message
    assert res.p_value is not None and res.p_value < 0.05


def test_equivalent_model_passes_non_inferiority() -> None:
    (res,) = _run([{"name": "wer", "preset": "wer", "nonInferiorityMargin": 0.01}], [_ratio(_paired(0.0))])
    assert res.outcome == "Passed", res.message
    assert res.ci_low is not None and res.ci_high is not None and res.ci_high < 0.01


def test_not_enough_data_is_inconclusive_with_numbers() -> None:
    spec = {"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.05, "minSamples": 500}
    (res,) = _run([spec], [_ratio(_paired(0.03, n=120))])
    assert res.outcome == "Inconclusive"
    assert res.message == "wer: not enough utterances yet (candidate 120/500, baseline 120/500)"
    assert res.details["missing"] == {"candidate": 380.0, "baseline": 380.0}


def test_holm_across_metrics_and_running_minimum() -> None:
    weak = _ratio(_paired(0.004, n=900, seed=3), paired=False)
    specs = [{"name": f"m{i}", "preset": "wer", "nonInferiorityMargin": 0.0} for i in range(4)]
    alone = _run(specs[:1], [weak])[0]
    together = _run(specs, [weak] * 4)[0]
    raw = alone.details["p_raw"]["nonInferiorityMargin 0"][0]
    assert together.checks[0].p_fail == pytest.approx(min(1.0, 4 * raw))
    # A smaller p-value seen at an earlier look is carried forward.
    ctx = replace(CTX, previous_p={"m0/nonInferiorityMargin 0": (1e-6, 1.0)})
    carried = _run(specs[:1], [weak], ctx)[0]
    assert carried.outcome == "Failed" and carried.checks[0].p_fail == pytest.approx(1e-6)


def test_relative_rule_without_baseline_is_a_rule_error() -> None:
    from stt_operator.analysis.judge import RuleError

    ps = _paired(0.0)
    with pytest.raises(RuleError, match="needs a baseline"):
        judge(
            MetricRule.from_spec(
                MetricSpec.model_validate({"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.1})
            ),
            RatioData(ps.candidate, None),
            CTX,
        )


def _hist(scale: float, n: int, seed: int) -> Buckets:
    rng = np.random.default_rng(seed)
    edges = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0])
    idx = np.searchsorted(edges, rng.gamma(4, scale, n))
    return Buckets(np.array([*edges, math.inf]), np.bincount(idx, minlength=10).astype(float))


def test_latency_rules() -> None:
    fast, slow = _hist(0.05, 5000, 1), _hist(0.09, 5000, 2)
    specs = [
        {"name": "p95", "preset": "latency-p95", "maxRelativeIncrease": 0.1},
        {"name": "p95max", "preset": "latency-p95", "thresholdRange": {"max": 1000}},
    ]
    bad, ok = _run(specs, [HistogramData(slow, fast, 0.95), HistogramData(fast, fast, 0.95)])
    assert bad.outcome == "Failed" and "ms vs baseline" in bad.message
    assert bad.details["tail_p"] < 0.01 and bad.details["mann_whitney_p"] < 0.01
    assert ok.outcome == "Passed"


def test_error_rate_and_custom_point_rules() -> None:
    specs = [
        {"name": "err", "preset": "error-rate", "maxRelativeIncrease": 0.2},
        {"name": "custom", "query": "x", "thresholdRange": {"max": 5}},
        {"name": "custom-rel", "query": "x", "maxRelativeIncrease": 0.1, "direction": "higher-is-better"},
    ]
    data = [CountData(150, 10000, 50, 10000, "triton"), ScalarData(7.0, 7.0), ScalarData(80.0, 100.0)]
    err, custom, rel = _run(specs, data)
    assert err.outcome == "Failed" and err.value == pytest.approx(0.015)
    assert custom.outcome == "Failed" and "7 <= 5" in custom.message
    assert rel.outcome == "Failed" and "limit 90" in rel.message
    (clean,) = _run(specs[:1], [CountData(0, 5000, 0, 5000, "triton")])
    # No error in either arm is no evidence on a relative rule (issue 14): open, never Passed.
    assert clean.outcome == "Inconclusive" and "no errors in either arm" in clean.message
    (few,) = _run(specs[:1], [CountData(0, 50, 0, 50, "triton")])
    assert few.outcome == "Inconclusive" and "not enough requests yet" in few.message


def test_aggregate_outcomes() -> None:
    assert aggregate(["Passed", "Failed", "NoData"]) == "Failed"
    assert aggregate(["Passed", "Error"]) == "Error"
    assert aggregate(["Passed", "NoData"]) == "NoData"
    assert aggregate(["Passed", "NoData"], "Ignore") == "Passed"
    assert aggregate(["NoData"], "Ignore") == "NoData"
    assert aggregate(["Passed", "Inconclusive"]) == "Inconclusive"
    assert aggregate([]) == "NoData"


def _policy(body: dict[str, object]) -> AnalysisSpec:
    """`spec.analysis` as the resource gives it (camelCase), through the API model."""
    return AnalysisSpec.model_validate(body)


def test_policy_decisions() -> None:
    spec = _policy({"failureLimit": 1, "consecutiveSuccessLimit": 2, "inconclusiveLimit": 3})
    assert decide([], spec).action == "Continue"
    assert decide(["Failed"], spec).action == "Continue"
    assert decide(["Failed", "Passed", "Failed"], spec).action == "Rollback"
    assert decide(["Inconclusive", "Passed"], spec).action == "Continue"
    assert decide(["Inconclusive", "Passed", "Passed"], spec).action == "Advance"
    assert decide(["Inconclusive"] * 4, spec).action == "Pause"
    assert decide(["Error"] * 3, spec).action == "Continue"
    assert decide(["Error"] * 4, spec).action == "Pause"


def test_missing_data_never_advances_or_rolls_back_by_default() -> None:
    d = decide(
        [{"outcome": "Passed"}, {"outcome": "NoData", "message": "no series"}],
        _policy({"consecutiveSuccessLimit": 1}),
    )
    assert d.action == "Pause" and "noDataPolicy=Pause" in d.reason and "no series" in d.reason
    assert decide(["NoData"] * 10, _policy({"noDataPolicy": "Ignore"})).action == "Continue"
    assert (
        decide(["NoData", "NoData"], _policy({"noDataPolicy": "Fail", "failureLimit": 1})).action
        == "Rollback"
    )
    with pytest.raises(ValueError, match="outcome 'Maybe'"):
        decide(["Maybe"])
    with pytest.raises(ValueError, match="noDataPolicy"):  # pydantic's ValidationError is a ValueError
        decide(["Passed"], _policy({"noDataPolicy": "Shrug"}))
    with pytest.raises(ValueError, match="noDataPolicy"):  # and PolicySpec checks itself too
        decide(["Passed"], PolicySpec(no_data_policy="Shrug"))


def test_single_arm_thresholds_without_baseline() -> None:
    ps = _paired(0.0, n=2000)
    ctx = AnalysisContext(namespace="ns", endpoint="ep", candidate=Arm("preview"))
    ok, bad = _run(
        [
            {"name": "wer-max", "preset": "wer", "thresholdRange": {"max": 0.3}},
            {"name": "wer-tight", "preset": "wer", "thresholdRange": {"max": 0.01}},
        ],
        [RatioData(ps.candidate, None), RatioData(ps.candidate, None)],
        ctx,
    )
    assert ok.outcome == "Passed" and ok.baseline is None and "threshold max 0.3 passed" in ok.message
    assert bad.outcome == "Failed"
