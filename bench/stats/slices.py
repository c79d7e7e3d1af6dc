"""Per-slice guardrails by simulation: the family-wise false-failure rate across slices.

A/A per slice: candidate and baseline have the same WER in every slice (slices differ in
difficulty and size), both models transcribe the same utterances (paired), the analysis looks
`--looks` times. One wer metric with `slice` set is judged per slice value, plus a whole-set wer
metric, through the engine's own path: `judge` per slice -> `finalize` (Holm over every slice's
rule, running minima carried between looks by `p_state`) -> `aggregate`. A false failure is an
analysis outcome Failed at any look. "no Holm" judges each slice alone at alpha (what a
per-slice check without the correction would do): its family-wise rate grows with the slices.
Power: one slice (a quarter of the traffic) regresses by `--effect` WER points while the other
slices improve so the whole set is unchanged: the whole-set metric alone misses it.

    python bench/stats/slices.py [--runs 400] [--slices 4] [--looks 12] [--per-look 120] [--seed 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from stt_operator.analysis.engine import finalize, slice_name
from stt_operator.analysis.judge import judge
from stt_operator.analysis.model import AnalysisContext, AnalysisResult, Arm, MetricResult, MetricRule
from stt_operator.analysis.presets import RatioData
from stt_operator.analysis.verdicts import aggregate, p_state
from stt_operator.stats.ratio import PairedStats

ALPHA = 0.05
MARGIN = 0.0  # non-inferiority margin 0: A/A sits on the boundary, the hardest case for false failures
WHOLE = MetricRule("wer", preset="wer", non_inferiority_margin=MARGIN, min_samples=100)
SLICED = MetricRule("wer-slices", preset="wer", non_inferiority_margin=MARGIN, min_samples=100, slice="noise")


@dataclass
class Result:
    runs: int
    false_fail: int  # A/A runs whose analysis Failed at some look (with Holm over slices)
    false_fail_no_holm: int  # the same, each slice judged alone at alpha
    power_sliced: int  # one-slice regression runs that Failed (sliced metric)
    power_whole_only: int  # the same runs judged by the whole-set metric alone


def _draw(rng: np.random.Generator, m: int, base_wer: float, delta: float) -> tuple[np.ndarray, ...]:
    n = rng.integers(3, 31, m)
    p = np.clip(rng.beta(2.0, 2.0 / base_wer - 2.0, m), 0, 1)
    base = rng.binomial(n, p)
    cand = rng.binomial(n, np.clip(p + delta, 0, 1))  # same utterance difficulty: paired
    return cand, base, n


def run_once(
    rng: np.random.Generator, k: int, looks: int, per_look: int, deltas: list[float], holm_slices: bool
) -> tuple[str, str]:
    """One analysis over `looks` looks; returns (outcome with sliced + whole metrics, outcome of
    the whole-set metric alone) at the first Failed look or the last look."""
    weights = np.linspace(1.0, 2.0, k) / np.linspace(1.0, 2.0, k).sum()  # unequal slice sizes
    base_wers = np.linspace(0.06, 0.2, k)
    names = [slice_name(SLICED.name, "noise", f"s{i}") for i in range(k)]
    ctx = AnalysisContext("ns", "ep", candidate=Arm("canary"), baseline=Arm("stable"), confidence=1 - ALPHA)
    ctx_alone = [ctx] * k
    ctx_whole = ctx
    acc: list[list[np.ndarray]] = [[np.zeros(0, int)] * 3 for _ in range(k)]
    outcome, whole_outcome = "Inconclusive", "Inconclusive"
    for _ in range(looks):
        for i in range(k):
            new = _draw(rng, max(1, int(per_look * k * weights[i])), base_wers[i], deltas[i])
            acc[i] = [np.concatenate([a, b]) for a, b in zip(acc[i], new, strict=True)]
        per_slice = [PairedStats.from_arrays(*acc[i]) for i in range(k)]
        whole = PairedStats.from_arrays(*(np.concatenate([acc[i][j] for i in range(k)]) for j in range(3)))
        sub = [replace(SLICED, name=names[i], slice=None) for i in range(k)]
        raw = [judge(sub[i], _data(per_slice[i]), ctx) for i in range(k)]
        raw_whole = judge(WHOLE, _data(whole), ctx)
        if holm_slices:
            rules = {WHOLE.name: WHOLE, **{r.name: r for r in sub}}
            final = finalize([raw_whole, *raw], rules, ctx)
            ctx = replace(ctx, previous_p=p_state(_result(final)))
            outcome = aggregate(m.outcome for m in final)
        else:
            outs = []
            for i in range(k):
                (f,) = finalize([raw[i]], {sub[i].name: sub[i]}, ctx_alone[i])
                ctx_alone[i] = replace(ctx_alone[i], previous_p=p_state(_result([f])))
                outs.append(f.outcome)
            outcome = aggregate(outs)
        (w,) = finalize([raw_whole], {WHOLE.name: WHOLE}, ctx_whole)
        ctx_whole = replace(ctx_whole, previous_p=p_state(_result([w])))
        whole_outcome = w.outcome if whole_outcome != "Failed" else whole_outcome
        if outcome == "Failed":
            break
    return outcome, whole_outcome


def _data(ps: PairedStats) -> RatioData:
    return RatioData(ps.candidate, ps.baseline, ps, "utterances")


def _result(final: list[MetricResult]) -> AnalysisResult:
    return AnalysisResult(aggregate(m.outcome for m in final), "", tuple(final))


def simulate(
    runs: int, k: int, looks: int, per_look: int, effect: float, seed: int, power_runs: int
) -> Result:
    rng = np.random.default_rng(seed)
    null = [0.0] * k
    ff = sum(run_once(rng, k, looks, per_look, null, True)[0] == "Failed" for _ in range(runs))
    ffn = sum(run_once(rng, k, looks, per_look, null, False)[0] == "Failed" for _ in range(runs))
    # One regressed slice; the others improve so the traffic-weighted whole set is unchanged.
    w = np.linspace(1.0, 2.0, k) / np.linspace(1.0, 2.0, k).sum()
    deltas = [effect] + [-effect * w[0] / (1 - w[0])] * (k - 1)
    ps = pw = 0
    for _ in range(power_runs):
        sliced, whole = run_once(rng, k, looks, per_look, deltas, True)
        ps += sliced == "Failed"
        pw += whole == "Failed"
    return Result(runs, ff, ffn, ps, pw)


def cp(x: int, n: int) -> tuple[float, float]:
    """95 % Clopper-Pearson interval of x/n."""
    ci = stats.binomtest(x, n).proportion_ci(0.95, method="exact")
    return ci.low, ci.high


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--power-runs", type=int, default=100)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--looks", type=int, default=12)
    ap.add_argument("--per-look", type=int, default=120, help="utterances per slice-average per look")
    ap.add_argument("--effect", type=float, default=0.04, help="WER points of the one-slice regression")
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    t0 = time.time()
    r = simulate(a.runs, a.slices, a.looks, a.per_look, a.effect, a.seed, a.power_runs)
    lo, hi = cp(r.false_fail, r.runs)
    lo2, hi2 = cp(r.false_fail_no_holm, r.runs)
    print(f"slices={a.slices} looks={a.looks} per_look={a.per_look} alpha={ALPHA} runs={r.runs}")
    print(f"A/A family-wise false failure, Holm over slices: {r.false_fail}/{r.runs} [{lo:.3f}, {hi:.3f}]")
    print(f"A/A family-wise false failure, no Holm: {r.false_fail_no_holm}/{r.runs} [{lo2:.3f}, {hi2:.3f}]")
    print(
        f"one slice +{a.effect} (whole set unchanged): sliced metric fails {r.power_sliced}/{a.power_runs},"
        f" whole-set metric alone fails {r.power_whole_only}/{a.power_runs}"
    )
    print(f"{time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
