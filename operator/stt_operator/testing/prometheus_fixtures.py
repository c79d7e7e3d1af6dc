"""pytest fixtures: prometheus_fixtures (filled in by its owner)."""
