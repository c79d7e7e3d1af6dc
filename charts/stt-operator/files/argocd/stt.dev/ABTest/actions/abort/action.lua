-- Stop the A/B test now (phase Stopped): the route goes back to the endpoint's own rollout.
obj.spec.stop = true
return obj
