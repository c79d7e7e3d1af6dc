"""pytest fixtures: cluster_fixtures (filled in by its owner)."""
