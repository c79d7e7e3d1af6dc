-- Argo CD health of an ABTest (stt.dev/v1alpha1). A test that ended with a verdict is Healthy,
-- whatever the verdict; one that could not run is Degraded.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to reconcile"
  return hs
end
local status = obj.status
local phase = status.phase
local message = status.message or ""
if status.winner ~= nil and status.winner ~= "" then
  message = message .. " (winner " .. status.winner .. ")"
end
if phase == "Concluded" or phase == "Promoted" or phase == "Stopped" then
  hs.status = "Healthy"
elseif phase == "Failed" then
  hs.status = "Degraded"
else
  -- Pending, Running
  hs.status = "Progressing"
end
hs.message = message
return hs
