"""`make demo`'s walk-through (`stt_harness.demo.Story`) on the test session's cluster.

The same code `stt-demo` runs after starting its own cluster: real node, the operator's images,
Traefik, the Prometheus Operator's Prometheus, the operator configured as a Helm install would
be. Each chapter's outcome is asserted: the WER canary rolled back, the INT8 canary promoted,
the A/B verdict with its interval, and the HTML reports with their plots.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from stt_harness import closedloop as cl
from stt_harness import demo
from stt_harness.cluster import LocalCluster
from stt_harness.cluster_fixtures import scratch_namespace
from stt_harness.gateway import TraefikGateway
from stt_harness.promoperator import PrometheusStack
from stt_operator.report import collect
from stt_operator.services.kube import Kube

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

NAMESPACE = "stt-demo-test"  # not one the closed-loop operator serves (stt-loop-*)


def test_the_demo_tells_the_whole_story(
    cluster: LocalCluster,
    kube_api: Any,
    traefik: TraefikGateway,
    prometheus_stack: PrometheusStack,
    small_evalset: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = tmp_path_factory.mktemp("demo")
    images = cl.node_images(cluster)
    evalset = cl.readable_copy(small_evalset, workdir)
    lines: list[str] = []

    def say(text: str) -> None:
        lines.append(text)
        print(text, flush=True)

    with (
        cl.loop_operator(
            cluster, images, prometheus_stack.url, workdir / "operator", namespaces=(NAMESPACE,)
        ),
        scratch_namespace(kube_api, NAMESPACE),
    ):
        try:
            story = demo.Story(
                cluster, Kube(kube_api), traefik, prometheus_stack.url, evalset, workdir, NAMESPACE, say
            )
            result = story.run()
        finally:
            # Deleted while the operator still runs, so it releases its finalizers.
            cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=180s", check=False)
            cl.delete_volume(cluster, NAMESPACE)

    # The degraded canary: weighted 50 %, failed on WER, back to 100 % stable; no client failure.
    rollback = result.rollback
    assert rollback is not None and rollback.outcome == "RolledBack", rollback
    assert rollback.weights == [0, 50, 0], rollback.weights
    failed = [r for r in rollback.analysis if r["outcome"] == "Failed"]
    assert failed and failed[-1]["metric"] == "wer" and failed[-1]["value"] > failed[-1]["baseline"] + 0.03
    assert rollback.requests >= 10 and rollback.failed == 0 and rollback.violations == [], rollback

    # The INT8 copy the quantization Job made: promoted through every step on real WER.
    quantization = result.models[demo.CTC]["quantization"]
    assert quantization["quantizedWer"] <= quantization["baselineWer"] + 0.05, quantization
    int8 = result.int8
    assert int8 is not None and int8.outcome == "Promoted", int8
    assert int8.weights == [0, 25, 50, 100], int8.weights
    assert {r["step"] for r in int8.analysis if r["outcome"] == "Passed"} == {1, 3}, int8.analysis
    assert int8.requests >= 10 and int8.failed == 0 and int8.violations == [], int8

    # The A/B verdict: the recogniser beats its degraded twin on WER, with an interval that
    # excludes no difference; sticky rules were in the route while it ran; no client failure.
    decision = result.abtest["decision"]
    assert decision["outcome"] == "Winner" and result.abtest["winner"] == "control", result.abtest
    interval = decision["confidenceInterval"]
    assert interval["lower"] > 0 or interval["upper"] < 0, decision
    assert result.sticky_rules > 0
    assert result.ab_requests >= 10 and result.ab_failed == 0
    # The live split from Triton's counters (less the replay) follows the 50/50 weights and
    # counts about what the client sent. Triton and the evaluator are scraped up to 5 s apart,
    # so the replay of those seconds can count as live (~15 a variant here); a replay not
    # subtracted at all would be twice the client's count and more.
    live, sent = result.live_requests, result.ab_requests
    assert set(live) == {"control", "candidate"}, live
    assert 0.3 <= live["control"] / sum(live.values()) <= 0.7, live
    assert 0.7 * sent <= sum(live.values()) <= 1.5 * sent, (live, sent)

    # Reports: self-contained HTML with embedded plots.
    assert len(result.reports) == 3
    for path in result.reports:
        html = path.read_text()
        assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', html)) >= 2, path
        assert 'alt="Live traffic"' in html, path  # the live split plot, from Triton's counters
    # The operator's own series reached Prometheus through the chart's metrics Service and
    # ServiceMonitor: the weights it wrote, which the rollout reports draw on their timelines.
    now = time.time()
    source = collect.PrometheusRange(prometheus_stack.url)
    weights = collect.route_weight_series(
        source, collect.SeriesData(now - 1800, now, 15.0), NAMESPACE, "commands"
    )
    int8 = [pts for backend, pts in weights.items() if "-ctc-int8-" in backend]
    assert int8 and max(v for _, v in int8[0]) == 100, weights
    for chapter in ("1. models", "2. asr", "2. commands", "3. A/B test", "4. reports"):
        assert any(line.split("] ", 1)[1].startswith(chapter) for line in lines), (chapter, lines)
