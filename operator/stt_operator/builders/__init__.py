"""Pure builders: turn specs into Kubernetes manifests (plain dicts). No I/O here."""
