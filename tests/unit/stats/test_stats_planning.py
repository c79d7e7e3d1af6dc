"""Holm, power / sample size, and model selection."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from stt_operator.stats.multiple import holm
from stt_operator.stats.power import (
    min_samples_fixed,
    min_samples_sequential,
    min_samples_two_proportions,
    power_sequential,
)
from stt_operator.stats.ratio import RatioStats
from stt_operator.stats.selection import Criteria, ModelSummary, compare_models, select_best_model


def test_holm_step_down() -> None:
    res = holm({"wer": 0.01, "latency": 0.04, "errors": 0.03, "nan": float("nan")}, alpha=0.05)
    assert res["wer"] == (pytest.approx(0.04), True)
    assert res["errors"][0] == pytest.approx(0.09) and not res["errors"][1]
    assert res["latency"][0] == pytest.approx(0.09)
    assert res["nan"] == (1.0, False)
    assert holm({}) == {}


def test_sample_sizes() -> None:
    assert min_samples_fixed(1.0, 0.1) == 785  # ((1.95996 + 0.84162) / 0.1)^2 = 784.9
    seq = min_samples_sequential(1.0, 0.1)
    assert 785 < seq < 4 * 785
    assert power_sequential(seq, 1.0, 0.1) == pytest.approx(0.8, abs=0.01)
    n = min_samples_two_proportions(0.05, 0.07)
    ref = NormalIndPower().solve_power(
        effect_size=abs(proportion_effectsize(0.07, 0.05)), alpha=0.05, power=0.8
    )
    assert n == int(np.ceil(ref))
    with pytest.raises(ValueError, match="effect"):
        min_samples_fixed(1.0, 0.0)


MODELS = [
    ModelSummary("small", language="en-US", wer=0.14, latency_p95_ms=80, confidence=0.8),
    ModelSummary("large", language="en-US", wer=0.09, latency_p95_ms=420, confidence=0.9),
    ModelSummary("medium", language="en-US", wer=0.10, latency_p95_ms=190, confidence=0.85),
    ModelSummary("german", language="de-DE", wer=0.05, latency_p95_ms=100),
    ModelSummary("broken", language="en-US", wer=0.01, ready=False),
]


def test_select_best_model_explains_every_candidate() -> None:
    sel = select_best_model(MODELS, Criteria(language="en-US", max_latency_p95_ms=300, optimize="wer"))
    assert sel.best == "medium"
    by = {v.name: v for v in sel.candidates}
    assert by["large"].kept is False and any("latency p95 ms 420" in r for r in by["large"].reasons)
    assert "language de-DE != en-US" in by["german"].reasons
    assert "not Ready" in by["broken"].reasons
    assert by["medium"].rank == 1 and by["small"].rank == 2
    assert "medium selected" in sel.explanation
    fast = select_best_model(MODELS, Criteria(language="en-US", optimize="latency"))
    assert fast.best == "small"
    none = select_best_model(MODELS, Criteria(language="en-US", max_wer=0.05))
    assert none.best is None and "no candidate meets" in none.explanation
    with pytest.raises(ValueError, match="optimize"):
        select_best_model(MODELS, Criteria(optimize="vibes"))


def test_selection_notes_statistical_ties_and_compare_models() -> None:
    rng = np.random.default_rng(0)
    n = rng.integers(5, 20, 300)
    a, b = RatioStats.from_arrays(rng.binomial(n, 0.10), n), RatioStats.from_arrays(rng.binomial(n, 0.105), n)
    models = [ModelSummary("a", wer=a.ratio, wer_stats=a), ModelSummary("b", wer=b.ratio, wer_stats=b)]
    sel = select_best_model(models, Criteria(optimize="wer"))
    assert sel.notes and "not significantly different" in sel.notes[0]
    rows = compare_models([*models, ModelSummary("c")], "wer")
    assert [r.name for r in rows][-1] == "c" and rows[-1].rank is None
    assert rows[0].difference_to_best == 0.0
    assert rows[1].ci_low is not None and rows[1].ci_low < rows[1].difference_to_best < rows[1].ci_high
