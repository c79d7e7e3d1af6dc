"""Shared pytest set-up. Fixtures that start real components live in the package
(`stt_operator.testing.*`) so the demo and `make cluster` use the same code."""

pytest_plugins = [
    "stt_operator.testing.cluster_fixtures",
    "stt_operator.testing.prometheus_fixtures",
    "stt_operator.testing.triton_fixtures",
    "stt_operator.testing.operator_fixtures",
]
