"""Statistical error rates of the analysis engine, by simulation (vectorised numpy).

A/A: both arms have the same WER; the analysis looks every interval for 120 intervals. A false
decision is a rollback (candidate declared worse) at any look. Compared:
- engine:     always-valid one-sided test (mixture boundary / asymptotic CS), the rule the engine
              applies to a WER metric (`stt_operator.stats.sequential`), min 200 utterances per arm;
- naive z:    the same delta-method z statistic, fixed-horizon p < alpha, checked at every look;
- threshold:  Flagger/Argo style, candidate WER > 1.05 x baseline WER counts as a failure,
              rollback when failures > failureLimit (2); measured per interval (what a
              `rate(...[1m])` query sees) and on cumulative counts.
Power: +10 % / +20 % relative WER regression, paired (both models on the same utterances) vs
unpaired (split traffic): probability of detection within 120 looks, utterances per arm at the
median detection and at 80 % power.

    python bench/stats/simulate.py [--runs 1000] [--per-look 50] [--seed 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from stt_operator.stats import sequential as sq

ALPHA = 0.05
MIN_SAMPLES = 200
LOOKS = 120
FAILURE_LIMIT = 2
MAX_REL = 0.05


def corpus(rng: np.random.Generator, runs: int, utts: int) -> tuple[np.ndarray, np.ndarray]:
    """Utterance lengths 3..30 words and a per-utterance difficulty (mean WER 11 %): errors on
    one utterance are not independent word trials."""
    n = rng.integers(3, 31, (runs, utts))
    p = rng.beta(1.0, 8.0, (runs, utts))
    return n, p


def look_sums(x: np.ndarray, looks: int) -> np.ndarray:
    """Cumulative sums at each look of a (runs, utterances) array."""
    r, u = x.shape
    return np.cumsum(x.reshape(r, looks, u // looks).sum(axis=2, dtype=np.float64), axis=1)


def ratio_var(N, se, sn, see, snn, sen):  # numpy arrays throughout
    r = se / sn
    rss = np.maximum(see - 2 * r * sen + r * r * snn, 0.0)
    return r, N / np.maximum(N - 1, 1) * rss / (sn * sn)


def simulate(
    rng: np.random.Generator, runs: int, per_look: int, rel: float, paired: bool
) -> dict[str, np.ndarray]:
    """Per run and look: z of the WER difference, units t, and interval/cumulative point WERs."""
    utts = LOOKS * per_look
    n_a, p_a = corpus(rng, runs, utts)
    n_b, p_b = (n_a, p_a) if paired else corpus(rng, runs, utts)
    e_a = rng.binomial(n_a, p_a)
    e_b = rng.binomial(n_b, np.minimum(1.0, p_b * (1 + rel)))
    N = np.arange(1, LOOKS + 1)[None, :] * per_look * np.ones((runs, 1))
    sna, snb = look_sums(n_a, LOOKS), look_sums(n_b, LOOKS)
    sea, seb = look_sums(e_a, LOOKS), look_sums(e_b, LOOKS)
    if paired:
        d = (e_b - e_a).astype(np.float64)
        sd, sdd, sdn = look_sums(d, LOOKS), look_sums(d * d, LOOKS), look_sums(d * n_a, LOOKS)
        snn = look_sums(n_a.astype(np.float64) ** 2, LOOKS)
        est, var = ratio_var(N, sd, sna, sdd, snn, sdn)
        t = N
    else:
        ra, va = ratio_var(
            N,
            sea,
            sna,
            look_sums(e_a.astype(float) ** 2, LOOKS),
            look_sums(n_a.astype(float) ** 2, LOOKS),
            look_sums((e_a * n_a).astype(float), LOOKS),
        )
        rb, vb = ratio_var(
            N,
            seb,
            snb,
            look_sums(e_b.astype(float) ** 2, LOOKS),
            look_sums(n_b.astype(float) ** 2, LOOKS),
            look_sums((e_b * n_b).astype(float), LOOKS),
        )
        est, var = rb - ra, va + vb
        t = 2 * N
    z = est / np.sqrt(np.maximum(var, 1e-300))
    # Interval-window WER (what a 1-interval rate() query sees) and cumulative WER per arm.
    ia = np.diff(np.concatenate([np.zeros((runs, 1)), sea], axis=1), axis=1)
    ib = np.diff(np.concatenate([np.zeros((runs, 1)), seb], axis=1), axis=1)
    ina = np.diff(np.concatenate([np.zeros((runs, 1)), sna], axis=1), axis=1)
    inb = np.diff(np.concatenate([np.zeros((runs, 1)), snb], axis=1), axis=1)
    return {
        "z": z,
        "t": t,
        "N": N,
        "int_a": ia / ina,
        "int_b": ib / inb,
        "cum_a": sea / sna,
        "cum_b": seb / snb,
    }


def engine_reject(sim: dict[str, np.ndarray], paired: bool) -> np.ndarray:
    tuning = sq.default_tuning_n(MIN_SAMPLES, 1 if paired else 2)
    _, p_greater, _ = sq.always_valid_p(sim["z"], sim["t"], ALPHA, tuning)
    return (p_greater < ALPHA) & (sim["N"] >= MIN_SAMPLES)


def naive_reject(sim: dict[str, np.ndarray], two_sided: bool = False) -> np.ndarray:
    p = 2 * stats.norm.sf(np.abs(sim["z"])) if two_sided else stats.norm.sf(sim["z"])
    return (p < ALPHA) & (sim["N"] >= MIN_SAMPLES)


def threshold_reject(sim: dict[str, np.ndarray], window: str) -> np.ndarray:
    a, b = sim[f"{window}_a"], sim[f"{window}_b"]
    failures = np.cumsum(b > (1 + MAX_REL) * a, axis=1)
    return failures > FAILURE_LIMIT


def first_look(reject: np.ndarray) -> np.ndarray:
    """Index of the first rejecting look per run, LOOKS when never."""
    return np.where(reject.any(axis=1), reject.argmax(axis=1), LOOKS)


def run_batches(
    rng: np.random.Generator, runs: int, per_look: int, rel: float, paired: bool, batch: int = 250
):
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, runs, batch):
        sim = simulate(rng, min(batch, runs - start), per_look, rel, paired)
        cols = {
            "engine": first_look(engine_reject(sim, paired)),
            "naive_one_sided": first_look(naive_reject(sim)),
            "naive_two_sided": first_look(naive_reject(sim, two_sided=True)),
            "threshold_interval": first_look(threshold_reject(sim, "int")),
            "threshold_cumulative": first_look(threshold_reject(sim, "cum")),
        }
        if rel == 0.0:
            two, _, _ = sq.always_valid_p(
                sim["z"], sim["t"], ALPHA, sq.default_tuning_n(MIN_SAMPLES, 1 if paired else 2)
            )
            cols["engine_two_sided"] = first_look((two < ALPHA) & (sim["N"] >= MIN_SAMPLES))
        for k, v in cols.items():
            out.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def utterances_at_power(first: np.ndarray, per_look: int, power: float = 0.8) -> str:
    detected_by = np.array([(first <= i).mean() for i in range(LOOKS)])
    idx = np.nonzero(detected_by >= power)[0]
    return str((idx[0] + 1) * per_look) if idx.size else f">{LOOKS * per_look}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--per-look", type=int, default=50, help="utterances per arm per interval")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    print(
        f"runs={args.runs} looks={LOOKS} utterances/arm/look={args.per_look} alpha={ALPHA} "
        f"minSamples={MIN_SAMPLES} failureLimit={FAILURE_LIMIT} maxRelativeIncrease={MAX_REL}"
    )
    print("\n## A/A: share of runs with a false decision at any of 120 looks")
    print(
        "| design | engine (one-sided, rollback) | engine (two-sided) | naive z peeked (one-sided) "
        "| naive z peeked (two-sided) | threshold rule, interval window | threshold rule, cumulative |"
    )
    print("|---|---|---|---|---|---|---|")
    for paired in (True, False):
        r = run_batches(rng, args.runs, args.per_look, 0.0, paired)
        rate = {k: (v < LOOKS).mean() for k, v in r.items()}
        print(
            f"| {'paired' if paired else 'unpaired'} | {rate['engine']:.3f} | {rate['engine_two_sided']:.3f} "
            f"| {rate['naive_one_sided']:.3f} | {rate['naive_two_sided']:.3f} "
            f"| {rate['threshold_interval']:.3f} | {rate['threshold_cumulative']:.3f} |"
        )
    print("\n## Power: engine detects a relative WER regression (rollback) within 120 looks")
    print("| regression | design | power | median utterances/arm to detect | utterances/arm for 80 % power |")
    print("|---|---|---|---|---|")
    summary = {}
    for rel in (0.10, 0.20):
        for paired in (True, False):
            first = run_batches(rng, args.runs, args.per_look, rel, paired)["engine"]
            det = first < LOOKS
            med = int(np.median(first[det] + 1) * args.per_look) if det.any() else None
            at80 = utterances_at_power(first, args.per_look)
            summary[(rel, paired)] = (med, at80)
            print(
                f"| +{rel:.0%} | {'paired' if paired else 'unpaired'} | {det.mean():.3f} | {med} | {at80} |"
            )
    print("\n## Paired saving (unpaired / paired utterances per arm)")
    for rel in (0.10, 0.20):
        (mp, ap80), (mu, au80) = summary[(rel, True)], summary[(rel, False)]
        ratio_med = f"{mu / mp:.1f}x" if mp and mu else "n/a"
        ratio_80 = (
            f"{int(au80) / int(ap80):.1f}x" if ap80.isdigit() and au80.isdigit() else f"{au80} vs {ap80}"
        )
        print(f"- +{rel:.0%}: median time to detect {ratio_med}; 80 % power {ratio_80}")
    print(f"\nwall time {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
