"""`Immediate` strategy: bring the new revision to Available, switch all traffic, retire the old.

The route never names a revision that is not Available, so the endpoint always has a ready
backend once it had one. All memory lives in `status` (stableRevision, revisions, …), so the
planner is safe to run any number of times and after an operator restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from stt_operator.api.common import iso, parse_iso
from stt_operator.api.modeldeployment import PHASE_DEGRADED, PHASE_HEALTHY, PHASE_PROGRESSING
from stt_operator.builders.serving import Revision
from stt_operator.rollout.plan import (
    WAIT_REQUEUE_S,
    ConditionUpdate,
    EndpointPlan,
    EventUpdate,
    ObservedRevision,
    settled,
)


def record_promotion(
    history: Sequence[Mapping[str, Any]], revision: Revision, now: datetime, limit: int
) -> list[dict[str, Any]]:
    """Append a promoted revision to the history (numbered from 1), keeping `limit` entries."""
    entries = [dict(h) for h in history]
    if entries and entries[-1].get("revisionId") == revision.id:
        if entries[-1].get("outcome") == "Serving":
            return entries  # already recorded: a repeated reconcile must not add it twice
        if entries[-1].get("outcome") == "RolledBack":
            # A reconcile planned from a spec the rollback is about to change (monitoring's undo
            # writes spec.model): the rolled-back revision is not promoted again.
            return entries
    number = max((int(h.get("revision", 0)) for h in entries), default=0) + 1
    for entry in entries:
        if entry.get("outcome") == "Serving":
            entry["outcome"] = "Superseded"
    entries.append(
        {
            "revision": number,
            "revisionId": revision.id,
            "model": revision.model,
            "modelDigest": revision.model_digest,
            "createdAt": iso(now),
            "promotedAt": iso(now),
            "outcome": "Serving",
        }
    )
    return entries[-limit:] if limit > 0 else entries


def plan_immediate(
    desired: Revision,
    status: Mapping[str, Any],
    observed: Mapping[str, ObservedRevision],
    now: datetime,
    *,
    scale_down_delay_s: float = 30.0,
    history_limit: int = 10,
) -> EndpointPlan:
    plan = EndpointPlan()
    stable_id: str | None = status.get("stableRevision")
    desired_obs = observed.get(desired.id)
    plan.ensure.append((desired, "stable" if stable_id in (None, desired.id) else "canary"))

    if desired_obs is not None and desired_obs.available:
        # Switch (or keep) all traffic on the desired revision.
        plan.route = {desired.id: 100}
        promoted_now = stable_id != desired.id
        history = record_promotion(status.get("revisions") or [], desired, now, history_limit)
        plan.status.update(
            stableRevision=desired.id,
            stableModel=desired.model,
            **settled(100),
            revisions=history,
            phase=PHASE_HEALTHY,
        )
        if promoted_now:
            verb = "Deployed" if stable_id is None else "Promoted"
            plan.events.append(
                EventUpdate(
                    "Normal", verb, f"model {desired.model} (revision {desired.id}) serves 100% of traffic"
                )
            )
        promoted_at = parse_iso(history[-1].get("promotedAt")) if history else now
        retire_at = (promoted_at or now).timestamp() + scale_down_delay_s
        stale = sorted(rid for rid in observed if rid != desired.id)
        if stale:
            if now.timestamp() >= retire_at:
                plan.delete = stale
                plan.events.append(
                    EventUpdate("Normal", "RevisionRetired", f"removed old revision(s) {', '.join(stale)}")
                )
            else:
                plan.requeue_after = max(1.0, retire_at - now.timestamp())
        plan.conditions += [
            ConditionUpdate("Available", "True", "RevisionAvailable", f"revision {desired.id} is Available"),
            ConditionUpdate("Progressing", "False", "RolloutComplete", f"serving model {desired.model}"),
            ConditionUpdate("Ready", "True", "Serving", f"model {desired.model} serves the endpoint"),
        ]
        return plan

    if desired_obs is not None and stable_id == desired.id:
        return _plan_stable_lost(plan, desired, desired_obs, status)

    # The desired revision is not Available yet: keep traffic where it is.
    stable_obs = observed.get(stable_id) if stable_id else None
    if stable_obs is not None and stable_obs.available:
        plan.route = {stable_id: 100}
    plan.status.update(
        canaryRevision=desired.id, canaryModel=desired.model, currentWeight=0, phase=PHASE_PROGRESSING
    )
    waiting = f"waiting for revision {desired.id} (model {desired.model}) to become Available"
    plan.conditions.append(ConditionUpdate("Progressing", "True", "NewRevisionStarting", waiting))
    if stable_obs is not None and stable_obs.available:
        plan.conditions += [
            ConditionUpdate(
                "Available", "True", "StableAvailable", f"stable revision {stable_id} serves traffic"
            ),
            ConditionUpdate(
                "Ready", "True", "Serving", f"model {stable_obs.model} serves while the new one starts"
            ),
        ]
    else:
        plan.conditions += [
            ConditionUpdate("Available", "False", "NoAvailableRevision", waiting),
            ConditionUpdate("Ready", "False", "RevisionStarting", waiting),
        ]
    if stable_id is not None and stable_id != desired.id and status.get("canaryRevision") != desired.id:
        plan.events.append(
            EventUpdate("Normal", "RolloutStarted", f"starting model {desired.model} ({desired.id})")
        )
    plan.requeue_after = WAIT_REQUEUE_S  # the Deployment's watch wakes it sooner
    return plan


def _plan_stable_lost(
    plan: EndpointPlan, stable: Revision, observed: ObservedRevision, status: Mapping[str, Any]
) -> EndpointPlan:
    """The serving revision lost ready replicas (a crashed or restarting Triton): no rollout.

    While some replicas are ready the endpoint serves, degraded. With none the route keeps
    naming the revision at weight 0 (a pure weight edit brings it back) so no request is sent
    to a backend without ready endpoints, and status says the endpoint is not serving."""
    wanted = observed.replicas if observed.replicas is not None else "?"
    ready = f"{observed.ready_replicas} of {wanted} replicas of revision {stable.id} ready"
    plan.status.update(canaryRevision=None, canaryModel=None, phase=PHASE_DEGRADED)
    plan.conditions.append(ConditionUpdate("Progressing", "False", "StableDegraded", ready))
    if observed.ready_replicas > 0:
        plan.route = {stable.id: 100}
        plan.status.update(currentWeight=100)
        plan.conditions += [
            ConditionUpdate("Available", "True", "ReplicasMissing", ready),
            ConditionUpdate("Ready", "True", "Serving", f"model {stable.model} serves with {ready}"),
        ]
    else:
        plan.route = {stable.id: 0}
        plan.status.update(currentWeight=0)
        plan.conditions += [
            ConditionUpdate("Available", "False", "NoReadyReplicas", ready),
            ConditionUpdate("Ready", "False", "NotServing", f"model {stable.model} is not serving: {ready}"),
        ]
        if status.get("phase") != "Degraded" or status.get("currentWeight") != 0:
            plan.events.append(EventUpdate("Warning", "NotServing", f"no ready replica: {ready}"))
    plan.requeue_after = 5.0
    return plan
