-- Roll the rollout in flight back to the stable model now (reason "aborted by a person").
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["stt.dev/abort"] = "true"
return obj
