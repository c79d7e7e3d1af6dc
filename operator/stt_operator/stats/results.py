"""Result types shared by the statistics functions."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NotEnoughData:
    """Explicitly "no verdict yet": which arm still needs how many samples."""

    reason: str
    have: dict[str, float] = field(default_factory=dict)
    need: dict[str, float] = field(default_factory=dict)

    @property
    def missing(self) -> dict[str, float]:
        return {k: max(0.0, self.need.get(k, 0.0) - self.have.get(k, 0.0)) for k in self.need}

    def explain(self) -> str:
        parts = [f"{k} {self.have.get(k, 0):g}/{v:g}" for k, v in self.need.items()]
        return f"{self.reason} ({', '.join(parts)})" if parts else self.reason


@dataclass(frozen=True)
class Comparison:
    """Candidate vs baseline on one metric: effect = candidate - baseline (minus `null`)."""

    method: str
    estimate: float  # candidate - baseline (metric units)
    se: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, H0: effect == null
    p_greater: float  # one-sided, H0: effect <= null (small => candidate larger)
    p_less: float  # one-sided, H0: effect >= null (small => candidate smaller)
    n_candidate: float
    n_baseline: float
    null: float = 0.0
    sequential: bool = True
    paired: bool = False
    confidence: float = 0.95
