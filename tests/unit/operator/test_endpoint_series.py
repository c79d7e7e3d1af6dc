"""The per-endpoint series (`observability.EndpointSeries`): the same names, labels and
counter semantics as the labelled prometheus_client metrics they replace, and gone with the
endpoint."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stt_operator.observability import EndpointSeries


def _samples(series: EndpointSeries) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(series)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_rollout_counters_exist_at_zero_and_count_and_routes_follow_the_last_write() -> None:
    series = EndpointSeries()
    series.record_rollout("ns", "asr", in_flight=True, promoted=False, rolled_back=False)
    series.record_route("ns", "asr", {"asr-r1": 80, "asr-r2": 20})
    first = _samples(series)
    ep = (("name", "asr"), ("namespace", "ns"))
    assert first[("stt_operator_rollouts_in_flight", ep)] == 1
    assert first[("stt_operator_promotions_total", ep)] == 0  # exists before the first promotion
    assert first[("stt_operator_rollbacks_total", ep)] == 0
    route = (("backend", "asr-r2"), ("endpoint", "asr"), ("namespace", "ns"))
    assert first[("stt_operator_route_weight", route)] == 20

    series.record_rollout("ns", "asr", in_flight=False, promoted=True, rolled_back=False)
    series.record_rollout("ns", "asr", in_flight=False, promoted=False, rolled_back=True)
    series.record_route("ns", "asr", {"asr-r2": 100})  # the old backend drops out
    second = _samples(series)
    assert second[("stt_operator_rollouts_in_flight", ep)] == 0
    assert second[("stt_operator_promotions_total", ep)] == 1
    assert second[("stt_operator_rollbacks_total", ep)] == 1 == series.rollbacks("ns", "asr")
    weights = [labels for name, labels in second if name == "stt_operator_route_weight"]
    assert weights == [route]


def test_a_route_alone_exports_no_rollout_series_and_forget_removes_everything() -> None:
    series = EndpointSeries()
    series.record_route("ns", "ab-endpoint", {"v1": 50, "v2": 50})
    series.record_rollout("other", "asr", in_flight=False, promoted=False, rolled_back=False)
    names = {name for name, labels in _samples(series) if dict(labels).get("namespace") == "ns"}
    assert names == {"stt_operator_route_weight"}
    series.forget("ns", "ab-endpoint")
    series.forget("other", "asr")
    assert _samples(series) == {}
    assert series.rollbacks("other", "asr") == 0


def test_samples_made_as_read_render_what_the_library_families_render() -> None:
    """The families' samples are made lazily (`SlicedFamily`); the exposition must be the one
    that families filled with the library's own `add_metric` give, in both formats."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    series = EndpointSeries()
    series.record_rollout("ns-a", "asr", in_flight=True, promoted=True, rolled_back=False)
    series.record_route("ns-a", "asr", {"asr-r1": 90, "asr-r2": 10})
    series.record_rollout("ns-b", 'odd"name', in_flight=False, promoted=False, rolled_back=True)
    series.record_route("ns-c", "ab", {"v1": 50})  # a route alone: no rollout series

    class Eager:
        def collect(self):  # type: ignore[no-untyped-def]
            labels = ["namespace", "name"]
            flight = GaugeMetricFamily(
                "stt_operator_rollouts_in_flight", "ModelDeployments currently progressing", labels=labels
            )
            flight.add_metric(["ns-a", "asr"], 1)
            flight.add_metric(["ns-b", 'odd"name'], 0)
            yield flight
            for name, doc, values in (
                ("stt_operator_rollbacks", "Automatic and manual rollbacks", (0, 1)),
                ("stt_operator_promotions", "Revisions promoted to stable", (1, 0)),
            ):
                counter = CounterMetricFamily(name, doc, labels=labels)
                counter.add_metric(["ns-a", "asr"], values[0])  # no `_created`: the operator exports none
                counter.add_metric(["ns-b", 'odd"name'], values[1])
                yield counter
            weight = GaugeMetricFamily(
                "stt_operator_route_weight",
                "Weight (percent) of each backend in the endpoint's route, as last written",
                labels=["namespace", "endpoint", "backend"],
            )
            for labels_, value in (
                (["ns-a", "asr", "asr-r1"], 90),
                (["ns-a", "asr", "asr-r2"], 10),
                (["ns-c", "ab", "v1"], 50),
            ):
                weight.add_metric(labels_, value)
            yield weight

    lazy, eager = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)  # as REGISTRY
    lazy.register(series)
    eager.register(Eager())
    assert generate_latest(lazy) == generate_latest(eager)
    assert generate_openmetrics(lazy) == generate_openmetrics(eager)
    only = lazy.restricted_registry(["stt_operator_rollbacks_total"])
    assert generate_latest(only) == generate_latest(
        eager.restricted_registry(["stt_operator_rollbacks_total"])
    )
    assert b"stt_operator_rollbacks_total" in generate_latest(only)
