"""End to end: real tritonserver + the evaluator process (`stt-operator evaluate`) + Debian's
Prometheus scraping both. What PromQL says per model must match what the evaluator computed
locally, Triton's own request counters must agree, and the degraded variant's WER must be
measurably (significantly, paired) worse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stt_harness.prometheus import PrometheusServer, ScrapeTarget, free_port
from stt_harness.triton import BASELINE_MODEL, DEGRADED_MODEL, LocalTriton
from stt_operator import evalmetrics as em

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ENDPOINT = "e2e"


def scalar(prom: PrometheusServer, promql: str) -> float:
    result = prom.query(promql)
    assert len(result) == 1, f"{promql!r} returned {result}"
    return float(result[0]["value"][1])


def by_variant(prom: PrometheusServer, promql: str) -> dict[str, float]:
    return {r["metric"]["variant"]: float(r["value"][1]) for r in prom.query(promql)}


@pytest.fixture(scope="module")
def evaluation(
    triton_server: LocalTriton,
    small_evalset: Path,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    """Run the evaluator once over the set; keep it serving /metrics until Prometheus has it all."""
    work = tmp_path_factory.mktemp("evaluator")
    before = {
        m: triton_server.metric_by_model("nv_inference_request_success").get(m, 0.0)
        for m in (BASELINE_MODEL, DEGRADED_MODEL)
    }
    port = free_port()
    summary = work / "summary.json"
    cmd = [
        sys.executable, "-m", "stt_operator.cli", "evaluate",
        "--evalset", str(small_evalset),
        "--endpoint", ENDPOINT,
        "--target", f"stable={BASELINE_MODEL}@{triton_server.grpc_url}/sphinx-v1",
        "--target", f"canary={DEGRADED_MODEL}@{triton_server.grpc_url}/sphinx-v2",
        "--rate", "50", "--concurrency", "4", "--rounds", "1",
        "--metrics-address", "127.0.0.1", "--metrics-port", str(port),
        "--linger", "120", "--summary", str(summary),
    ]  # fmt: skip
    log = (work / "evaluator.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        prometheus.add_targets(
            [
                ScrapeTarget("stt-evaluator", f"127.0.0.1:{port}"),
                ScrapeTarget("triton", f"127.0.0.1:{triton_server.metrics_port}"),
            ],
            timeout=60,
        )
        deadline = time.monotonic() + 120
        while not summary.exists():
            assert proc.poll() is None, (work / "evaluator.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "evaluator did not finish its round"
            time.sleep(0.2)
        result = json.loads(summary.read_text())
        n = sum(v["requests"] for v in result["variants"].values())
        # Wait for a scrape taken after the round: the request counters reach their final value.
        prometheus.wait_for(
            f"sum({em.REQUESTS}{{endpoint='{ENDPOINT}'}})", lambda r: float(r[0]["value"][1]) == n, timeout=30
        )
        prometheus.wait_for(
            f"sum(nv_inference_request_success{{model=~'{BASELINE_MODEL}|{DEGRADED_MODEL}'}})",
            lambda r: float(r[0]["value"][1]) >= sum(before.values()) + n,
            timeout=30,
        )
        yield {"summary": result, "before": before, "log": work / "evaluator.log"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_promql_wer_cer_match_the_evaluator(evaluation: Any, prometheus: PrometheusServer) -> None:
    variants = evaluation["summary"]["variants"]
    for unit, key in (("word", "wer"), ("char", "cer")):
        q = (
            f"sum by (variant) ({em.ERRORS}{{endpoint='{ENDPOINT}',unit='{unit}'}})"
            f" / sum by (variant) ({em.REF_LEN}{{endpoint='{ENDPOINT}',unit='{unit}'}})"
        )
        got = by_variant(prometheus, q)
        assert set(got) == {"stable", "canary"}
        for variant, value in got.items():
            assert value == pytest.approx(variants[variant][key], rel=1e-9), (unit, variant)


def test_promql_latency_rtf_and_counts_match(evaluation: Any, prometheus: PrometheusServer) -> None:
    variants = evaluation["summary"]["variants"]
    sel = f"{{endpoint='{ENDPOINT}'}}"
    count = by_variant(prometheus, f"sum by (variant) ({em.LATENCY}_count{sel})")
    mean = by_variant(
        prometheus, f"sum by (variant) ({em.LATENCY}_sum{sel}) / sum by (variant) ({em.LATENCY}_count{sel})"
    )
    rtf = by_variant(
        prometheus,
        f"sum by (variant) ({em.PROCESSING_SECONDS}{sel}) / sum by (variant) ({em.AUDIO_SECONDS}{sel})",
    )
    requests = by_variant(prometheus, f"sum by (variant) ({em.REQUESTS}{sel})")
    utterances = by_variant(prometheus, f"sum by (variant) ({em.UTTERANCES}{sel})")
    for v, s in variants.items():
        assert s["utterances"] == 24  # every utterance scored on both variants
        assert count[v] == utterances[v] == s["utterances"]
        assert requests[v] == s["requests"]
        assert mean[v] == pytest.approx(s["latency_mean_s"], rel=1e-9)
        assert rtf[v] == pytest.approx(s["rtf"], rel=1e-9)
    # The histogram's p95 (bucket-interpolated) lies between the bucket of the evaluator's own
    # median and the bucket of its slowest request.
    p95 = by_variant(prometheus, f"histogram_quantile(0.95, sum by (variant, le) ({em.LATENCY}_bucket{sel}))")
    buckets = (0.0, *em.LATENCY_BUCKETS)
    for v, s in variants.items():
        lo = max(b for b in buckets if b < s["latency_p50_s"])
        hi = next(b for b in buckets if b >= s["latency_max_s"])
        assert lo <= p95[v] <= hi, (v, p95[v], s)


def test_triton_counted_the_same_requests(evaluation: Any, prometheus: PrometheusServer) -> None:
    variants, before = evaluation["summary"]["variants"], evaluation["before"]
    for variant, model in (("stable", BASELINE_MODEL), ("canary", DEGRADED_MODEL)):
        served = scalar(prometheus, f"sum(nv_inference_request_success{{model='{model}'}})") - before[model]
        transport_failures = sum(n for r, n in variants[variant]["failures"].items() if r != "empty")
        assert served == variants[variant]["requests"] - transport_failures
        compute_us = scalar(prometheus, f"sum(nv_inference_compute_infer_duration_us{{model='{model}'}})")
        assert compute_us > 0


def test_degraded_variant_is_measurably_worse(evaluation: Any, prometheus: PrometheusServer) -> None:
    sel = f"endpoint='{ENDPOINT}',variant='canary',baseline='stable',unit='word'"
    pairs = scalar(prometheus, f"sum({em.PAIRS}{{{sel}}})")
    n = scalar(prometheus, f"sum({em.PAIR_REF_LEN}{{{sel}}})")
    d = scalar(prometheus, f"sum({em.PAIR_CAND_ERRORS}{{{sel}}}) - sum({em.PAIR_BASE_ERRORS}{{{sel}}})")
    assert pairs == 24
    delta = d / n
    local = evaluation["summary"]["pairs"][0]
    assert delta == pytest.approx(local["delta_wer"], rel=1e-9)
    wer = evaluation["summary"]["variants"]
    assert wer["canary"]["wer"] > wer["stable"]["wer"] + 0.05
    assert local["delta_wer"] > 2 * local["se"], local  # paired delta-method z > 2
    # The summary's utterance bootstrap interval and the classic paired checks agree.
    assert 0 < local["ci_low"] < local["delta_wer"] < local["ci_high"], local
    assert local["mapsswe_p"] < 0.05 and local["prob_improvement"] < 0.05, local


def test_evaluator_logs_are_json(evaluation: Any) -> None:
    lines = [json.loads(line) for line in evaluation["log"].read_text().splitlines() if line.startswith("{")]
    messages = {rec["msg"] for rec in lines}
    assert {"evaluation set loaded", "round complete"} <= messages
    done = next(rec for rec in lines if rec["msg"] == "round complete")
    assert set(done["wer"]) == {"stable", "canary"}


def test_status_analytics_from_prometheus(evaluation: Any, prometheus: PrometheusServer) -> None:
    from stt_operator.api.sttmodel import LanguageAnalytics
    from stt_operator.triton.analytics import collect_analytics

    # The run ended before Prometheus's first scrape, so there is no increase inside any window:
    # take the latency p95 over the cumulative buckets.
    out = collect_analytics(
        prometheus.query, "sphinx-v2", DEGRADED_MODEL, "en-US", window="1h", cumulative_latency=True
    )
    assert [e["language"] for e in out] == ["en-US"]
    entry = LanguageAnalytics.model_validate(out[0])
    local = evaluation["summary"]["variants"]["canary"]
    assert entry.wer == pytest.approx(local["wer"], abs=1e-6)
    assert entry.cer == pytest.approx(local["cer"], abs=1e-6)
    assert entry.confidence == pytest.approx(local["confidence_mean"], abs=1e-6)
    assert entry.requests is not None and entry.requests >= local["requests"]
    assert entry.success_rate == 1.0
    assert entry.latency_p95_ms is not None
    buckets = (0.0, *em.LATENCY_BUCKETS)
    lo = max(b for b in buckets if b < local["latency_p50_s"])
    hi = next(b for b in buckets if b >= local["latency_max_s"])
    assert 1000 * lo <= entry.latency_p95_ms <= 1000 * hi


async def test_evaluator_rides_out_a_triton_outage(small_evalset: Path, tmp_path: Path) -> None:
    """Triton is down when the replay starts: requests fail, are counted and retried with
    backoff, and once the server is up every utterance is scored (none dropped)."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from stt_harness.triton import build_sphinx_repository, start_triton
    from stt_operator.evaluator.model_io import Target
    from stt_operator.evaluator.replay import ReplayConfig, Replayer, TritonTranscriber
    from stt_operator.speech.evalset import load_evalset

    utts = load_evalset(small_evalset)[:6]
    port = free_port()
    reg = CollectorRegistry()
    transcriber = TritonTranscriber(timeout_s=10)
    replayer = Replayer(
        [Target("stable", BASELINE_MODEL, f"127.0.0.1:{port}")],
        transcriber,
        endpoint="outage",
        config=ReplayConfig(concurrency=2, max_retries=12, backoff_initial_s=0.25, backoff_max_s=2.0),
        metrics=em.build_eval_metrics(reg),
    )
    task = asyncio.create_task(replayer.run_round(utts))
    await asyncio.sleep(1.5)
    assert not task.done()
    repo = build_sphinx_repository(tmp_path / "models", {BASELINE_MODEL: False})
    server = await asyncio.to_thread(start_triton, repo, tmp_path, models=[BASELINE_MODEL], grpc_port=port)
    try:
        observations = await asyncio.wait_for(task, timeout=120)
    finally:
        await transcriber.close()
        server.stop()
    labels = {"endpoint": "outage", "variant": "stable", "model": BASELINE_MODEL, "language": "en-US"}
    failures = reg.get_sample_value(em.FAILURES, {**labels, "reason": "http"}) or 0
    assert len(observations) == 6
    assert failures >= 2
    assert reg.get_sample_value(em.UTTERANCES, labels) == 6
    assert reg.get_sample_value(em.REQUESTS, labels) == 6 + failures


def test_evaluator_and_triton_objects_run_on_a_real_apiserver(kube_api: Any, namespace: str) -> None:
    """The evaluator's ConfigMap/Deployment/Service and a Triton pod template pass a real
    kube-apiserver's validation and become available on the (kwok) GPU nodes."""
    from kubernetes.client import AppsV1Api, CoreV1Api

    from stt_operator.evaluator.manifests import EvaluatorParams, evaluator_objects
    from stt_operator.evaluator.model_io import Target
    from stt_operator.triton.pod import TritonPodParams, triton_pod_spec

    core, apps = CoreV1Api(kube_api), AppsV1Api(kube_api)
    params = EvaluatorParams(
        owner_name="asr",
        namespace=namespace,
        endpoint="asr",
        targets=[Target("stable", "asr-v1", f"asr-v1.{namespace}.svc:8001")],
        # (a pvc:// set would need a bound claim; the local cluster has no storage provisioner)
        evalset_uri="s3://evalsets/commands.tar.gz",
        evalset_secret="evalset-s3",
    )
    cm, dep, svc = evaluator_objects(params)
    core.create_namespaced_config_map(namespace, cm)
    apps.create_namespaced_deployment(namespace, dep)
    core.create_namespaced_service(namespace, svc)
    labels = {"app": "triton-asr"}
    pod = triton_pod_spec(
        TritonPodParams(
            model_name="asr", config_map="asr-triton-config", artifact_uri="s3://m/asr.onnx", gpus=1
        )
    )
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "triton-asr"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        },
    )
    deadline = time.monotonic() + 90
    names = [dep["metadata"]["name"], "triton-asr"]
    while True:
        ready = {
            n: apps.read_namespaced_deployment_status(n, namespace).status.available_replicas for n in names
        }
        if all(ready.values()):
            break
        if time.monotonic() > deadline:
            pods = core.list_namespaced_pod(namespace).items
            states = [
                (p.metadata.name, p.status.phase, [(c.type, c.reason) for c in p.status.conditions or []])
                for p in pods
            ]
            raise AssertionError(f"deployments not available: {ready}; pods: {states}")
        time.sleep(0.5)
    pods = core.list_namespaced_pod(namespace, label_selector="app=triton-asr").items
    assert pods[0].spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert pods[0].spec.node_name  # scheduled onto a GPU node through the selector and toleration


def test_kubectl_stt_report_plots_the_real_evaluator(
    evaluation: Any, prometheus: PrometheusServer, cluster: Any, namespace: str, tmp_path: Path, capsys: Any
) -> None:
    """`kubectl stt report` for an ABTest on this endpoint: a self-contained page whose numbers are
    the evaluator's (WER per variant at the last point, the paired evidence against the control)."""
    import base64
    import re

    from stt_harness.resources import API
    from stt_operator.kubectl_plugin import main as kubectl_stt
    from stt_operator.report import collect, timeline
    from stt_operator.services.kube import Kube

    Kube(cluster.api_client()).apply(
        {
            "apiVersion": API,
            "kind": "ABTest",
            "metadata": {"name": "e2e-ab", "namespace": namespace},
            "spec": {
                "endpoint": {"modelDeploymentRef": {"name": ENDPOINT}},
                "variants": [
                    {"name": "stable", "model": {"name": "sphinx-v1"}, "weight": 50},
                    {"name": "canary", "model": {"name": "sphinx-v2"}, "weight": 50},
                ],
                "controlVariant": "stable",
                "primaryMetric": {"name": "wer", "preset": "wer"},
            },
        }
    )
    out = tmp_path / "report.html"
    argv = ["report", "abt/e2e-ab", "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)]
    argv += ["--prometheus", prometheus.url, "--since", "15m", "--no-namespace-label", "-o", str(out)]
    assert kubectl_stt(argv) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    page = out.read_text()
    images = re.findall(r'alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    # No operator runs here, so the ABTest names no variant Service: no live split, the replay's.
    assert [alt for alt, _ in images] == ["WER", "CER", "Evidence", "Evaluator replay", "Latency"]
    for alt, data in images:
        (tmp_path / f"{alt.lower()}.png").write_bytes(base64.b64decode(data))
        assert base64.b64decode(data).startswith(b"\x89PNG")
    print(f"report images in {tmp_path}")

    # The plotted numbers are the evaluator's own.
    now = time.time()
    data = collect.collect_series(
        collect.PrometheusRange(prometheus.url), collect.Selector(ENDPOINT), now - 900, now, 15, "stable"
    )
    assert data.wer is not None
    bands = timeline.ratio_over_time(data.wer, since=data.start)
    variants = evaluation["summary"]["variants"]
    for variant in ("stable", "canary"):
        last = bands[variant].estimate[np.isfinite(bands[variant].estimate)][-1]
        assert last == pytest.approx(variants[variant]["wer"], rel=1e-9)
        assert bands[variant].lower[-1] <= last <= bands[variant].upper[-1]
    evidence = timeline.paired_evidence_over_time(data.pairs["canary"], since=data.start)
    local = evaluation["summary"]["pairs"][0]
    assert evidence.effect[np.isfinite(evidence.effect)][-1] == pytest.approx(local["delta_wer"], rel=1e-9)
    split = timeline.split_over_time(data.requests, since=data.start)
    first = {v: s[np.isfinite(s)][0] for v, s in split.share.items()}
    assert first == pytest.approx({"stable": 0.5, "canary": 0.5})  # every utterance to both


def test_real_evaluator_exports_per_slice_series(evaluation: Any, prometheus: PrometheusServer) -> None:
    """The running evaluator's stt_eval_slice_* series (per-slice guardrails) agree with its own
    local per-slice WER and partition the whole set."""
    variants = evaluation["summary"]["variants"]
    sel = f"endpoint='{ENDPOINT}',unit='word',slice='noise'"
    rows = prometheus.query(
        f"sum by (variant, slice_value) ({em.sliced(em.ERRORS)}{{{sel}}})"
        f" / sum by (variant, slice_value) ({em.sliced(em.REF_LEN)}{{{sel}}})"
    )
    got = {(r["metric"]["variant"], r["metric"]["slice_value"]): float(r["value"][1]) for r in rows}
    assert {v for v, _ in got} == {"stable", "canary"}, got
    for (variant, value), wer in got.items():
        assert wer == pytest.approx(variants[variant]["wer_by_slice"][value], rel=1e-9), (variant, value)
    for key in ("noise", "speaker", "language"):
        parts = by_variant(
            prometheus,
            f"sum by (variant) ({em.sliced(em.UTTERANCES)}{{endpoint='{ENDPOINT}',slice='{key}'}})",
        )
        whole = by_variant(prometheus, f"sum by (variant) ({em.UTTERANCES}{{endpoint='{ENDPOINT}'}})")
        assert parts == whole, key
