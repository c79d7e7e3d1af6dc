"""What a report plots, computed from Prometheus range data and an object's status (pure).

Prometheus gives cumulative counters sampled on a grid; every figure here starts from the
increase since the window's start (a drop between two samples is a counter reset: the new value
counts from zero), so a point at time t shows exactly what a look at t would have judged. The
range queries begin one step before the window, which tells a series that was already there
(it counts from its value at the start) from one first seen inside the window (the evaluator
began, or was first scraped, inside it: it counts from zero, its first value included).

- `ratio_over_time`: per variant, the ratio Σx/Σy (WER, CER) with the two-sided always-valid
  interval of `stats.sequential` around it (the interval the decisions use, not a fixed-horizon
  one, so it stays valid when read at every point of the plot).
- `evidence_over_time`: per candidate, the always-valid p-value of the paired (or unpaired)
  difference against the control at each point, carried as a running minimum like the
  controller carries it.
- `split_over_time`: each variant's share of the requests sent in each step, next to its
  configured weight; `live_split_over_time` the same for client traffic alone (Triton's request
  counters less the evaluator's replay).
- `latency_distribution`: per variant, the histogram bucket increments over the whole window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from stt_operator.stats import sequential
from stt_operator.stats.ratio import PairedStats, RatioStats

# One series: (unix time, value) points as Prometheus returns them, oldest first.
Points = Sequence[tuple[float, float]]


def increases(points: Points, since: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(times, increase since the window start) of one cumulative counter, resets handled.

    `since`: the window's start. The report's range queries begin one step before it, so a
    series that existed before the window has a sample there: its increase counts from its
    value at `since`, and only samples from `since` on come back. A series whose first sample
    is at or after `since` started inside the window: it counts from zero, its first value
    included (an evaluator created with the A/B test replays much of its set before the
    first scrape). Without `since`, the increase counts from the first sample."""
    if not points:
        return np.zeros(0), np.zeros(0)
    t = np.array([p[0] for p in points], dtype=float)
    v = np.array([p[1] for p in points], dtype=float)
    step = np.diff(v)
    step = np.where(step >= 0, step, v[1:])  # after a reset the counter restarted from 0
    inc = np.concatenate([[0.0], np.cumsum(step)])
    if since is None:
        return t, inc
    if t[0] >= since:
        return t, v[0] + inc
    base = inc[np.searchsorted(t, since, side="right") - 1]  # the last sample at or before since
    keep = t >= since
    return t[keep], inc[keep] - base


def on_grid(points: Points, grid: np.ndarray, since: float | None = None) -> np.ndarray:
    """The increase since the start at each grid time (held at the last known value)."""
    t, inc = increases(points, since)
    if t.size == 0:
        return np.full(grid.shape, np.nan)
    idx = np.searchsorted(t, grid, side="right") - 1
    out = np.where(idx >= 0, inc[np.clip(idx, 0, None)], np.nan)
    return out


def common_grid(series: Mapping[str, Points], since: float | None = None) -> np.ndarray:
    """Every sample time of `series`, from `since` on."""
    times = sorted({p[0] for pts in series.values() for p in pts if since is None or p[0] >= since})
    return np.array(times, dtype=float)


@dataclass(frozen=True)
class Band:
    """A per-variant estimate over time with its always-valid interval."""

    times: np.ndarray
    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    samples: np.ndarray


@dataclass(frozen=True)
class RatioSums:
    """Range data of the five sufficient statistics of one ratio metric, per variant."""

    count: Mapping[str, Points]  # utterances
    x: Mapping[str, Points]  # Σe
    y: Mapping[str, Points]  # Σn
    xx: Mapping[str, Points]  # Σe²
    yy: Mapping[str, Points]  # Σn²
    xy: Mapping[str, Points]  # Σe·n


def ratio_over_time(
    sums: RatioSums, alpha: float = 0.05, tuning_n: float = 500.0, since: float | None = None
) -> dict[str, Band]:
    grid = common_grid(sums.count, since)
    out: dict[str, Band] = {}
    for variant in sorted(sums.count):
        cols = [
            on_grid(getattr(sums, k).get(variant, ()), grid, since)
            for k in ("count", "x", "y", "xx", "yy", "xy")
        ]
        est, lo, hi = (np.full(grid.shape, np.nan) for _ in range(3))
        for i in range(grid.size):
            n, x, y, xx, yy, xy = (float(c[i]) for c in cols)
            if not all(math.isfinite(v) for v in (n, x, y, xx, yy, xy)) or n < 2 or y <= 0:
                continue
            r = RatioStats(n, x, y, xx, yy, xy)
            se = r.se
            est[i] = r.ratio
            if math.isfinite(se):
                half = float(sequential.cs_halfwidth(se, n, alpha, tuning_n))
                lo[i], hi[i] = max(0.0, r.ratio - half), r.ratio + half
        out[variant] = Band(grid, est, lo, hi, cols[0])
    return out


@dataclass(frozen=True)
class PairSums:
    """Range data of the paired sufficient statistics of one candidate against the control."""

    pairs: Points
    ref: Points  # Σn
    ref_sq: Points  # Σn²
    cand: Points  # Σe_cand
    base: Points  # Σe_base
    diff_sq: Points  # Σd²
    cand_sq: Points  # Σe_cand²
    base_sq: Points  # Σe_base²
    cand_x_ref: Points  # Σe_cand·n
    base_x_ref: Points  # Σe_base·n


@dataclass(frozen=True)
class Evidence:
    times: np.ndarray
    effect: np.ndarray  # ΔW = W(candidate) - W(control)
    p_value: np.ndarray  # always-valid two-sided p, running minimum over the looks so far
    samples: np.ndarray


def paired_evidence_over_time(
    pair: PairSums, alpha: float = 0.05, tuning_n: float = 500.0, since: float | None = None
) -> Evidence:
    grid = common_grid({"p": pair.pairs}, since)
    names = (
        "pairs",
        "ref",
        "ref_sq",
        "cand",
        "base",
        "diff_sq",
        "cand_sq",
        "base_sq",
        "cand_x_ref",
        "base_x_ref",
    )
    cols = {k: on_grid(getattr(pair, k), grid, since) for k in names}
    effect, p = np.full(grid.shape, np.nan), np.full(grid.shape, np.nan)
    running: float | None = None
    for i in range(grid.size):
        v = {k: float(c[i]) for k, c in cols.items()}
        if not all(math.isfinite(x) for x in v.values()) or v["pairs"] < 2 or v["ref"] <= 0:
            continue
        stats = PairedStats.from_exported(
            pairs=v["pairs"],
            sum_len=v["ref"],
            sum_len_sq=v["ref_sq"],
            sum_cand=v["cand"],
            sum_base=v["base"],
            sum_diff_sq=v["diff_sq"],
            sum_cand_sq=v["cand_sq"],
            sum_base_sq=v["base_sq"],
            sum_cand_len=v["cand_x_ref"],
            sum_base_len=v["base_x_ref"],
        )
        delta, se = stats.difference, stats.difference_se
        effect[i] = delta
        if not (math.isfinite(se) and se > 0):
            continue
        two_sided, _, _ = sequential.always_valid_p(delta / se, v["pairs"], alpha, tuning_n)
        running = sequential.running_min(running, float(two_sided))
        p[i] = running
    return Evidence(grid, effect, p, cols["pairs"])


@dataclass(frozen=True)
class Split:
    times: np.ndarray  # end of each step (the first step runs from the window's start)
    share: dict[str, np.ndarray]  # share of the step's requests per variant (NaN: none sent)
    weight: dict[str, float] = field(default_factory=dict)  # configured weight (fraction)


def _shares(step: Mapping[str, np.ndarray], grid: np.ndarray, weights: Mapping[str, float] | None) -> Split:
    total = sum(step.values()) if step else np.zeros(grid.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = {v: np.where(total > 0, s / total, np.nan) for v, s in step.items()}
    norm = sum((weights or {}).values()) or 1.0
    return Split(grid, share, {v: w / norm for v, w in (weights or {}).items()})


def split_over_time(
    requests: Mapping[str, Points], weights: Mapping[str, float] | None = None, since: float | None = None
) -> Split:
    grid = common_grid(requests, since)
    cum = {v: on_grid(pts, grid, since) for v, pts in requests.items()}
    return _shares(
        {v: np.diff(np.nan_to_num(c, nan=0.0), prepend=0.0) for v, c in cum.items()}, grid, weights
    )


def _live_cumulative(
    served: Mapping[str, Points], replayed: Mapping[str, Points], since: float | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(grid, per variant: Triton's increase less the replay's increase since the start)."""
    grid = common_grid({**served, **{f"replay/{k}": v for k, v in replayed.items()}}, since)
    out: dict[str, np.ndarray] = {}
    for v, pts in served.items():
        live = np.nan_to_num(on_grid(pts, grid, since), nan=0.0)
        if replayed.get(v):
            live = live - np.nan_to_num(on_grid(replayed[v], grid, since), nan=0.0)
        out[v] = live
    return grid, out


def live_split_over_time(
    served: Mapping[str, Points],
    replayed: Mapping[str, Points],
    weights: Mapping[str, float] | None = None,
    since: float | None = None,
) -> Split:
    """The split of client traffic: per variant and step, the requests its Triton served less
    the evaluator's replay to it. Triton and the evaluator are scraped at different moments, so
    a step's difference can be off by the replay of those few seconds, one step low and the
    next high (negatives count as 0); the error stays in its step and is small wherever the
    clients send more than the evaluator replays."""
    grid, live = _live_cumulative(served, replayed, since)
    return _shares({v: np.diff(c, prepend=0.0).clip(min=0.0) for v, c in live.items()}, grid, weights)


def live_totals(
    served: Mapping[str, Points], replayed: Mapping[str, Points], since: float | None = None
) -> dict[str, float]:
    """Client requests per variant over the whole window: Triton's total less the replay's."""
    _, live = _live_cumulative(served, replayed, since)
    return {v: max(float(c[-1]), 0.0) if c.size else 0.0 for v, c in live.items()}


@dataclass(frozen=True)
class Distribution:
    upper_bounds: np.ndarray  # bucket upper bounds (seconds), +Inf last
    counts: np.ndarray  # observations per bucket (not cumulative)


def latency_distribution(buckets: Mapping[str, Points], since: float | None = None) -> Distribution:
    """Bucket increments over the window from `le` -> cumulative counter range data."""
    bounds = sorted(buckets, key=lambda le: math.inf if le in ("+Inf", "inf") else float(le))
    ends = [increases(buckets[le], since)[1] for le in bounds]
    cumulative = np.array([inc[-1] if inc.size else 0.0 for inc in ends])
    counts = np.diff(cumulative, prepend=0.0).clip(min=0.0)
    ub = np.array([math.inf if le in ("+Inf", "inf") else float(le) for le in bounds])
    return Distribution(ub, counts)


def quantile(d: Distribution, q: float) -> float:
    """The q-quantile by linear interpolation inside its bucket (Prometheus' rule)."""
    total = float(d.counts.sum())
    if total <= 0:
        return math.nan
    cum = np.cumsum(d.counts)
    k = int(np.searchsorted(cum, q * total, side="left"))
    lo = 0.0 if k == 0 else float(d.upper_bounds[k - 1])
    hi = float(d.upper_bounds[k])
    if math.isinf(hi):
        return lo
    before = 0.0 if k == 0 else float(cum[k - 1])
    inside = float(d.counts[k]) or 1.0
    return lo + (hi - lo) * (q * total - before) / inside
