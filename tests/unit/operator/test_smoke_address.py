"""Where the smoke transcription goes: one ready pod of the revision's (headless) Service."""

from stt_operator.controllers.looks import ready_address


def _slice(port_name, port, *endpoints):
    return {
        "ports": [{"name": "http", "port": 8000}, {"name": port_name, "port": port}],
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": ready}} for address, ready in endpoints
        ],
    }


def test_first_ready_endpoint_on_the_named_port():
    slices = [_slice("grpc", 8001, ("10.1.0.9", True), ("10.1.0.3", False), ("10.1.0.5", True))]
    assert ready_address(slices, "grpc") == "10.1.0.5:8001"


def test_no_ready_endpoint_or_no_such_port_is_none():
    assert ready_address([], "grpc") is None
    assert ready_address([_slice("grpc", 8001, ("10.1.0.3", False))], "grpc") is None
    assert ready_address([_slice("metrics", 8002, ("10.1.0.3", True))], "grpc") is None


def test_unknown_readiness_counts_as_ready_and_ipv6_is_bracketed():
    # The API says a missing `ready` condition is to be read as ready.
    slices = [{"ports": [{"name": "grpc", "port": 8001}], "endpoints": [{"addresses": ["fd00::7"]}]}]
    assert ready_address(slices, "grpc") == "[fd00::7]:8001"
