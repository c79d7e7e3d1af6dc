-- Argo CD health of an STTModel (stt.dev/v1alpha1): validated and servable, or why not.
local hs = {}
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
local message = status.message or ""
local ready = nil
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" then
      ready = c
    end
  end
end
if message == "" and ready ~= nil and ready.message ~= nil then
  message = ready.message
end
if status.phase == "Ready" then
  hs.status = "Healthy"
elseif status.phase == "Failed" then
  hs.status = "Degraded"
else
  -- Pending, Validating, Quantizing
  hs.status = "Progressing"
end
hs.message = message
return hs
