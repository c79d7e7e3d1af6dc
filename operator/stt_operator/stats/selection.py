"""Model comparison and best-model selection (the seed's compareModels / selectBestModel).

Candidates are summaries of Ready models (from STTModel.status.validation / analytics). Each one
is kept or dropped under hard criteria, with a reason per decision, then ranked on the metric to
optimise; ties are broken by WER, then latency, then name, so the choice is deterministic.

Inputs are typed: a `ModelSummary` per candidate and a `Criteria`. This package imports no API
model; `rollout/selection.py` builds both from the STTModels and the endpoint's `spec.selector`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stt_operator.stats.ratio import RatioStats, unpaired_difference

# metric -> (summary field, lower is better)
METRICS: dict[str, tuple[str, bool]] = {
    "wer": ("wer", True),
    "cer": ("cer", True),
    "latency": ("latency_p95_ms", True),
    "latency-p95": ("latency_p95_ms", True),
    "confidence": ("confidence", False),
    "throughput": ("throughput_rps", False),
    "rtf": ("real_time_factor", True),
}


@dataclass(frozen=True)
class ModelSummary:
    name: str
    language: str | None = None
    language_pair: str | None = None
    wer: float | None = None
    cer: float | None = None
    latency_p95_ms: float | None = None
    confidence: float | None = None
    throughput_rps: float | None = None
    real_time_factor: float | None = None
    ready: bool = True
    wer_stats: RatioStats | None = None  # per-utterance sufficient statistics, when known

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model summary lacks a name")


@dataclass(frozen=True)
class Criteria:
    language: str | None = None
    language_pair: str | None = None
    max_wer: float | None = None
    max_cer: float | None = None
    max_latency_p95_ms: float | None = None
    min_confidence: float | None = None
    optimize: str = "wer"

    def __post_init__(self) -> None:
        if self.optimize not in METRICS:
            raise ValueError(f"criteria.optimize {self.optimize!r} is not one of {sorted(METRICS)}")


@dataclass(frozen=True)
class CandidateVerdict:
    name: str
    kept: bool
    reasons: tuple[str, ...]
    score: float | None = None
    rank: int | None = None


@dataclass(frozen=True)
class Selection:
    best: str | None
    candidates: tuple[CandidateVerdict, ...]
    explanation: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def _screen(m: ModelSummary, c: Criteria) -> tuple[bool, list[str]]:
    reasons: list[str] = []
    kept = True

    def drop(msg: str) -> None:
        nonlocal kept
        kept = False
        reasons.append(msg)

    if not m.ready:
        drop("not Ready")
    if c.language and m.language != c.language:
        drop(f"language {m.language} != {c.language}")
    if c.language_pair and m.language_pair != c.language_pair:
        drop(f"language pair {m.language_pair} != {c.language_pair}")
    checks = (
        ("wer", m.wer, c.max_wer, "<="),
        ("cer", m.cer, c.max_cer, "<="),
        ("latency p95 ms", m.latency_p95_ms, c.max_latency_p95_ms, "<="),
        ("confidence", m.confidence, c.min_confidence, ">="),
    )
    for label, value, bound, op in checks:
        if bound is None:
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)):
            drop(f"{label} unknown (criterion {op} {bound:g})")
        elif (op == "<=" and value > bound) or (op == ">=" and value < bound):
            drop(f"{label} {value:g} violates {op} {bound:g}")
        else:
            reasons.append(f"{label} {value:g} {op} {bound:g}")
    return kept, reasons


def select_best_model(models: Iterable[ModelSummary], criteria: Criteria | None = None) -> Selection:
    """Screen candidates under `criteria` (none: every Ready model, lowest WER wins) and pick the
    best on `criteria.optimize`."""
    crit = criteria if criteria is not None else Criteria()
    field_name, lower = METRICS[crit.optimize]
    summaries = list(models)
    screened = []
    for m in summaries:
        kept, reasons = _screen(m, crit)
        score = getattr(m, field_name)
        if kept and score is None:
            kept, reasons = False, [*reasons, f"{crit.optimize} unknown, cannot rank"]
        screened.append((m, kept, reasons, score))

    def key(item: tuple[ModelSummary, bool, list[str], Any]) -> tuple[float, float, float, str]:
        m, _, _, score = item
        s = float(score) if lower else -float(score)
        return (
            s,
            m.wer if m.wer is not None else math.inf,
            m.latency_p95_ms if m.latency_p95_ms is not None else math.inf,
            m.name,
        )

    kept_sorted = sorted((s for s in screened if s[1]), key=key)
    ranks = {s[0].name: i + 1 for i, s in enumerate(kept_sorted)}
    verdicts = tuple(
        CandidateVerdict(m.name, kept, tuple(reasons), score if kept else None, ranks.get(m.name))
        for m, kept, reasons, score in sorted(
            screened, key=lambda s: (ranks.get(s[0].name, 10**9), s[0].name)
        )
    )
    notes: list[str] = []
    if not kept_sorted:
        dropped = "; ".join(f"{v.name}: {', '.join(v.reasons)}" for v in verdicts)
        return Selection(
            None, verdicts, f"no candidate meets the criteria ({dropped})" if verdicts else "no candidates"
        )
    best = kept_sorted[0][0]
    if len(kept_sorted) > 1 and crit.optimize == "wer":
        second = kept_sorted[1][0]
        if best.wer_stats is not None and second.wer_stats is not None:
            cmp = unpaired_difference(second.wer_stats, best.wer_stats, sequential_=False)
            if cmp.p_value >= 0.05:
                notes.append(
                    f"{best.name} and {second.name} are not significantly different on WER "
                    f"(diff {cmp.estimate:+.4f}, p={cmp.p_value:.2g})"
                )
    direction = "lowest" if lower else "highest"
    explanation = (
        f"{best.name} selected: {direction} {crit.optimize} ({getattr(best, field_name):g}) among "
        f"{len(kept_sorted)} of {len(summaries)} candidates meeting the criteria"
    )
    return Selection(best.name, verdicts, explanation, tuple(notes))


@dataclass(frozen=True)
class ModelComparisonRow:
    name: str
    value: float | None
    rank: int | None
    difference_to_best: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None


def compare_models(models: Iterable[ModelSummary], metric: str = "wer") -> list[ModelComparisonRow]:
    """Rank models on one metric; for WER with per-utterance statistics also the difference to
    the best model with a (fixed-horizon) 95 % CI and p-value."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {sorted(METRICS)}")
    field_name, lower = METRICS[metric]
    summaries = list(models)
    known = [m for m in summaries if getattr(m, field_name) is not None]
    known.sort(key=lambda m: (getattr(m, field_name) if lower else -getattr(m, field_name), m.name))
    rows: list[ModelComparisonRow] = []
    best = known[0] if known else None
    for i, m in enumerate(known):
        value = float(getattr(m, field_name))
        assert best is not None
        row = ModelComparisonRow(m.name, value, i + 1, value - float(getattr(best, field_name)))
        if metric == "wer" and m is not best and m.wer_stats is not None and best.wer_stats is not None:
            cmp = unpaired_difference(m.wer_stats, best.wer_stats, sequential_=False)
            row = ModelComparisonRow(m.name, value, i + 1, cmp.estimate, cmp.ci_low, cmp.ci_high, cmp.p_value)
        rows.append(row)
    rows.extend(ModelComparisonRow(m.name, None, None, None) for m in summaries if m not in known)
    return rows
