-- Hold the rollout where it is (spec.paused; with Argo CD auto-sync, see docs/argocd.md).
obj.spec.paused = true
return obj
