"""Typed specs into engine rules, templating, query-result parsing and the evaluator metric
contract."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError
from pydantic.alias_generators import to_snake

from stt_operator import evalmetrics as em
from stt_operator.analysis.model import AnalysisContext, Arm, MetricRule, parse_duration
from stt_operator.analysis.prom import PrometheusClient, _classify, parse_result
from stt_operator.analysis.templating import render
from stt_operator.api.common import AnalysisSpec, MetricSpec, ThresholdRange
from stt_operator.stats.ratio import PairedStats


def test_metric_rule_from_the_api_model() -> None:
    body = {
        "name": "wer",
        "preset": "wer",
        "maxRelativeIncrease": 0.05,
        "thresholdRange": {"max": 0.3},
        "minSamples": 50,
    }
    rule = MetricRule.from_spec(MetricSpec.model_validate(body))
    # Field for field: what the resource says is what the engine judges.
    assert rule == MetricRule(
        "wer", preset="wer", threshold_max=0.3, max_relative_increase=0.05, min_samples=50
    )
    assert rule.threshold_max == 0.3 and rule.direction == "lower-is-better"
    assert MetricRule.from_spec(
        MetricSpec.model_validate({"name": "c", "preset": "confidence", "thresholdRange": {"min": 0.5}})
    ).direction == ("higher-is-better")
    spec = AnalysisSpec.model_validate({"metrics": [body]})
    assert MetricRule.from_spec(spec.metrics[0]) == rule
    assert MetricRule.from_spec(spec.metrics[0]).min_samples == 50


def _unchecked(body: dict[str, Any]) -> MetricSpec:
    """A MetricSpec that skipped pydantic's validation (`model_construct`), so that the checks
    tested are `MetricRule.from_spec`'s own; a missing name is None."""
    fields = {to_snake(k): v for k, v in body.items()}
    if isinstance(fields.get("threshold_range"), dict):
        fields["threshold_range"] = ThresholdRange.model_construct(**fields["threshold_range"])
    return MetricSpec.model_construct(**{"name": None, **fields})


BAD_METRIC_SPECS = [
    ({"preset": "wer"}, r"metrics\[0\]\.name is required"),
    ({"name": "x", "preset": "wer", "query": "up"}, "exactly one of preset or query"),
    ({"name": "x", "preset": "bleu"}, r"preset 'bleu' is not one of"),
    ({"name": "x", "preset": "wer", "thresholdRange": {"min": 2, "max": 1}}, "min must be <= max"),
    (
        {"name": "x", "preset": "wer", "maxRelativeIncrease": "lots"},
        "maxRelativeIncrease must be a number",
    ),
    ({"name": "x", "preset": "wer", "direction": "sideways"}, "direction 'sideways'"),
    ({"name": "x", "preset": "wer", "minSamples": 0}, "minSamples must be an integer >= 1"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_METRIC_SPECS)
def test_bad_metric_specs_name_the_field(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MetricRule.from_spec(_unchecked(spec), 0)


@pytest.mark.parametrize("spec", [spec for spec, _ in BAD_METRIC_SPECS])
def test_the_api_model_refuses_the_bad_metric_specs_first(spec: dict) -> None:
    with pytest.raises(ValidationError):
        MetricSpec.model_validate(spec)


def test_context_and_durations() -> None:
    ctx = AnalysisContext(
        namespace="ns",
        endpoint="ep",
        candidate=Arm("canary"),
        baseline=Arm("stable", service="svc"),
        start=100.0,
        now=250.4,
    )
    assert ctx.window() == "151s" and ctx.baseline and ctx.baseline.service == "svc"
    assert parse_duration("1h30m") == 5400 and parse_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="interval"):
        AnalysisContext(namespace="ns", endpoint="e", candidate=Arm("c"), interval="soon")
    with pytest.raises(ValueError, match="candidate is required"):
        AnalysisContext(namespace="ns", endpoint="e", candidate=Arm(""))
    with pytest.raises(ValueError, match="noDataPolicy"):
        AnalysisContext(namespace="ns", endpoint="e", candidate=Arm("c"), no_data_policy="Panic")


def test_templating_renders_escapes_and_rejects_unknown() -> None:
    q = render(
        'sum(rate(x{service="{{ service }}",model="{{model}}"}[{{interval}}]))',
        {"service": 'a"b', "model": "m", "interval": "1m"},
    )
    assert q == 'sum(rate(x{service="a\\"b",model="m"}[1m]))'
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \['pod'\]"):
        render("x{pod='{{pod}}'}", {})
    with pytest.raises(ValueError, match="has no value"):
        render("x{model='{{model}}'}", {})


def test_parse_results_and_error_classes() -> None:
    vec = parse_result(
        [{"metric": {"variant": "a"}, "value": [1.0, "NaN"]}, {"metric": {}, "value": [1, "+Inf"]}]
    )
    assert math.isnan(vec[0].value) and vec[1].value == math.inf
    assert parse_result([1700000000.0, "3"])[0].value == 3.0
    assert _classify('{"status":"error","errorType":"timeout","error":"query timed out"}')[0] == "timeout"
    assert _classify('{"status":"error","errorType":"bad_data","error":"parse error"}')[0] == "bad-query"
    with pytest.raises(ValueError, match="http"):
        PrometheusClient("prometheus:9090")


def test_evalmetrics_sums_reconstruct_paired_statistics() -> None:
    reg = CollectorRegistry()
    m = em.build_eval_metrics(reg)
    labels = {"endpoint": "ep", "variant": "canary", "model": "m", "language": "en-US", "baseline": "stable"}
    m.init_variant(labels)
    m.init_pair(labels)
    rng = np.random.default_rng(0)
    n = rng.integers(1, 20, 50)
    b = rng.binomial(n, 0.2)
    c = rng.binomial(n, 0.25)
    for ci, bi, ni in zip(c, b, n, strict=True):
        m.record_pair(labels, unit="word", candidate_errors=int(ci), baseline_errors=int(bi), ref_len=int(ni))

    def value(name: str) -> float:
        return reg.get_sample_value(name, {**{k: labels[k] for k in em.PAIR_LABELS}, "unit": "word"}) or 0.0

    got = PairedStats.from_exported(
        pairs=value(em.PAIRS),
        sum_len=value(em.PAIR_REF_LEN),
        sum_len_sq=value(em.PAIR_REF_LEN_SQ),
        sum_cand=value(em.PAIR_CAND_ERRORS),
        sum_base=value(em.PAIR_BASE_ERRORS),
        sum_diff_sq=value(em.PAIR_DIFF_SQ),
        sum_cand_sq=value(em.PAIR_CAND_ERRORS_SQ),
        sum_base_sq=value(em.PAIR_BASE_ERRORS_SQ),
        sum_cand_len=value(em.PAIR_CAND_ERRORS_X_REF),
        sum_base_len=value(em.PAIR_BASE_ERRORS_X_REF),
    )
    ref = PairedStats.from_arrays(c, b, n)
    assert got.difference == pytest.approx(ref.difference)
    assert got.difference_se == pytest.approx(ref.difference_se)
    assert value(em.PAIR_WORSE) + value(em.PAIR_BETTER) == np.sum(c != b)
    text = generate_latest(reg).decode()
    assert (
        'stt_eval_errors_total{endpoint="ep",language="en-US",model="m",unit="char",variant="canary"} 0.0'
        in text
    )
    with pytest.raises(ValueError, match="missing"):
        m.record_utterance(
            {"variant": "x"},
            word_errors=1,
            ref_words=1,
            char_errors=1,
            ref_chars=1,
            latency_seconds=0.1,
            audio_seconds=1,
        )
    with pytest.raises(ValueError, match="confidence"):
        m.record_utterance(
            labels,
            word_errors=1,
            ref_words=1,
            char_errors=1,
            ref_chars=1,
            latency_seconds=0.1,
            audio_seconds=1,
            confidence=1.5,
        )


def test_exact_counter_increase_handles_resets_and_nan() -> None:
    from stt_operator.analysis.presets import counter_increase, label_key, sum_increases
    from stt_operator.analysis.prom import Sample

    assert counter_increase([(0, 0), (1, 5), (2, 9)]) == 9
    assert counter_increase([(0, 3), (1, 8), (2, 2), (3, 6)]) == 5 + 2 + 4  # restart at t=2
    assert counter_increase([(0, 4)]) == 0
    assert math.isnan(counter_increase([(0, 1), (1, math.nan)]))
    parsed = parse_result(
        [
            {"metric": {"variant": "a", "le": "0.1"}, "values": [[0, "1"], [1, "4"]]},
            {"metric": {"variant": "a", "le": "0.1", "pod": "p2"}, "values": [[0, "0"], [1, "2"]]},
            {"metric": {"variant": "b", "le": "0.1"}, "values": [[0, "7"], [1, "1"]]},
        ]
    )
    assert isinstance(parsed[0], Sample) and parsed[0].value == 4.0
    at_start = {label_key(s.labels): s.values[0][1] for s in parsed}  # each series' first value
    assert sum_increases(parsed, ("variant",), at_start) == {("a",): 5.0, ("b",): 1.0}


def test_every_series_counts_from_its_value_at_the_start() -> None:
    """A series that existed at the start counts from its last sample before it, so requests
    served between the start and its first scrape inside the window are not lost (a burst of
    live traffic right after an A/B test starts). A new pod's counters (a canary's Triton, an
    A/B test's evaluator) were born inside the window and count from zero. A reset is still a
    restart."""
    from stt_operator.analysis.model import AnalysisContext, Arm
    from stt_operator.analysis.presets import Fetcher, counter_increase
    from stt_operator.analysis.prom import QueryResult, Sample

    assert counter_increase([(5, 20), (10, 26)], start=0.0) == 26
    assert counter_increase([(5, 20), (10, 3)], start=0.0) == 20 + 3  # then a restart
    assert counter_increase([(5, 20), (10, 26)], start=12.0) == 14
    assert counter_increase([(5, 20), (10, 26)], start=30.0) == 20 + 6  # restarted before the first scrape
    assert counter_increase([(5, 20), (10, 26)]) == 6
    assert counter_increase([], start=4.0) == 0

    old = {"__name__": "nv_inference_request_success", "service": "stable", "pod": "s-1"}
    new = {"__name__": "nv_inference_request_success", "service": "canary", "pod": "c-1"}
    asked: list[tuple[str, float | None]] = []

    class Client:
        def instant(self, query: str, at: float | None = None) -> QueryResult:
            asked.append((query, at))
            if query.startswith("last_over_time("):  # at the start only the stable pod existed
                present = {k: v for k, v in old.items() if k != "__name__"}
                return QueryResult(query, (Sample(present, 90.0),), 0.0)
            series = (
                Sample(old, 130.0, ((1005.0, 100.0), (1010.0, 130.0))),
                Sample(new, 26.0, ((1005.0, 20.0), (1010.0, 26.0))),
            )
            return QueryResult(query, series, 0.0)

    ctx = AnalysisContext(namespace="ns", endpoint="ep", candidate=Arm("canary"), start=1000.0, now=1010.0)
    got, query = Fetcher(Client(), ctx).increase('nv_inference_request_success{namespace="ns"}', ("service",))
    # stable: 90 at the start, 130 at the end (10 of them before its first scrape in the window).
    assert got == {("stable",): 40.0, ("canary",): 26.0}
    assert query == 'nv_inference_request_success{namespace="ns"}[10s]'
    assert asked[1] == ('last_over_time(nv_inference_request_success{namespace="ns"}[3600s])', 1000.0)
