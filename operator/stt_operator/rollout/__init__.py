"""The rollout state machine: pure functions from (spec, status, observed cluster) to a plan."""
