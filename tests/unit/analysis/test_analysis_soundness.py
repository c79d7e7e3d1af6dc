"""Verdict soundness defects of issue 14, one test per class (each failed before the fix)."""

from __future__ import annotations

import gc
import math
from dataclasses import replace

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from stt_operator.analysis.ab_verdict import decide_ab
from stt_operator.analysis.engine import finalize
from stt_operator.analysis.judge import judge, rule_labels
from stt_operator.analysis.model import AnalysisContext, Arm, MetricResult, MetricRule
from stt_operator.analysis.presets import CountData, HistogramData, RatioData
from stt_operator.api.common import MetricSpec
from stt_operator.stats import multiple
from stt_operator.stats.histogram import Buckets
from stt_operator.stats.ratio import PairedStats, RatioStats, paired_difference
from stt_operator.stats.sequential import effective_n

CTX = AnalysisContext(namespace="ns", endpoint="ep", candidate=Arm("canary"), baseline=Arm("stable"))


def _run(specs: list[dict], data: list, ctx: AnalysisContext = CTX) -> list[MetricResult]:
    rules = [MetricRule.from_spec(MetricSpec.model_validate(s)) for s in specs]
    provisional = [judge(r, d, ctx) for r, d in zip(rules, data, strict=True)]
    return finalize(provisional, {r.name: r for r in rules}, ctx)


def _corpus(seed: int, n: int, p_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 30, n)
    errors = rng.binomial(lengths, np.clip(rng.beta(1, 8, n) * p_scale, 0, 1))
    return errors, lengths


# --- error rates: rare events, unequal arms -----------------------------------------------------


def test_zero_failure_arm_is_not_a_winner_on_rare_events() -> None:
    # 0/500 vs 22/4500: an exact test gives p ~ 0.08; the unpooled Wald z called it at 6e-5.
    spec = {"name": "errors", "preset": "error-rate", "maxRelativeIncrease": 0.5, "minSamples": 100}
    (res,) = _run([spec], [CountData(0, 500, 22, 4500, "triton")])
    assert res.details["p_lower"] > 0.05
    d = decide_ab("stable", {"canary": res})
    assert d.outcome == "Inconclusive" and d.winner is None


def test_twelve_failures_against_none_are_detected() -> None:
    # 12 vs 0 failures in 2,000 requests (Fisher one-sided 0.00024): fails the no-regression rule,
    # and the control wins the A/B (the single wide prior gave p = 0.059).
    spec = {"name": "errors", "preset": "error-rate", "maxRelativeIncrease": 0.0, "minSamples": 100}
    (res,) = _run([spec], [CountData(12, 1000, 0, 1000, "triton")])
    assert res.outcome == "Failed" and res.p_value is not None and res.p_value < 0.01, res.message
    d = decide_ab("stable", {"canary": res})
    assert d.outcome == "Winner" and d.winner == "stable"


def test_error_rate_interval_is_never_zero_width() -> None:
    spec = {"name": "errors", "preset": "error-rate", "nonInferiorityMargin": 0.001, "minSamples": 100}
    (res,) = _run([spec], [CountData(0, 3000, 0, 3000, "triton")])
    assert res.ci_low is not None and res.ci_high is not None and res.ci_high - res.ci_low > 1e-4


# --- A/B: alpha/2 per side ----------------------------------------------------------------------


def _primary(p_lower: float, p_higher: float) -> MetricResult:
    return MetricResult(
        "wer",
        "Inconclusive",
        "wer",
        effect=-0.01,
        ci_low=-0.02,
        ci_high=-0.001,
        details={"p_lower": p_lower, "p_higher": p_higher},
    )


def test_ab_spends_half_alpha_per_side() -> None:
    # One-sided p = 0.04 in either direction is not a winner at alpha = 0.05 (two sides: 2 alpha).
    assert decide_ab("a", {"b": _primary(0.04, 1.0)}, alpha=0.05).outcome == "Inconclusive"
    assert decide_ab("a", {"b": _primary(1.0, 0.04)}, alpha=0.05).outcome == "Inconclusive"
    win = decide_ab("a", {"b": _primary(0.02, 1.0)}, alpha=0.05)
    assert win.outcome == "Winner" and win.p_value == pytest.approx(0.04)


# --- zero-error arms, inconsistent counters, empty denominators, no evidence -------------------


def test_perfect_baseline_does_not_block_a_relative_rule() -> None:
    e, n = _corpus(1, 2000)
    cand = RatioStats.from_arrays(e, n)
    perfect = RatioStats.from_arrays(np.zeros_like(e), n)
    spec = {"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.1}
    (unpaired,) = _run([spec], [RatioData(cand, perfect, None, "utterances")])
    assert unpaired.outcome == "Failed", unpaired.message
    ps = PairedStats.from_arrays(e, np.zeros_like(e), n)
    (paired,) = _run([spec], [RatioData(ps.candidate, ps.baseline, ps, "utterances")])
    assert paired.outcome == "Failed", paired.message


def test_stuck_sum_of_squares_counters_are_no_data() -> None:
    c, n = _corpus(2, 1500, 1.3)
    b, _ = _corpus(3, 1500)
    ps = PairedStats.from_arrays(c, b, n)
    stuck = PairedStats.from_exported(
        pairs=ps.n,
        sum_len=ps.sum_len,
        sum_len_sq=ps.sum_len_sq,
        sum_cand=ps.sum_c,
        sum_base=ps.sum_b,
        sum_diff_sq=0.0,  # stuck at zero: Σd² < (Σd)²/N
        sum_cand_sq=ps.sum_cc,
        sum_base_sq=ps.sum_bb,
        sum_cand_len=ps.sum_cn,
        sum_base_len=ps.sum_bn,
    )
    assert stuck.inconsistency() is not None
    spec = {"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.05}
    (res,) = _run([spec], [RatioData(stuck.candidate, stuck.baseline, stuck, "utterances")])
    assert res.outcome == "NoData" and "Σd²" in res.message, res.message
    flat = RatioStats(1500.0, ps.sum_c, ps.sum_len, 0.0, ps.sum_len_sq, ps.sum_cn)  # Σe² stuck
    (res2,) = _run([spec], [RatioData(flat, ps.baseline, None, "utterances")])
    assert res2.outcome == "NoData" and "inconsistent candidate counters" in res2.message


def test_no_reference_words_is_no_data() -> None:
    empty = RatioStats(500.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    spec = {"name": "wer", "preset": "wer", "thresholdRange": {"max": 0.2}}
    (res,) = _run([spec], [RatioData(empty, empty, None, "utterances")])
    assert res.outcome == "NoData" and "empty reference length" in res.message


def test_no_rule_is_never_passed() -> None:
    e, n = _corpus(4, 3000)
    rs = RatioStats.from_arrays(e, n)
    (res,) = _run([{"name": "wer", "preset": "wer"}], [RatioData(rs, rs, None, "utterances")])
    assert res.outcome == "Inconclusive", res.message
    (err,) = _run([{"name": "errors", "preset": "error-rate"}], [CountData(5, 5000, 5, 5000, "triton")])
    assert err.outcome == "Inconclusive", err.message


# --- latency: the baseline quantile is an estimate ----------------------------------------------


def _latency(rng: np.random.Generator, n: int) -> Buckets:
    edges = np.linspace(0.01, 2.0, 200)
    idx = np.searchsorted(edges, rng.lognormal(-1.5, 0.5, n))
    return Buckets(np.array([*edges, math.inf]), np.bincount(idx, minlength=201).astype(float))


def test_relative_latency_rule_accounts_for_the_baseline_uncertainty() -> None:
    # Same distribution, a small baseline (400 requests) against a large candidate: treating the
    # baseline p95 as known fails about a third of these; the two-sample test none.
    spec = {"name": "p95", "preset": "latency-p95", "maxRelativeIncrease": 0.0}
    failed = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        (res,) = _run([spec], [HistogramData(_latency(rng, 20000), _latency(rng, 400), 0.95)])
        failed += res.outcome == "Failed"
    assert failed <= 2


# --- intervals, tuning, Holm --------------------------------------------------------------------


def test_interval_matches_the_one_sided_decision() -> None:
    # Seeds 51, 61, 89, 142, 147 gave a significant one-sided p with a two-sided interval below 0.
    for seed in [*range(40), 51, 61, 89, 142, 147]:
        c, n = _corpus(100 + seed, 800, 1.12)
        b, _ = _corpus(200 + seed, 800)
        ps = PairedStats.from_arrays(c, b, n)
        comp = paired_difference(ps, confidence=0.95, tuning_n=800)
        assert (comp.p_greater < 0.05) == (comp.ci_low > 0), (seed, comp.p_greater, comp.ci_low)
        assert (comp.p_less < 0.05) == (comp.ci_high < 0)


def test_effective_n_for_unequal_arms() -> None:
    assert effective_n(500, 500) == pytest.approx(1000)
    assert effective_n(100, 900) == pytest.approx(360)
    assert effective_n(0, 900) == 0.0


def test_holm_family_is_fixed_over_looks() -> None:
    # A metric still waiting for data stays in the family: the other is adjusted for two rules.
    e, n = _corpus(5, 1500, 1.15)
    b, _ = _corpus(6, 1500)
    weak = RatioData(RatioStats.from_arrays(e, n), RatioStats.from_arrays(b, n), None, "utterances")
    few = RatioData(RatioStats.from_arrays(e[:50], n[:50]), RatioStats.from_arrays(b[:50], n[:50]))
    specs = [
        {"name": "a", "preset": "wer", "nonInferiorityMargin": 0.0},
        {"name": "b", "preset": "cer", "nonInferiorityMargin": 0.0},
    ]
    a, waiting = _run(specs, [weak, few])
    assert waiting.outcome == "Inconclusive" and "not enough" in waiting.message
    raw = a.details["p_raw"]["nonInferiorityMargin 0"][0]
    assert a.checks[0].p_fail == pytest.approx(min(1.0, 2 * raw))
    # The waiting metric keeps its running minimum for the next look.
    ctx = replace(CTX, previous_p={"b/nonInferiorityMargin 0": (0.3, 0.9)})
    _, waiting2 = _run(specs, [weak, few], ctx)
    assert waiting2.details["p_raw"] == {"nonInferiorityMargin 0": (0.3, 0.9)}


def test_rule_labels_match_the_judged_checks() -> None:
    e, n = _corpus(7, 600)
    rs = RatioStats.from_arrays(e, n)
    rng = np.random.default_rng(0)
    cases = [
        ({"preset": "wer", "thresholdRange": {"max": 0.3}, "maxRelativeIncrease": 0.1}, RatioData(rs, rs)),
        ({"preset": "cer", "nonInferiorityMargin": 0.01}, RatioData(rs, rs)),
        (
            {"preset": "latency-p95", "thresholdRange": {"max": 900}, "nonInferiorityMargin": 20},
            HistogramData(_latency(rng, 900), _latency(rng, 900), 0.95),
        ),
        (
            {"preset": "error-rate", "maxRelativeIncrease": 0.2, "thresholdRange": {"max": 0.01}},
            CountData(3, 900, 2, 900),
        ),
        ({"preset": "confidence"}, RatioData(rs, rs)),
    ]
    for spec, data in cases:
        rule = MetricRule.from_spec(MetricSpec.model_validate({"name": "m", **spec}))
        got = [c.rule for c in judge(rule, data, CTX).checks if c.statistical]
        assert got == rule_labels(rule, True), spec


def test_holm_matches_statsmodels_without_garbage_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 0.2, 9)
    _, expected, _, _ = multipletests(p, alpha=0.05, method="holm")

    def no_gc(*_: object) -> int:
        raise AssertionError("holm must not run a garbage collection")

    monkeypatch.setattr(gc, "collect", no_gc)
    got = multiple.holm({str(i): float(v) for i, v in enumerate(p)}, 0.05)
    assert [got[str(i)][0] for i in range(9)] == pytest.approx(list(expected))
