"""A/B verdicts from per-variant results: winner, control wins, equivalence, SRM hold."""

from __future__ import annotations

import numpy as np

from stt_operator.analysis.ab_verdict import decide_ab
from stt_operator.analysis.engine import finalize
from stt_operator.analysis.judge import judge
from stt_operator.analysis.model import AnalysisContext, Arm, MetricResult, MetricRule
from stt_operator.analysis.presets import RatioData
from stt_operator.api.common import MetricSpec
from stt_operator.stats.counts import sample_ratio_mismatch
from stt_operator.stats.ratio import PairedStats

RULE = MetricRule.from_spec(
    MetricSpec.model_validate({"name": "wer", "preset": "wer", "nonInferiorityMargin": 0.01})
)


def _result(variant: str, shift: float, seed: int, n: int = 3000) -> MetricResult:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 30, n)
    p = rng.beta(1, 8, n)
    base = rng.binomial(lengths, p)
    cand = rng.binomial(lengths, np.clip(p * (1 + shift), 0, 1))
    ps = PairedStats.from_arrays(cand, base, lengths)
    ctx = AnalysisContext(namespace="ns", endpoint="ep", candidate=Arm(variant), baseline=Arm("a"))
    (res,) = finalize(
        [judge(RULE, RatioData(ps.candidate, ps.baseline, ps, "utterances"), ctx)], {"wer": RULE}, ctx
    )
    return res


def test_better_variant_wins_and_reports_effect() -> None:
    d = decide_ab("a", {"b": _result("b", -0.25, 1), "c": _result("c", 0.0, 2)}, margin=0.01)
    assert d.outcome == "Winner" and d.winner == "b" and d.final
    assert d.effect is not None and d.effect < 0
    assert d.confidence_interval is not None and d.confidence_interval[1] < 0
    assert d.to_status()["outcome"] == "Winner" and "b beats a" in d.reason


def test_guardrail_failure_blocks_the_winner() -> None:
    d = decide_ab("a", {"b": _result("b", -0.25, 1)}, guardrail_failures={"b": ["latency-p95"]})
    assert d.outcome == "Inconclusive" and d.winner is None and "latency-p95" in d.reason


def test_control_wins_when_every_variant_is_worse() -> None:
    results = {"b": _result("b", 0.3, 3), "c": _result("c", 0.35, 4)}
    d = decide_ab("a", results)
    assert d.outcome == "Winner" and d.winner == "a"
    # Its effect and interval are those of the variant with the weakest evidence against it
    # (candidate - control > 0: worse), named in the reason.
    (closest,) = [v for v in results if f"closest {v}:" in d.reason]
    assert d.effect is not None and d.effect == results[closest].effect and d.effect > 0
    assert d.confidence_interval is not None and d.confidence_interval[0] > 0


def test_equivalence_and_end_without_difference() -> None:
    same = {"b": _result("b", 0.0, 5, n=6000)}
    assert decide_ab("a", same, margin=0.02).outcome == "NoDifference"
    running = decide_ab("a", same, margin=0.0001)
    assert running.outcome == "Inconclusive" and not running.final
    ended = decide_ab("a", same, margin=0.0001, ended=True)
    assert ended.outcome == "Inconclusive" and ended.final and "ended without" in ended.reason


def test_srm_and_missing_data_hold_the_decision() -> None:
    srm = sample_ratio_mismatch({"a": 12000, "b": 8000}, {"a": 50, "b": 50})
    held = decide_ab("a", {"b": _result("b", -0.25, 1)}, srm=srm)
    assert held.outcome == "Inconclusive" and "decision held: sample ratio mismatch" in held.reason
    nodata = MetricResult("wer", "NoData", "wer NoData: no series")
    assert "no series" in decide_ab("a", {"b": nodata}).reason
