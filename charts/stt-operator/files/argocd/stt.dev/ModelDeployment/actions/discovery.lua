-- Which actions Argo CD offers on a ModelDeployment, and when (docs/argocd.md).
local actions = {}
local status = obj.status or {}
local spec = obj.spec or {}
local phase = status.phase or ""
-- a rollout is in flight while a canary/preview revision other than the stable one exists
-- (right after the first deployment canaryRevision names the stable revision itself)
local in_flight = status.canaryRevision ~= nil and status.canaryRevision ~= ""
  and status.canaryRevision ~= status.stableRevision
local held = status.heldBy ~= nil and status.heldBy ~= ""
local paused = spec.paused == true

-- an ABTest that holds the route decides promotion; a rollout must be in flight
actions["promote"] = {["disabled"] = held or not in_flight}
actions["abort"] = {["disabled"] = not in_flight}
actions["pause"] = {["disabled"] = paused}
actions["resume"] = {["disabled"] = not paused}
-- retry: only while the desired revision is the one that was rolled back
actions["retry"] = {["disabled"] = status.lastRollback == nil or (phase ~= "RolledBack" and phase ~= "Degraded") or in_flight}
return actions
