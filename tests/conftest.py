"""Shared pytest set-up. Fixtures that start real components live in the package
(`stt_harness.*`) so the demo and `make cluster` use the same code."""

pytest_plugins = [
    "stt_harness.cluster_fixtures",
    "stt_harness.prometheus_fixtures",
    "stt_harness.triton_fixtures",
    "stt_harness.operator_fixtures",
    "stt_harness.gateway_fixtures",
    "stt_harness.promoperator_fixtures",
    "stt_harness.node_fixtures",
]
