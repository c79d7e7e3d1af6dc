"""Per-slice guardrails: the evaluator's sliced series, the engine's per-slice verdicts under
Holm, and bench/stats/slices.py at reduced size (family-wise false failures across slices stay
consistent with <= alpha; a one-slice regression the whole set hides is caught)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stt_operator import evalmetrics as em
from stt_operator.analysis.engine import finalize, slice_name
from stt_operator.analysis.judge import judge
from stt_operator.analysis.model import AnalysisContext, Arm, MetricRule
from stt_operator.analysis.presets import RatioData
from stt_operator.api.common import MetricSpec, ThresholdRange
from stt_operator.evaluator.model_io import Target
from stt_operator.evaluator.replay import Replayer, utterance_slices
from stt_operator.evaluator.scoring import Observation, score_utterance
from stt_operator.stats.ratio import PairedStats

ROOT = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("slices_bench", ROOT / "bench" / "stats" / "slices.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["slices_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


class _Utt:
    def __init__(self, i: int, noise: str) -> None:
        self.id, self.text, self.language, self.slice, self.speaker = f"u{i}", "a b c d", "en-US", noise, "v1"


def test_evaluator_records_each_slice_once_and_the_whole_set_unchanged() -> None:
    reg = CollectorRegistry()
    m = em.build_eval_metrics(reg)
    targets = [Target("stable", "m", "x:1"), Target("canary", "m", "x:1")]
    r = Replayer(targets, None, endpoint="ep", baseline="stable", metrics=m)  # type: ignore[arg-type]
    utts = [_Utt(i, "noisy" if i % 4 == 0 else "clean") for i in range(8)]
    r.init_slices(utts)
    for u in utts:
        s = score_utterance(u.text, "a b x d")
        r._record(
            u,
            {
                v: Observation(u.id, v, s, 0.1, 1.0, slice=u.slice, speaker=u.speaker)
                for v in ("stable", "canary")
            },
        )
    get = reg.get_sample_value
    base = {"endpoint": "ep", "variant": "canary", "model": "m", "language": "en-US"}
    assert get(em.UTTERANCES, base) == 8
    assert get(em.sliced(em.UTTERANCES), {**base, "slice": "noise", "slice_value": "noisy"}) == 2
    assert get(em.sliced(em.UTTERANCES), {**base, "slice": "noise", "slice_value": "clean"}) == 6
    assert get(em.sliced(em.UTTERANCES), {**base, "slice": "speaker", "slice_value": "v1"}) == 8
    pair = {"endpoint": "ep", "variant": "canary", "baseline": "stable", "language": "en-US", "unit": "word"}
    assert get(em.sliced(em.PAIRS), {**pair, "slice": "noise", "slice_value": "noisy"}) == 2
    text = generate_latest(reg).decode()
    assert "stt_eval_slice_errors_total{" in text and 'slice_value="noisy"' in text
    assert utterance_slices(utts[0]) == {"noise": "noisy", "speaker": "v1", "language": "en-US"}
    utts[0].extra = {"language_pair": "en>es"}  # an optional manifest field lands in `extra`
    assert utterance_slices(utts[0])["languagePair"] == "en>es"


def test_slice_rule_validation() -> None:
    assert (
        MetricRule.from_spec(
            MetricSpec.model_validate(
                {"name": "w", "preset": "wer", "slice": "noise", "thresholdRange": {"max": 1}}
            )
        ).slice
        == "noise"
    )
    # The engine's own check, on a spec that skipped pydantic's (which refuses it too).
    unchecked = MetricSpec.model_construct(
        name="w", preset="wer", slice="gender", threshold_range=ThresholdRange(max=1)
    )
    with pytest.raises(ValueError, match="slice 'gender'"):
        MetricRule.from_spec(unchecked)
    with pytest.raises(ValueError, match="slice needs a preset other than error-rate"):
        MetricSpec.model_validate(
            {"name": "e", "preset": "error-rate", "slice": "noise", "thresholdRange": {"max": 1}}
        )


def _paired(delta: float, n: int, seed: int) -> PairedStats:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 30, n)
    p = rng.beta(2, 16, n)
    return PairedStats.from_arrays(
        rng.binomial(lengths, np.clip(p + delta, 0, 1)), rng.binomial(lengths, p), lengths
    )


def test_one_regressed_slice_fails_and_holm_counts_every_slice() -> None:
    ctx = AnalysisContext(namespace="ns", endpoint="ep", candidate=Arm("canary"), baseline=Arm("stable"))
    rule = MetricRule("wer", preset="wer", non_inferiority_margin=0.01, min_samples=100)
    names = [slice_name("wer", "noise", v) for v in ("clean", "noisy")]
    rules = {n: rule.__class__(**{**rule.__dict__, "name": n}) for n in names}
    data = [_paired(-0.01, 3000, 1), _paired(0.06, 1000, 2)]
    provisional = [
        judge(rules[n], RatioData(d.candidate, d.baseline, d, "utterances"), ctx)
        for n, d in zip(names, data, strict=True)
    ]
    clean, noisy = finalize(provisional, rules, ctx)
    assert (clean.outcome, noisy.outcome) == ("Passed", "Failed"), (clean.message, noisy.message)
    # Holm with a family of two: the smaller raw p-value is doubled.
    raw = noisy.details["p_raw"]["nonInferiorityMargin 0.01"][0]
    assert noisy.checks[0].p_fail == pytest.approx(min(1.0, 2 * raw))
    # A slice seen at an earlier look stays in the family (previous_p) although absent now.
    ctx2 = replace(ctx, previous_p={f"{names[0]}/nonInferiorityMargin 0.01": (1.0, 1e-9)})
    (only,) = finalize(provisional[1:], {names[1]: rules[names[1]]}, ctx2)
    assert only.checks[0].p_fail == pytest.approx(min(1.0, 2 * raw))


def test_simulation_family_wise_false_failure_within_alpha() -> None:
    b = _load()
    r = b.simulate(runs=60, k=4, looks=8, per_look=100, effect=0.05, seed=11, power_runs=6)
    # The 95 % Clopper-Pearson lower bound of the false-failure rate stays below alpha.
    assert b.cp(r.false_fail, r.runs)[0] <= b.ALPHA, r
    assert r.power_sliced >= 5, r  # a +5-point regression in one slice is caught
    assert r.power_whole_only <= 1, r  # which the whole-set metric alone misses
