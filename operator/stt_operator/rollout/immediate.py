"""`Immediate` strategy: bring the new revision to Available, switch all traffic, retire the old.

The route never names a revision that is not Available, so the endpoint always has a ready
backend once it had one. All memory lives in `status` (stableRevision, revisions, …), so the
planner is safe to run any number of times and after an operator restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from stt_operator.api.common import iso, parse_iso
from stt_operator.api.modeldeployment import (
    PHASE_DEGRADED,
    PHASE_HEALTHY,
    PHASE_PROGRESSING,
    REVISION_ROLLED_BACK,
    REVISION_SERVING,
    REVISION_SUPERSEDED,
    ModelDeploymentStatus,
    RevisionRecord,
)
from stt_operator.builders.serving import Revision
from stt_operator.rollout.plan import (
    ConditionUpdate,
    EndpointPlan,
    EventUpdate,
    ObservedRevision,
    settle,
)


def record_promotion(
    history: Sequence[RevisionRecord], revision: Revision, now: datetime, limit: int
) -> list[RevisionRecord]:
    """Append a promoted revision to the history (numbered from 1), keeping `limit` entries.
    Returns copies: the caller may edit them without touching `history`."""
    entries = [h.model_copy() for h in history]
    if entries and entries[-1].revision_id == revision.id:
        if entries[-1].outcome == REVISION_SERVING:
            return entries  # already recorded: a repeated reconcile must not add it twice
        if entries[-1].outcome == REVISION_ROLLED_BACK:
            # A reconcile planned from a spec the rollback is about to change (monitoring's undo
            # writes spec.model): the rolled-back revision is not promoted again.
            return entries
    number = max((h.revision for h in entries), default=0) + 1
    for entry in entries:
        if entry.outcome == REVISION_SERVING:
            entry.outcome = REVISION_SUPERSEDED
    entries.append(
        RevisionRecord(
            revision=number,
            revision_id=revision.id,
            model=revision.model,
            model_digest=revision.model_digest,
            created_at=iso(now),
            promoted_at=iso(now),
            outcome=REVISION_SERVING,
        )
    )
    return entries[-limit:] if limit > 0 else entries


def promote_revision(
    plan: EndpointPlan,
    desired: Revision,
    status: ModelDeploymentStatus,
    now: datetime,
    history_limit: int,
    *,
    event: str | None,
    how: str | None = None,
    created_at: str | None = None,
) -> list[RevisionRecord]:
    """The promotion every strategy shares: all traffic to `desired`, recorded in the history,
    it becomes the stable revision, nothing in flight, phase Healthy. `event`: the Event's
    reason (None: no Event), `how` closes its message; `created_at`: when the rollout began,
    for the history entry. The caller adds its conditions, retirement and requeue. Returns
    the new history."""
    plan.route = {desired.id: 100}
    history = record_promotion(status.revisions, desired, now, history_limit)
    if created_at and history[-1].revision_id == desired.id:
        history[-1].created_at = created_at
    plan.set_status(stable_revision=desired.id, stable_model=desired.model)
    settle(plan, 100)
    plan.set_status(revisions=history, phase=PHASE_HEALTHY)
    if event is not None:
        message = f"model {desired.model} (revision {desired.id}) serves 100% of traffic"
        plan.events.append(EventUpdate("Normal", event, message + (f" ({how})" if how else "")))
    return history


def plan_immediate(
    desired: Revision,
    status: ModelDeploymentStatus,
    observed: Mapping[str, ObservedRevision],
    now: datetime,
    *,
    scale_down_delay_s: float = 30.0,
    history_limit: int = 10,
) -> EndpointPlan:
    plan = EndpointPlan.from_status(status)
    stable_id = status.stable_revision
    desired_obs = observed.get(desired.id)
    plan.ensure.append((desired, "stable" if stable_id in (None, desired.id) else "canary"))

    if desired_obs is not None and desired_obs.available:
        # Switch (or keep) all traffic on the desired revision; a repeated reconcile says nothing.
        verb = None if stable_id == desired.id else "Deployed" if stable_id is None else "Promoted"
        history = promote_revision(plan, desired, status, now, history_limit, event=verb)
        promoted_at = parse_iso(history[-1].promoted_at) if history else now
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
    plan.set_status(
        canary_revision=desired.id, canary_model=desired.model, current_weight=0, phase=PHASE_PROGRESSING
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
    if stable_id is not None and stable_id != desired.id and status.canary_revision != desired.id:
        plan.events.append(
            EventUpdate("Normal", "RolloutStarted", f"starting model {desired.model} ({desired.id})")
        )
    # Nothing here waits on the clock (Immediate has no deadline): the Deployment's watch wakes
    # the endpoint when its availability changes. Looking every 10 s as well cost 37 reconciles
    # per endpoint while 5,000 new ones waited minutes for their pods (bench/scale/RESULTS.md).
    plan.requeue_after = None
    return plan


def _plan_stable_lost(
    plan: EndpointPlan, stable: Revision, observed: ObservedRevision, status: ModelDeploymentStatus
) -> EndpointPlan:
    """The serving revision lost ready replicas (a crashed or restarting Triton): no rollout.

    While some replicas are ready the endpoint serves, degraded. With none the route keeps
    naming the revision at weight 0 (a pure weight edit brings it back) so no request is sent
    to a backend without ready endpoints, and status says the endpoint is not serving."""
    wanted = observed.replicas if observed.replicas is not None else "?"
    ready = f"{observed.ready_replicas} of {wanted} replicas of revision {stable.id} ready"
    plan.set_status(canary_revision=None, canary_model=None, phase=PHASE_DEGRADED)
    plan.conditions.append(ConditionUpdate("Progressing", "False", "StableDegraded", ready))
    if observed.ready_replicas > 0:
        plan.route = {stable.id: 100}
        plan.set_status(current_weight=100)
        plan.conditions += [
            ConditionUpdate("Available", "True", "ReplicasMissing", ready),
            ConditionUpdate("Ready", "True", "Serving", f"model {stable.model} serves with {ready}"),
        ]
    else:
        plan.route = {stable.id: 0}
        plan.set_status(current_weight=0)
        plan.conditions += [
            ConditionUpdate("Available", "False", "NoReadyReplicas", ready),
            ConditionUpdate("Ready", "False", "NotServing", f"model {stable.model} is not serving: {ready}"),
        ]
        if status.phase != PHASE_DEGRADED or status.current_weight != 0:
            plan.events.append(EventUpdate("Warning", "NotServing", f"no ready replica: {ready}"))
    plan.requeue_after = 5.0
    return plan
