"""The analysis engine against a real Prometheus scraping real prometheus_client exporters.

One Prometheus (1 s scrape interval) scrapes an evaluator exporter, a second evaluator exporter
the tests restart or stop (counter reset, stale series) and two exporters with Triton's metric
names (one per revision Service). Each test uses its own `endpoint` label so tests don't mix.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.metrics_core import Metric

from stt_harness.evalsim import record_paired_utterance
from stt_harness.prometheus import (
    Exporter,
    PrometheusServer,
    ScrapeTarget,
    free_port,
    start_exporter,
)
from stt_operator import evalmetrics as em
from stt_operator.analysis.engine import check_sample_ratio, evaluate_metrics
from stt_operator.analysis.model import AnalysisContext, Arm
from stt_operator.analysis.policy import decide
from stt_operator.analysis.prom import PrometheusClient
from stt_operator.analysis.verdicts import p_state
from stt_operator.api.common import AnalysisSpec, MetricSpec
from stt_operator.stats.counts import SRMResult

pytestmark = pytest.mark.integration
NS = "analysis-it"


class TritonCounters:
    """Serves Triton's counter names exactly as Triton spells them (no `_total`)."""

    def __init__(self) -> None:
        self.success = 0.0
        self.failure = 0.0
        self._lock = threading.Lock()

    def add(self, success: float, failure: float) -> None:
        with self._lock:
            self.success += success
            self.failure += failure

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            ok, bad = self.success, self.failure
        s = Metric("nv_inference_request_success", "Number of successful inference requests", "unknown")
        s.add_sample("nv_inference_request_success", {"model": "asr", "version": "1"}, ok)
        f = Metric("nv_inference_request_failure", "Number of failed inference requests", "unknown")
        f.add_sample(
            "nv_inference_request_failure", {"model": "asr", "version": "1", "reason": "BACKEND"}, bad
        )
        yield s
        yield f


@dataclass
class Lab:
    prom: PrometheusServer
    metrics: em.EvalMetrics
    exporters: list[Exporter]
    flaky_port: int
    triton: dict[str, TritonCounters]
    flaky: Exporter | None = None
    flaky_metrics: em.EvalMetrics | None = field(default=None)

    def start_flaky(self) -> em.EvalMetrics:
        """A fresh evaluator process on the flaky target's port: its counters start at zero."""
        self.stop_flaky()
        reg = CollectorRegistry()
        self.flaky_metrics = em.build_eval_metrics(reg)
        self.flaky = start_exporter(reg, self.flaky_port)
        return self.flaky_metrics

    def stop_flaky(self) -> None:
        if self.flaky is not None:
            self.flaky.stop()
            self.flaky = None


@pytest.fixture(scope="module")
def lab(prometheus: PrometheusServer) -> Iterator[Lab]:
    reg = CollectorRegistry()
    metrics = em.build_eval_metrics(reg)
    evaluator = start_exporter(reg)
    triton = {"stable": TritonCounters(), "canary": TritonCounters()}
    exporters = [evaluator]
    targets = [ScrapeTarget("evaluator", evaluator.address, {"namespace": NS})]
    for variant, counters in triton.items():
        treg = CollectorRegistry()
        treg.register(counters)
        exp = start_exporter(treg)
        exporters.append(exp)
        targets.append(ScrapeTarget("triton", exp.address, {"namespace": NS, "service": f"ep-{variant}"}))
    lab = Lab(prometheus, metrics, exporters, free_port(), triton)
    lab.start_flaky()
    targets.append(ScrapeTarget("evaluator-flaky", f"127.0.0.1:{lab.flaky_port}", {"namespace": NS}))
    prometheus.add_targets(targets)  # one reload: Prometheus applies new targets every 5 s
    yield lab
    lab.stop_flaky()
    for exp in exporters:
        exp.stop()


def _labels(endpoint: str, variant: str) -> dict[str, str]:
    return {
        "endpoint": endpoint,
        "variant": variant,
        "model": f"model-{variant}",
        "language": "en-US",
        "baseline": "stable",
    }


def _wait_scraped(prom: PrometheusServer, endpoint: str, expected: float, timeout: float = 20.0) -> None:
    # The char-unit pair counter is the last one `_drive` touches per utterance: once it shows the
    # count, the scrape holds every counter of every utterance.
    q = f'min(stt_eval_pairs_total{{namespace="{NS}",endpoint="{endpoint}",unit="char"}})'
    prom.wait_for(q, lambda r: float(r[0]["value"][1]) == expected, timeout=timeout)


def _drive(
    lab: Lab, m: em.EvalMetrics, endpoint: str, n: int, extra: float, seed: int, latency_scale: float = 1.0
) -> dict[str, int]:
    """Replay n utterances to both variants; return the exact error and word totals."""
    rng = np.random.default_rng(seed)
    stable, canary = _labels(endpoint, "stable"), _labels(endpoint, "canary")
    errs = {"c": 0, "b": 0, "n": 0}
    for _ in range(n):
        words = int(rng.integers(4, 25))
        b = int(rng.binomial(words, rng.beta(2, 16)))
        c = max(0, b + int(rng.binomial(words, extra)) - int(rng.binomial(b, 0.05)))
        errs["c"] += c
        errs["b"] += b
        errs["n"] += words
        # Per arm, in the order the draws always came: latency, then confidence.
        draws = [(float(rng.gamma(4, 0.04 * k)), float(rng.uniform(0.7, 0.95))) for k in (1.0, latency_scale)]
        m.record_request(stable)
        m.record_request(canary)
        record_paired_utterance(
            m,
            stable,
            canary,
            words=words,
            baseline_errors=b,
            candidate_errors=c,
            latency_s=(draws[0][0], draws[1][0]),
            confidence=(draws[0][1], draws[1][1]),
        )
    return errs


def _start(lab: Lab, m: em.EvalMetrics, endpoint: str) -> float:
    """Create the endpoint's series at zero and wait until Prometheus has scraped the zeros."""
    for v in ("stable", "canary"):
        m.init_variant(_labels(endpoint, v))
    m.init_pair(_labels(endpoint, "canary"))
    start = time.time()
    # The first sample inside the window must be the zero: with a partial first sample, increase()
    # extrapolates each series by a different factor and ratios drift.
    time.sleep(1.2)
    _wait_scraped(lab.prom, endpoint, 0.0)
    return start


def _ctx(endpoint: str, start: float, **kw: Any) -> AnalysisContext:
    return AnalysisContext(
        namespace=NS,
        endpoint=endpoint,
        candidate=Arm("canary", "ep-canary"),
        baseline=Arm("stable", "ep-stable"),
        start=start,
        language="en-US",
        **kw,
    )


def _metrics(*bodies: dict[str, Any]) -> list[MetricSpec]:
    """`spec.analysis.metrics` as a resource gives them (camelCase), through the API model."""
    return [MetricSpec.model_validate(b) for b in bodies]


ALL_PRESETS = _metrics(
    {"name": "wer", "preset": "wer", "maxRelativeIncrease": 0.05},
    {"name": "cer", "preset": "cer", "nonInferiorityMargin": 0.05},
    {"name": "latency-p95", "preset": "latency-p95", "thresholdRange": {"max": 2000}},
    {"name": "confidence", "preset": "confidence", "thresholdRange": {"min": 0.5}},
    {"name": "rtf", "preset": "rtf", "thresholdRange": {"max": 1.0}},
)


def test_paired_wer_regression_fails_and_rolls_back(lab: Lab) -> None:
    start = _start(lab, lab.metrics, "regress")
    sums = _drive(lab, lab.metrics, "regress", 600, extra=0.04, seed=1)
    _wait_scraped(lab.prom, "regress", 600.0)
    client = PrometheusClient(lab.prom.url, timeout_s=5)
    result = evaluate_metrics(client, ALL_PRESETS, _ctx("regress", start))
    wer = result.metric("wer")
    assert wer.outcome == "Failed", wer.message
    # Increases come from raw samples (no extrapolation): counts and ratios are exact.
    assert wer.value == pytest.approx(sums["c"] / sums["n"], rel=1e-9)
    assert wer.baseline == pytest.approx(sums["b"] / sums["n"], rel=1e-9)
    assert wer.details["paired"] is True and "paired diff" in wer.message
    assert wer.samples == {"candidate": 600.0, "baseline": 600.0}
    assert result.metric("confidence").outcome == "Passed"
    assert result.metric("rtf").outcome == "Passed"
    assert result.metric("latency-p95").outcome == "Passed"
    assert result.outcome == "Failed" and result.message.startswith("Failed (")
    assert result.elapsed_s < 5.0
    decision = decide([result], AnalysisSpec.model_validate({"failureLimit": 0}))
    assert decision.action == "Rollback" and "wer Failed" in decision.reason
    assert p_state(result)["wer/maxRelativeIncrease 0.05"][0] < 0.05
    # Long windows read Prometheus' own increase() instead: same ratio, counts within extrapolation.
    server_side = evaluate_metrics(client, ALL_PRESETS[:1], _ctx("regress", start, exact_window_max_s=0))
    assert any("increase(" in q for q in server_side.metric("wer").queries)
    assert server_side.metric("wer").value == pytest.approx(wer.value, rel=1e-6)
    # increase() extrapolates towards the window's edges, by more the fewer scrapes a loaded
    # machine managed: the count can only be over, never under, and stays the same order.
    assert 600 <= server_side.metric("wer").samples["candidate"] < 600 * 3
    assert server_side.metric("wer").outcome == "Failed"
    srm = check_sample_ratio(client, _ctx("regress", start), {"stable": 50, "canary": 50})
    assert (
        isinstance(srm, SRMResult) and srm.observed == {"stable": 600.0, "canary": 600.0} and not srm.mismatch
    )


def test_equivalent_candidate_passes_and_advances(lab: Lab) -> None:
    start = _start(lab, lab.metrics, "same")
    _drive(lab, lab.metrics, "same", 700, extra=0.0, seed=2)
    _wait_scraped(lab.prom, "same", 700.0)
    # The controllers pass the API's pydantic models straight through.
    spec = AnalysisSpec.model_validate(
        {
            "metrics": [
                {"name": "wer", "preset": "wer", "nonInferiorityMargin": 0.02},
                {"name": "latency-p95", "preset": "latency-p95", "maxRelativeIncrease": 0.5},
            ],
            "consecutiveSuccessLimit": 2,
        }
    )
    client = PrometheusClient(lab.prom.url)
    result = evaluate_metrics(client, spec.metrics, _ctx("same", start))
    assert [m.outcome for m in result.metrics] == ["Passed", "Passed"], result.message
    assert result.metric("latency-p95").details["mann_whitney_p"] > 0.001
    assert decide([result], spec).action == "Continue"
    again = evaluate_metrics(client, spec.metrics, _ctx("same", start, previous_p=p_state(result)))
    assert decide([result, again], spec).action == "Advance"


def test_too_few_utterances_is_inconclusive_with_numbers(lab: Lab) -> None:
    start = _start(lab, lab.metrics, "few")
    _drive(lab, lab.metrics, "few", 30, extra=0.05, seed=3)
    _wait_scraped(lab.prom, "few", 30.0)
    result = evaluate_metrics(PrometheusClient(lab.prom.url), ALL_PRESETS[:1], _ctx("few", start))
    wer = result.metric("wer")
    assert wer.outcome == "Inconclusive"
    assert "not enough utterances yet (candidate" in wer.message and "/200" in wer.message
    assert decide([result]).action == "Continue"


def test_no_series_is_no_data_and_pauses(lab: Lab) -> None:
    result = evaluate_metrics(PrometheusClient(lab.prom.url), ALL_PRESETS, _ctx("nobody", time.time() - 60))
    assert {m.outcome for m in result.metrics} == {"NoData"}
    assert "no series for" in result.metric("wer").message
    d = decide([{"outcome": "Passed"}, result])
    assert d.action == "Pause" and "noDataPolicy=Pause" in d.reason


def test_nan_counter_is_no_data(lab: Lab) -> None:
    start = _start(lab, lab.metrics, "nan")
    _drive(lab, lab.metrics, "nan", 250, extra=0.0, seed=4)
    lab.metrics.errors.labels(**{k: _labels("nan", "canary")[k] for k in em.VARIANT_LABELS}, unit="word").inc(
        math.nan
    )
    q = f'stt_eval_errors_total{{namespace="{NS}",endpoint="nan",variant="canary",unit="word"}}'
    lab.prom.wait_for(q, lambda r: r[0]["value"][1] == "NaN")
    result = evaluate_metrics(PrometheusClient(lab.prom.url), ALL_PRESETS[:1], _ctx("nan", start))
    wer = result.metric("wer")
    assert wer.outcome == "NoData" and "nan" in wer.message.lower()


def test_counter_reset_keeps_counts_since_start(lab: Lab) -> None:
    m = lab.start_flaky()
    start = _start(lab, m, "reset")
    first = _drive(lab, m, "reset", 250, extra=0.02, seed=5)
    _wait_scraped(lab.prom, "reset", 250.0)
    m = lab.start_flaky()  # the evaluator restarts: every counter is back at zero
    for v in ("stable", "canary"):
        m.init_variant(_labels("reset", v))
    m.init_pair(_labels("reset", "canary"))
    _wait_scraped(lab.prom, "reset", 0.0)
    second = _drive(lab, m, "reset", 250, extra=0.02, seed=6)
    _wait_scraped(lab.prom, "reset", 250.0)
    result = evaluate_metrics(PrometheusClient(lab.prom.url), ALL_PRESETS[:1], _ctx("reset", start))
    wer = result.metric("wer")
    assert wer.outcome in ("Failed", "Passed", "Inconclusive"), wer.message
    assert wer.samples["candidate"] == 500  # both halves counted, not only the 250 after the reset
    combined = (first["c"] + second["c"]) / (first["n"] + second["n"])
    assert wer.value == pytest.approx(combined, rel=1e-9)


def test_stale_series_is_no_data(lab: Lab) -> None:
    m = lab.start_flaky()
    start = _start(lab, m, "stale")
    _drive(lab, m, "stale", 300, extra=0.0, seed=7)
    _wait_scraped(lab.prom, "stale", 300.0)
    lab.stop_flaky()  # the evaluator dies; its series go stale at the next failed scrape
    q = f'count(stt_eval_utterances_total{{namespace="{NS}",endpoint="stale"}})'
    deadline = time.monotonic() + 20
    while lab.prom.query(q) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not lab.prom.query(q)
    result = evaluate_metrics(PrometheusClient(lab.prom.url), ALL_PRESETS[:1], _ctx("stale", start))
    wer = result.metric("wer")
    assert wer.outcome == "NoData" and "stale" in wer.message
    assert decide([result]).action == "Pause"


def test_prometheus_down_is_an_error_never_a_rollback() -> None:
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout_s=1, retries=1, backoff_s=0.05)
    t0 = time.monotonic()
    result = evaluate_metrics(client, ALL_PRESETS, _ctx("any", time.time() - 60))
    assert time.monotonic() - t0 < 10
    assert {m.outcome for m in result.metrics} == {"Error"}
    assert "Prometheus unreachable" in result.metric("wer").message
    assert decide([result]).action == "Continue"
    assert decide([result] * 4).action == "Pause"


def test_slow_prometheus_times_out(lab: Lab) -> None:
    client = PrometheusClient(lab.prom.url, timeout_s=0.5, retries=0)
    lab.prom.pause()  # SIGSTOP: the socket accepts, nothing answers
    try:
        t0 = time.monotonic()
        result = evaluate_metrics(client, ALL_PRESETS[:2], _ctx("any", time.time() - 60))
        elapsed = time.monotonic() - t0
    finally:
        lab.prom.resume()
    assert elapsed < 5
    assert {m.outcome for m in result.metrics} == {"Error"}
    assert "timed out" in result.metric("wer").message


def test_triton_error_rate_and_sample_ratio(lab: Lab) -> None:
    lab.prom.wait_for(f'nv_inference_request_success{{namespace="{NS}",service="ep-canary"}}')
    start = time.time()
    time.sleep(1.2)  # at least one scrape of the starting values inside the window
    lab.triton["stable"].add(6000, 30)
    lab.triton["canary"].add(6000, 120)
    lab.prom.wait_for(
        f'sum(nv_inference_request_failure{{namespace="{NS}"}})', lambda r: float(r[0]["value"][1]) >= 150
    )
    client = PrometheusClient(lab.prom.url)
    specs = _metrics(
        {"name": "errors", "preset": "error-rate", "maxRelativeIncrease": 0.2},
        {"name": "errors-abs", "preset": "error-rate", "thresholdRange": {"max": 0.05}},
    )
    result = evaluate_metrics(client, specs, _ctx("triton", start))
    errors = result.metric("errors")
    assert errors.outcome == "Failed", errors.message
    assert errors.value == pytest.approx(120 / 6120, rel=1e-9)
    assert errors.samples == {"candidate": 6120.0, "baseline": 6030.0}
    assert errors.details["source"] == "triton"
    assert result.metric("errors-abs").outcome == "Passed", result.metric("errors-abs").message
    services = {"stable": "ep-stable", "canary": "ep-canary"}
    ok = check_sample_ratio(client, _ctx("triton", start), {"stable": 50, "canary": 50}, services=services)
    assert isinstance(ok, SRMResult) and not ok.mismatch
    assert ok.observed == {"stable": 6030.0, "canary": 6120.0}
    bad = check_sample_ratio(client, _ctx("triton", start), {"stable": 90, "canary": 10}, services=services)
    assert isinstance(bad, SRMResult) and bad.mismatch and "sample ratio mismatch" in bad.message


def test_custom_queries(lab: Lab) -> None:
    start = _start(lab, lab.metrics, "custom")
    _drive(lab, lab.metrics, "custom", 50, extra=0.0, seed=8)
    _wait_scraped(lab.prom, "custom", 50.0)
    base = (
        'stt_eval_utterances_total{namespace="{{namespace}}",endpoint="{{endpoint}}",variant="{{variant}}"}'
    )
    specs = _metrics(
        {"name": "count", "query": f"sum(increase({base}[{{{{window}}}}]))", "thresholdRange": {"min": 40}},
        {
            "name": "too-many",
            "query": 'stt_eval_errors_total{endpoint="{{endpoint}}",variant="{{variant}}"}',
            "thresholdRange": {"max": 1},
        },
        {"name": "broken", "query": "sum(rate(", "thresholdRange": {"max": 1}},
        {"name": "unknown", "query": "up{pod='{{pod}}'}", "thresholdRange": {"max": 1}},
    )
    result = evaluate_metrics(PrometheusClient(lab.prom.url), specs, _ctx("custom", start))
    assert result.metric("count").outcome == "Passed", result.metric("count").message
    assert result.metric("too-many").outcome == "Error" and "series" in result.metric("too-many").message
    assert result.metric("broken").outcome == "Error" and "bad query" in result.metric("broken").message
    assert (
        result.metric("unknown").outcome == "Error"
        and "unknown placeholder" in result.metric("unknown").message
    )


# --- tenant isolation: custom queries only see the object's namespace ---------------------------

OTHER_NS = "other-tenant"


@pytest.fixture(scope="module")
def tenants(prometheus: PrometheusServer) -> Iterator[PrometheusServer]:
    """The same series name in two namespaces: 1 in ours, 41 in another tenant's."""
    exporters = []
    targets = []
    for namespace, value in ((NS, 1.0), (OTHER_NS, 41.0)):
        reg = CollectorRegistry()
        gauge = Gauge("tenant_probe", "a value only its namespace may read", ["endpoint"], registry=reg)
        gauge.labels(endpoint="tenant").set(value)
        exp = start_exporter(reg)
        exporters.append(exp)
        targets.append(ScrapeTarget(f"tenant-{namespace}", exp.address, {"namespace": namespace}))
    prometheus.add_targets(targets)
    prometheus.wait_for("sum(tenant_probe)", lambda r: float(r[0]["value"][1]) == 42.0)
    # A few more scrapes, so queries that look back (offset, subqueries) find samples too.
    prometheus.wait_for("count_over_time(tenant_probe[1m])", lambda r: float(r[0]["value"][1]) >= 4)
    yield prometheus
    for exp in exporters:
        exp.stop()


CROSS_TENANT_QUERIES = {
    "bare": "sum(tenant_probe)",
    "by-name": 'sum({__name__="tenant_probe"})',
    "regex-name": 'sum({__name__=~"tenant_.*"})',
    "other-namespace": f'sum(tenant_probe{{namespace="{OTHER_NS}"}})',
    "namespace-regex": 'sum(tenant_probe{namespace=~".+"})',
    "not-ours": 'sum(tenant_probe{namespace!="{{namespace}}"})',
    "range": "sum(max_over_time(tenant_probe[1m]))",
    "subquery": "max_over_time(sum(tenant_probe)[30s:1s])",
    "binary": "sum(tenant_probe) + sum(tenant_probe offset 1s) * 0",
    "keyword-as-metric": "sum(tenant_probe) or sum(offset)",
    "relabelled": 'sum(label_replace(tenant_probe, "namespace", "x", "", ""))',
    "aggregation-by": "sum by (endpoint) (tenant_probe)",
}


def test_custom_queries_cannot_read_another_namespace(tenants: PrometheusServer) -> None:
    """Every query shape an attacker might use sees only this namespace's series (value 1),
    never the other tenant's (41): the engine adds namespace="<ns>" to every selector."""
    specs = _metrics(
        *(
            {"name": name, "query": q, "thresholdRange": {"max": 1000}}
            for name, q in CROSS_TENANT_QUERIES.items()
        )
    )
    ctx = replace(_ctx("tenant", time.time() - 60), baseline=None)
    result = evaluate_metrics(PrometheusClient(tenants.url), specs, ctx)
    for name in CROSS_TENANT_QUERIES:
        m = result.metric(name)
        assert m.value != 41.0 and m.value != 42.0, (name, m.outcome, m.value, m.message)
        if name in ("other-namespace", "not-ours"):
            assert m.outcome == "NoData", (name, m.outcome, m.message)
        else:
            assert m.outcome == "Passed" and m.value == 1.0, (name, m.outcome, m.value, m.message)
    # A function that reads series outside the selectors is refused, not sent.
    info = evaluate_metrics(
        PrometheusClient(tenants.url),
        _metrics({"name": "info", "query": "sum(info(tenant_probe))", "thresholdRange": {"max": 1}}),
        ctx,
    )
    assert info.metric("info").outcome == "Error" and "cannot confine" in info.metric("info").message


def test_the_administrator_can_opt_out_of_scoping(tenants: PrometheusServer) -> None:
    """Without scoping (scopeCustomQueries: false) the same query reads every namespace: the
    isolation above is the engine's doing, not an accident of the data."""
    ctx = replace(_ctx("tenant", time.time() - 60), baseline=None, scope_queries=False)
    spec = {"name": "bare", "query": CROSS_TENANT_QUERIES["bare"], "thresholdRange": {"max": 1000}}
    result = evaluate_metrics(PrometheusClient(tenants.url), _metrics(spec), ctx)
    assert result.metric("bare").value == 42.0
