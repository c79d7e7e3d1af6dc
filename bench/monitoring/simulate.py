"""False-alarm rate and detection time of post-promotion monitoring (spec.monitoring).

The rule is stats/monitoring.py (`look_slo` at `alpha_per_look`), as the planner in
rollout/monitoring.py applies it: one exact one-sided binomial test per look on the requests of
the window since the last tested look; a window with fewer than minSamples requests is not
tested and keeps growing. The API admits one metric kind, error-rate (api/modeldeployment.py,
MonitoringPreset), so that is the kind simulated, at every threshold, budget, interval and
traffic level in the grid, with the true error probability exactly at the SLO (the worst case).

Vectorised over independent endpoints ("chains"); the test is applied through a table of
critical counts (smallest failure count that breaches at n requests), which is checked against
`look_slo` itself before any simulation runs.

    python bench/monitoring/simulate.py --json bench/monitoring/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
from scipy import stats

from stt_operator.stats.monitoring import SECONDS_PER_DAY, alpha_per_look, look_slo


def critical_table(n_max: int, p0: float, alpha: float) -> np.ndarray:
    """crit[n] = smallest x with P(Bin(n, p0) >= x) <= alpha (n_max + 2 when none)."""
    n = np.arange(n_max + 1)
    c = np.asarray(stats.binom.isf(alpha, n, p0), dtype=float)
    c = np.where(np.isnan(c), n, c).astype(np.int64) + 1
    for _ in range(3):  # correct isf's rounding both ways
        lower = (c > 0) & (stats.binom.sf(c - 2, n, p0) <= alpha)
        c = np.where(lower, c - 1, c)
        higher = (c <= n) & (stats.binom.sf(c - 1, n, p0) > alpha)
        c = np.where(higher, c + 1, c)
    c = np.where(c > n, n_max + 2, c)
    c[0] = n_max + 2
    return c


def check_table(
    crit: np.ndarray, p0: float, alpha: float, min_samples: int, rng: np.random.Generator
) -> None:
    """The table says breach exactly when the operator's own look_slo does."""
    for _ in range(300):
        n = int(rng.integers(1, len(crit)))
        x = int(rng.integers(max(0, crit[n] - 3), min(n, crit[n] + 3) + 1)) if crit[n] <= n else n
        want = look_slo(x, n, p0, alpha, min_samples).breached
        got = n >= min_samples and x >= crit[n]
        assert want == got, (n, x, p0, alpha, crit[n])


def simulate(
    p0: float,
    p_true: float,
    rate: float,
    interval_s: float,
    budget: float,
    min_samples: int,
    chains: int,
    looks: int,
    rng: np.random.Generator,
    stop_at_alarm: bool = False,
) -> dict[str, float]:
    alpha = alpha_per_look(budget, interval_s, 1)
    n_max = int(max(min_samples, rate) * 2 + 10 * np.sqrt(rate) + 100)
    crit = critical_table(n_max, p0, alpha)
    check_table(crit, p0, alpha, min_samples, rng)
    acc_n = np.zeros(chains, dtype=np.int64)
    acc_x = np.zeros(chains, dtype=np.int64)
    alarms = np.zeros(chains, dtype=np.int64)
    tested = np.zeros(chains, dtype=np.int64)
    first = np.full(chains, -1, dtype=np.int64)
    for t in range(looks):
        n = rng.poisson(rate, chains)
        acc_n += n
        acc_x += rng.binomial(n, p_true)
        idx = np.minimum(acc_n, n_max)
        test = acc_n >= min_samples
        alarm = test & (acc_x >= crit[idx])
        alarms += alarm
        tested += test
        first = np.where((first < 0) & alarm, t + 1, first)
        acc_n[test] = 0
        acc_x[test] = 0
        if stop_at_alarm and (first >= 0).all():
            break
    days = chains * looks * interval_s / SECONDS_PER_DAY
    k, n_tests = int(alarms.sum()), int(tested.sum())
    # One-sided 95 % Clopper-Pearson upper bound on the per-look alarm probability, per day.
    upper_look = float(stats.beta.ppf(0.95, k + 1, max(1, chains * looks - k)))
    lower_look = float(stats.beta.ppf(0.05, k, chains * looks - k + 1)) if k else 0.0
    # Exact expected alarms/day when every look has exactly `rate` requests (>= minSamples).
    exact = float(stats.binom.sf(crit[int(rate)] - 1, int(rate), p0)) if rate >= min_samples else float("nan")
    return {
        "alpha_look": alpha,
        "days": days,
        "alarms": k,
        "tests": n_tests,
        "alarms_per_day": k / days,
        "upper95_per_day": upper_look * SECONDS_PER_DAY / interval_s,
        "lower95_per_day": lower_look * SECONDS_PER_DAY / interval_s,
        "exact_per_day_fixed_n": exact * SECONDS_PER_DAY / interval_s,
        "first_alarm_looks": first.tolist() if stop_at_alarm else [],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=4000)
    ap.add_argument("--looks", type=int, default=4000)
    ap.add_argument("--min-samples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=20261204)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    rows = []
    print(
        "| SLO p0 | requests/look | interval | budget/day | alpha/look | simulated days | false alarms"
        " | per day | 95 % lower | 95 % upper | exact/day at fixed n | consistent with <= budget |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p0 in (0.001, 0.01, 0.05):
        for rate in (50, 1000, 20000):
            for interval_s in (60.0, 3600.0):
                for budget in (0.01, 0.1, 1.0):
                    r = simulate(
                        p0, p0, rate, interval_s, budget, args.min_samples, args.chains, args.looks, rng
                    )
                    # The claim is E[alarms/day] <= budget: refuted only if the lower bound exceeds it.
                    ok = r["lower95_per_day"] <= budget
                    rows.append(
                        {
                            "p0": p0,
                            "rate": rate,
                            "interval_s": interval_s,
                            "budget": budget,
                            **r,
                            "within_budget": ok,
                        }
                    )
                    print(
                        f"| {p0:g} | {rate} | {interval_s:g} s | {budget:g} | {r['alpha_look']:.3g}"
                        f" | {r['days']:.4g} | {r['alarms']} | {r['alarms_per_day']:.3g}"
                        f" | {r['lower95_per_day']:.3g} | {r['upper95_per_day']:.3g} |"
                        f" {r['exact_per_day_fixed_n']:.3g} | {'yes' if ok else 'NO'} |",
                        flush=True,
                    )
    print()
    print(
        "Detection (interval 5 min, budget 0.01/day, minSamples",
        args.min_samples,
        "): looks until the verdict",
    )
    print("| SLO p0 | true p | requests/look | mean looks | median | 95th pct | mean hours |")
    print("|---|---|---|---|---|---|---|")
    det = []
    for p0 in (0.001, 0.01, 0.05):
        for factor in (1.5, 2.0, 5.0):
            for rate in (1000, 20000):
                r = simulate(
                    p0, min(1.0, p0 * factor), rate, 300.0, 0.01, args.min_samples, 2000, 2000, rng, True
                )
                f = np.array(r["first_alarm_looks"], dtype=float)
                f[f < 0] = np.nan
                missed = int(np.isnan(f).sum())
                mean = float(np.nanmean(f)) if missed < len(f) else float("nan")
                row = {
                    "p0": p0,
                    "factor": factor,
                    "rate": rate,
                    "mean_looks": mean,
                    "median_looks": float(np.nanmedian(f)) if missed < len(f) else float("nan"),
                    "p95_looks": float(np.nanpercentile(f, 95)) if missed < len(f) else float("nan"),
                    "not_detected_in_2000_looks": missed,
                }
                det.append(row)
                print(
                    f"| {p0:g} | {p0 * factor:g} (x{factor:g}) | {rate} | {mean:.3g}"
                    f" | {row['median_looks']:.3g} |"
                    f" {row['p95_looks']:.3g} | {mean * 300 / 3600:.3g} |"
                    + (f" ({missed} not in 2000)" if missed else ""),
                    flush=True,
                )
    meta = {
        "command": " ".join(sys.argv),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.platform(),
        "seconds": round(time.time() - t0, 1),
        "chains": args.chains,
        "looks": args.looks,
        "min_samples": args.min_samples,
        "seed": args.seed,
    }
    print("\n", json.dumps(meta))
    if args.json:
        for r in rows:
            r.pop("first_alarm_looks")
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "false_alarms": rows, "detection": det}, fh, indent=1)


if __name__ == "__main__":
    main()
