"""I/O with the outside world (Kubernetes API, Prometheus); thin and free of decisions."""
