"""A/B tests as pure functions: session assignment, the ABTest planner, and the objects it needs."""
