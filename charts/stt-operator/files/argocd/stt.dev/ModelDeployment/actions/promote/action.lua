-- End an indefinite pause, skip the current pause/analysis step, or promote a blue-green preview.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["stt.dev/promote"] = "true"
return obj
