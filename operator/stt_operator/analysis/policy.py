"""Policy: a history of analysis runs -> what the rollout / A-B controller does next.

Actions:
- `Advance`: enough consecutive Passed runs (consecutiveSuccessLimit).
- `Rollback`: more Failed runs than failureLimit (NoData counts as Failed only when the user
  chose noDataPolicy=Fail).
- `Pause`: no data with noDataPolicy=Pause (the default), more Inconclusive runs than
  inconclusiveLimit, or Prometheus errors several times in a row. A person or a later run resumes.
- `Continue`: keep collecting and look again next interval.

Missing data or failing queries never lead to Advance or Rollback by themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stt_operator.analysis.model import OUTCOMES
from stt_operator.api.common import AnalysisSpec

DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4  # as Argo Rollouts' consecutiveErrorLimit


@dataclass(frozen=True)
class PolicySpec:
    failure_limit: int = 0
    inconclusive_limit: int = 0  # 0: wait without limit
    consecutive_success_limit: int = 1
    no_data_policy: str = "Pause"
    consecutive_error_limit: int = DEFAULT_CONSECUTIVE_ERROR_LIMIT

    def __post_init__(self) -> None:
        # The API model bounds these already; checked again however the policy is made.
        if self.failure_limit < 0 or self.inconclusive_limit < 0:
            raise ValueError("failureLimit and inconclusiveLimit must be >= 0")
        if self.consecutive_success_limit < 1 or self.consecutive_error_limit < 1:
            raise ValueError("consecutiveSuccessLimit and consecutiveErrorLimit must be >= 1")
        if self.no_data_policy not in ("Pause", "Fail", "Ignore"):
            raise ValueError(f"noDataPolicy {self.no_data_policy!r} is not Pause, Fail or Ignore")

    @classmethod
    def from_spec(cls, spec: AnalysisSpec | None) -> PolicySpec:
        """The policy of one `spec.analysis` (the defaults when there is none). AnalysisSpec has
        no consecutiveErrorLimit: the default (Argo Rollouts') applies."""
        if spec is None:
            return cls()
        return cls(
            failure_limit=spec.failure_limit,
            inconclusive_limit=spec.inconclusive_limit,
            consecutive_success_limit=spec.consecutive_success_limit,
            no_data_policy=spec.no_data_policy,
        )


@dataclass(frozen=True)
class Decision:
    action: str  # Continue | Advance | Rollback | Pause
    reason: str
    failures: int = 0
    inconclusive: int = 0
    consecutive_successes: int = 0
    consecutive_errors: int = 0
    runs: int = 0


def _outcome(run: Any) -> tuple[str, str]:
    if isinstance(run, str):
        outcome, message = run, ""
    elif isinstance(run, Mapping):
        outcome, message = run.get("outcome"), str(run.get("message", ""))
    else:
        outcome, message = getattr(run, "outcome", None), str(getattr(run, "message", ""))
    if outcome not in OUTCOMES:
        raise ValueError(f"analysis run outcome {outcome!r} is not one of {list(OUTCOMES)}")
    return str(outcome), message


def decide(history: Sequence[Any], spec: AnalysisSpec | PolicySpec | None = None) -> Decision:
    """`history`: this analysis's runs, oldest first (AnalysisResult, dicts with `outcome` and
    `message`, or outcome strings). `spec`: the resource's AnalysisSpec, a PolicySpec, or None
    for the defaults."""
    p = spec if isinstance(spec, PolicySpec) else PolicySpec.from_spec(spec)
    runs = [_outcome(r) for r in history]
    if not runs:
        return Decision("Continue", "no analysis run yet")
    failed = [m for o, m in runs if o == "Failed" or (o == "NoData" and p.no_data_policy == "Fail")]
    inconclusive = sum(1 for o, _ in runs if o == "Inconclusive")
    streak = 0
    for o, _ in reversed(runs):
        if o != "Passed":
            break
        streak += 1
    errors = 0
    for o, _ in reversed(runs):
        if o != "Error":
            break
        errors += 1
    counts = {
        "failures": len(failed),
        "inconclusive": inconclusive,
        "consecutive_successes": streak,
        "consecutive_errors": errors,
        "runs": len(runs),
    }
    last_outcome, last_msg = runs[-1]
    if len(failed) > p.failure_limit:
        why = failed[-1] or "analysis failed"
        return Decision(
            "Rollback", f"{len(failed)} failed run(s) > failureLimit {p.failure_limit}: {why}", **counts
        )
    if last_outcome == "NoData":
        if p.no_data_policy == "Pause":
            return Decision("Pause", f"no data, pausing (noDataPolicy=Pause): {last_msg}", **counts)
        if p.no_data_policy == "Ignore":
            return Decision("Continue", f"no data, waiting (noDataPolicy=Ignore): {last_msg}", **counts)
        return Decision(
            "Continue", f"no data counted as failure {len(failed)}/{p.failure_limit}: {last_msg}", **counts
        )
    if errors >= p.consecutive_error_limit:
        return Decision("Pause", f"{errors} analysis errors in a row: {last_msg}", **counts)
    if p.inconclusive_limit > 0 and inconclusive > p.inconclusive_limit:
        return Decision(
            "Pause",
            f"{inconclusive} inconclusive run(s) > inconclusiveLimit {p.inconclusive_limit}: {last_msg}",
            **counts,
        )
    if streak >= p.consecutive_success_limit:
        return Decision("Advance", f"{streak} consecutive passed run(s): {last_msg}", **counts)
    if last_outcome == "Passed":
        return Decision(
            "Continue", f"passed {streak}/{p.consecutive_success_limit} consecutive runs", **counts
        )
    return Decision("Continue", f"{last_outcome.lower()}: {last_msg}" if last_msg else last_outcome, **counts)
