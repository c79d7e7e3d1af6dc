-- Which actions Argo CD offers on an ABTest (docs/argocd.md).
local actions = {}
local phase = (obj.status or {}).phase or ""
local running = phase == "" or phase == "Pending" or phase == "Running"
actions["abort"] = {["disabled"] = not running or (obj.spec ~= nil and obj.spec.stop == true)}
return actions
