"""A/A and power of rollout and A/B verdicts for every preset, split and design, through the
engine's own decision path: `judge` -> `finalize` (running minima carried by `p_state`, Holm) ->
`aggregate` -> `policy.decide` (rollback) and `decide_ab` (winner).

Per cell (preset x split x paired/unpaired) and run, the analysis looks `--looks` times at
cumulative data; the candidate (the A/B variant) is the smaller arm of the split. The rollout
rule is `maxRelativeIncrease: 0` ("no worse than the baseline"), so A/A data sits exactly on the
null's boundary, the hardest case for false rollbacks. Recorded per cell:
- false rollback: A/A runs with a Failed look (failureLimit 0 -> Rollback),
- false winner: A/A runs where `decide_ab` names a winner (either side),
- power: runs with a worse candidate that roll back / make the control the A/B winner,
- time to decision: median look and candidate samples at the first decision,
each rate with its 95 % Clopper-Pearson interval.

    python bench/stats/ab_matrix.py [--runs 200] [--power-runs 60] [--looks 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing import Pool

import numpy as np
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from stt_operator.analysis.ab_verdict import decide_ab
from stt_operator.analysis.engine import finalize
from stt_operator.analysis.judge import judge
from stt_operator.analysis.model import AnalysisContext, AnalysisResult, Arm, MetricRule
from stt_operator.analysis.policy import decide
from stt_operator.analysis.presets import CountData, HistogramData, RatioData
from stt_operator.analysis.verdicts import aggregate, p_state
from stt_operator.api.common import MetricSpec
from stt_operator.evalmetrics import LATENCY_BUCKETS
from stt_operator.stats.histogram import Buckets
from stt_operator.stats.ratio import PairedStats, RatioStats

ALPHA = 0.05
MIN_SAMPLES = 100
SPLITS = {"50/50": 0.5, "90/10": 0.1, "99/1": 0.01}  # the candidate's (variant's) share
UTTERANCES_PER_LOOK = 1000  # both arms together
REQUESTS_PER_LOOK = 4000
PRESETS = ("wer", "cer", "error-rate", "latency-p95", "latency-p99", "confidence", "rtf")
# Worse candidate for the power runs (the effect each preset's users would care about).
EFFECTS = {
    "wer": 1.15,  # utterance difficulty x1.15 (about +15 % relative WER)
    "cer": 1.15,
    "error-rate": 2.5,  # failure rate 0.5 % -> 1.25 %
    "latency-p95": 1.2,  # every latency x1.2
    "latency-p99": 1.2,
    "confidence": 0.04,  # mean confidence 0.80 -> 0.76
    "rtf": 1.15,
}
BASE_ERROR_RATE = 0.005
EDGES = np.array([*LATENCY_BUCKETS, math.inf])


@dataclass(frozen=True)
class Cell:
    preset: str
    split: str
    paired: bool

    @property
    def name(self) -> str:
        return f"{self.preset} {self.split} {'paired' if self.paired else 'unpaired'}"


def cells() -> list[Cell]:
    out = []
    for preset in PRESETS:
        for split in SPLITS:
            for paired in (True, False) if preset in ("wer", "cer") else (False,):
                out.append(Cell(preset, split, paired))
    return out


# --- data -----------------------------------------------------------------------------------


def _words(rng: np.random.Generator, preset: str, m: int, scale: float) -> tuple[np.ndarray, ...]:
    """Lengths and per-utterance difficulty: errors on one utterance are not independent trials."""
    if preset == "cer":
        lengths = rng.integers(15, 151, m)
        p = rng.beta(1.0, 20.0, m)
    else:
        lengths = rng.integers(3, 31, m)
        p = rng.beta(1.0, 8.0, m)
    return lengths, p, np.clip(p * scale, 0, 1)


def _sums(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = x.astype(float), y.astype(float)
    return np.array([x.size, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()])


def ratio_arm(rng: np.random.Generator, preset: str, m: int, effect: float | None) -> np.ndarray:
    """RatioStats sums of one arm's new utterances; `effect` None: the baseline's distribution."""
    if preset in ("wer", "cer"):
        lengths, p, worse = _words(rng, preset, m, effect or 1.0)
        return _sums(rng.binomial(lengths, worse if effect else p), lengths)
    if preset == "rtf":
        audio = rng.uniform(1.0, 15.0, m)
        return _sums(audio * rng.gamma(4.0, 0.05 / 4.0, m) * (effect or 1.0), audio)
    # confidence: a mean (y = 1), higher is better
    c = rng.beta(8.0, 2.0, m) - (effect or 0.0)
    return _sums(np.clip(c, 0, 1), np.ones(m))


def paired_arm(rng: np.random.Generator, preset: str, m: int, effect: float | None) -> np.ndarray:
    lengths, p, worse = _words(rng, preset, m, effect or 1.0)
    c = rng.binomial(lengths, worse if effect else p).astype(float)
    b = rng.binomial(lengths, p).astype(float)
    n = lengths.astype(float)
    return np.array(
        [m, n.sum(), (n * n).sum(), c.sum(), b.sum(), (c * c).sum(), (b * b).sum(), (c * b).sum(),
         (c * n).sum(), (b * n).sum()]
    )  # fmt: skip


def latency_probs(scale: float) -> np.ndarray:
    cdf = stats.lognorm.cdf(EDGES, 0.5, scale=0.25 * scale)
    return np.diff(np.concatenate([[0.0], cdf]))


# --- one run --------------------------------------------------------------------------------


def rule_for(cell: Cell) -> MetricRule:
    return MetricRule.from_spec(
        MetricSpec(name="m", preset=cell.preset, max_relative_increase=0.0, min_samples=MIN_SAMPLES)
    )


def run_once(cell: Cell, effect: float | None, rng: np.random.Generator, looks: int) -> tuple[int, int, str]:
    """(look of the first rollback or 0, look of the first A/B winner or 0, the winner)."""
    rule = rule_for(cell)
    w = SPLITS[cell.split]
    ctx = AnalysisContext(
        namespace="b", endpoint="b", candidate=Arm("variant"), baseline=Arm("control"), confidence=1 - ALPHA
    )
    ratio = cell.preset in ("wer", "cer", "rtf", "confidence")
    per_look = UTTERANCES_PER_LOOK if ratio else REQUESTS_PER_LOOK
    mc = max(1, round(per_look * w))
    mb = per_look - mc
    cand = base = pair = None
    probs_b = latency_probs(1.0)
    probs_c = latency_probs(effect or 1.0)
    rollback = winner_look = 0
    winner = ""
    history: list[str] = []
    for look in range(1, looks + 1):
        if cell.preset == "error-rate":
            add = np.array(
                [rng.binomial(mc, BASE_ERROR_RATE * (effect or 1.0)), rng.binomial(mb, BASE_ERROR_RATE)]
            )
            cand = add if cand is None else cand + add
            data: object = CountData(
                float(cand[0]), float(mc * look), float(cand[1]), float(mb * look), "sim"
            )
        elif cell.preset.startswith("latency"):
            hc, hb = rng.multinomial(mc, probs_c), rng.multinomial(mb, probs_b)
            cand = hc if cand is None else cand + hc
            base = hb if base is None else base + hb
            q = 0.95 if cell.preset == "latency-p95" else 0.99
            data = HistogramData(Buckets(EDGES, cand.astype(float)), Buckets(EDGES, base.astype(float)), q)
        else:
            if cell.paired:
                add_p = paired_arm(rng, cell.preset, mc, effect)
                pair = add_p if pair is None else pair + add_p
            add_c = ratio_arm(rng, cell.preset, mc, effect)
            add_b = ratio_arm(rng, cell.preset, mb, None)
            cand = add_c if cand is None else cand + add_c
            base = add_b if base is None else base + add_b
            ps = PairedStats(*pair) if pair is not None else None
            c_stats = ps.candidate if ps else RatioStats(*cand)
            data = RatioData(c_stats, RatioStats(*base), ps, "utterances")
        res = judge(rule, data, ctx)  # type: ignore[arg-type]
        final = finalize([res], {rule.name: rule}, ctx)
        outcome = aggregate(m.outcome for m in final)
        ctx = replace(ctx, previous_p=p_state(AnalysisResult(outcome, "", tuple(final))))
        history.append(outcome)
        if not rollback and decide(history).action == "Rollback":
            rollback = look
        if not winner_look:
            d = decide_ab("control", {"variant": final[0]}, alpha=ALPHA, direction=rule.direction)
            if d.outcome == "Winner":
                winner_look, winner = look, d.winner or ""
        if rollback and winner_look:
            break
    return rollback, winner_look, winner


# --- cells and summaries ----------------------------------------------------------------------


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    runs: int
    false_rollback: int
    false_winner: int
    power_runs: int
    power_rollback: int
    power_winner: int  # the control named the winner (the candidate is worse)
    wrong_winner: int  # power runs that named the worse variant the winner
    looks_rollback: float  # median look of detection (power runs)
    looks_winner: float
    candidate_per_look: int
    seconds: float


def run_cell(args: tuple[Cell, int, int, int, int]) -> CellResult:
    cell, runs, power_runs, looks, seed = args
    t0 = time.monotonic()
    rng = np.random.default_rng(seed)
    fr = fw = 0
    for _ in range(runs):
        r, wl, _w = run_once(cell, None, rng, looks)
        fr += r > 0
        fw += wl > 0
    pr = pw = wrong = 0
    lr: list[int] = []
    lw: list[int] = []
    for _ in range(power_runs):
        r, wl, who = run_once(cell, EFFECTS[cell.preset], rng, looks)
        if r:
            pr += 1
            lr.append(r)
        if wl and who == "control":
            pw += 1
            lw.append(wl)
        wrong += bool(wl and who != "control")
    ratio = cell.preset in ("wer", "cer", "rtf", "confidence")
    per_look = max(1, round((UTTERANCES_PER_LOOK if ratio else REQUESTS_PER_LOOK) * SPLITS[cell.split]))
    return CellResult(
        cell, runs, fr, fw, power_runs, pr, pw, wrong,
        float(np.median(lr)) if lr else math.nan, float(np.median(lw)) if lw else math.nan,
        per_look, time.monotonic() - t0,
    )  # fmt: skip


def cp(k: int, n: int) -> tuple[float, float]:
    lo, hi = proportion_confint(k, n, alpha=0.05, method="beta")
    return float(lo), float(hi)


def fmt_rate(k: int, n: int) -> str:
    lo, hi = cp(k, n)
    return f"{k}/{n} = {k / n:.3f} [{lo:.3f}, {hi:.3f}]"


def table(results: list[CellResult]) -> Iterator[str]:
    yield (
        "| cell | candidate per look | false rollback (A/A) | false winner (A/A) | power: rollback | "
        "median looks | power: control wins A/B | median looks | wrong winner |"
    )
    yield "|---|---|---|---|---|---|---|---|---|"
    for r in results:
        yield (
            f"| {r.cell.name} | {r.candidate_per_look} | {fmt_rate(r.false_rollback, r.runs)} | "
            f"{fmt_rate(r.false_winner, r.runs)} | {fmt_rate(r.power_rollback, r.power_runs)} | "
            f"{r.looks_rollback:g} | {fmt_rate(r.power_winner, r.power_runs)} | {r.looks_winner:g} | "
            f"{r.wrong_winner} |"
        )


def run_matrix(runs: int, power_runs: int, looks: int, seed: int, workers: int) -> list[CellResult]:
    jobs = [(c, runs, power_runs, looks, seed + 1000 * i) for i, c in enumerate(cells())]
    out: list[CellResult] = []
    with Pool(workers) if workers > 1 else _Serial() as pool:
        for r in pool.imap(run_cell, jobs):
            out.append(r)
            # Progress as each cell ends (a long run on a loaded machine stays readable).
            print(f"# done: {r.cell.name} in {r.seconds:.0f} s", flush=True)
    return out


class _Serial:
    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def imap(self, fn, items):  # type: ignore[no-untyped-def]
        return map(fn, items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--power-runs", type=int, default=60)
    ap.add_argument("--looks", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    t0 = time.monotonic()
    results = run_matrix(a.runs, a.power_runs, a.looks, a.seed, a.workers)
    print(f"alpha={ALPHA} looks={a.looks} minSamples={MIN_SAMPLES} runs={a.runs} power-runs={a.power_runs}")
    print(f"python {platform.python_version()}, {platform.machine()}")
    for line in table(results):
        print(line)
    worst_r = max(cp(r.false_rollback, r.runs)[1] for r in results)
    worst_w = max(cp(r.false_winner, r.runs)[1] for r in results)
    print(f"largest upper 95% bound: false rollback {worst_r:.3f}, false winner {worst_w:.3f}")
    print(f"wall time {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
