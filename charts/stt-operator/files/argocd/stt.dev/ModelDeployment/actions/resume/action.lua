-- Continue a paused rollout.
obj.spec.paused = false
return obj
