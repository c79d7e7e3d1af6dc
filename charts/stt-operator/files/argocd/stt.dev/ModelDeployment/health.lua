-- Argo CD health of a ModelDeployment (stt.dev/v1alpha1), read from the status the operator
-- writes (docs/argocd.md). Runs in Argo CD's Lua 5.1 sandbox: `obj` is the live object.
local hs = {}
local function condition(status, type_)
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type == type_ then
        return c
      end
    end
  end
  return nil
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to reconcile"
  return hs
end
local status = obj.status
if obj.metadata.generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end

local phase = status.phase
local message = status.message or ""
local ready = condition(status, "Ready")
if message == "" and ready ~= nil and ready.message ~= nil then
  message = ready.message
end
if status.declaredModel ~= nil and status.stableModel ~= nil and status.declaredModel ~= status.stableModel
    and phase == "Healthy" then
  -- GitOps-safe promotion: the spec Git owns and what is served differ until Git is updated.
  message = message .. " (declared " .. status.declaredModel .. ", serving " .. status.stableModel .. ")"
end
if phase == "Healthy" then
  hs.status = "Healthy"
elseif phase == "Paused" then
  hs.status = "Suspended"
  local paused = condition(status, "Paused")
  if paused ~= nil and paused.message ~= nil and paused.message ~= "" then
    message = paused.message
  end
elseif phase == "Degraded" or phase == "RolledBack" or phase == "Failed" then
  hs.status = "Degraded"
else
  -- Pending, Progressing
  hs.status = "Progressing"
end
if status.heldBy ~= nil and status.heldBy ~= "" then
  message = message .. " (route held by ABTest " .. status.heldBy .. ")"
end
hs.message = message
return hs
