"""pytest fixtures: triton_fixtures (filled in by its owner)."""
