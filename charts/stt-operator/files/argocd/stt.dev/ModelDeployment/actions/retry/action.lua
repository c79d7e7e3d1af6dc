-- Let the rolled-back revision roll out again; the value only makes each request distinct.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["stt.dev/retry"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
