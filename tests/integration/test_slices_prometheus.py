"""Per-slice guardrails against a real Prometheus scraping the evaluator's own series.

The series are real prometheus_client counters filled by the evaluator's recording path
(`Replayer._record`, the code a running evaluator calls after scoring each utterance), with
synthetic transcripts instead of a tritonserver: the slice arithmetic under test is the
evaluator's, Prometheus' and the analysis engine's, not a model's.

The candidate is better on clean audio and worse on noisy audio so that the whole set is
non-inferior while the noisy slice regresses: the whole-set metric passes, the sliced metric
fails on `noise=noisy` only, and the analysis fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from stt_harness.prometheus import PrometheusServer, ScrapeTarget, start_exporter
from stt_operator import evalmetrics as em
from stt_operator.analysis.engine import evaluate_metrics
from stt_operator.analysis.model import AnalysisContext, Arm
from stt_operator.analysis.prom import PrometheusClient
from stt_operator.analysis.verdicts import p_state
from stt_operator.api.common import AnalysisSpec
from stt_operator.evaluator.model_io import Target
from stt_operator.evaluator.replay import Replayer
from stt_operator.evaluator.scoring import Observation, score_utterance

pytestmark = pytest.mark.integration
NS = "slices-it"
EP = "slices"
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]


@dataclass(frozen=True)
class Utt:
    id: str
    text: str
    language: str
    slice: str
    speaker: str


def _hyp(ref: list[str], rng: np.random.Generator, p: float) -> str:
    # Substitute each word with probability p: p is the expected WER.
    return " ".join("zulu" if rng.random() < p else w for w in ref)


@pytest.fixture(scope="module")
def fed(prometheus: PrometheusServer) -> Iterator[tuple[PrometheusServer, float]]:
    reg = CollectorRegistry()
    metrics = em.build_eval_metrics(reg)
    exporter = start_exporter(reg)
    prometheus.add_targets([ScrapeTarget("evaluator-slices", exporter.address, {"namespace": NS})])
    targets = [
        Target("stable", "m", "127.0.0.1:1", "model-a"),
        Target("canary", "m", "127.0.0.1:1", "model-b"),
    ]
    replayer = Replayer(targets, transcriber=None, endpoint=EP, baseline="stable", metrics=metrics)  # type: ignore[arg-type]
    rng = np.random.default_rng(7)
    n = 2400
    utts = []
    for i in range(n):
        ref = [WORDS[j] for j in rng.integers(0, len(WORDS), int(rng.integers(8, 20)))]
        noise = "noisy" if rng.random() < 0.25 else "clean"
        utts.append(Utt(f"u{i}", " ".join(ref), "en-US", noise, f"spk{i % 3}"))
    replayer.init_series(["en-US"])
    replayer.init_slices(utts)
    # Prometheus must see the zeros before the first utterance, so increase() counts them all:
    # 2 variants x (2 noise + 3 speaker + 1 language) slice values.
    prometheus.wait_for(
        f'count(stt_eval_slice_utterances_total{{namespace="{NS}",endpoint="{EP}"}})',
        lambda r: bool(r) and float(r[0]["value"][1]) == 12,
        timeout=60,
    )
    start = time.time() - 1
    for utt in utts:
        ref = utt.text.split()
        p_base, p_cand = (0.10, 0.25) if utt.slice == "noisy" else (0.10, 0.05)
        results = {}
        for variant, p in (("stable", p_base), ("canary", p_cand)):
            score = score_utterance(utt.text, _hyp(ref, rng, p))
            results[variant] = Observation(
                utt.id, variant, score, 0.2, 2.0, slice=utt.slice, speaker=utt.speaker
            )
        replayer._record(utt, results)
    q = f'sum(stt_eval_slice_utterances_total{{namespace="{NS}",endpoint="{EP}",slice="noise"}})'
    prometheus.wait_for(q, lambda r: bool(r) and float(r[0]["value"][1]) == 2 * n, timeout=60)
    yield prometheus, start
    exporter.stop()


def test_slice_series_carry_the_slice_labels(fed: tuple[PrometheusServer, float]) -> None:
    prom, _ = fed
    rows = prom.query(
        f'sum by (slice, slice_value) (stt_eval_slice_utterances_total{{namespace="{NS}",variant="canary"}})'
    )
    got = {(r["metric"]["slice"], r["metric"]["slice_value"]): float(r["value"][1]) for r in rows}
    assert set(got) == {
        ("noise", "clean"),
        ("noise", "noisy"),
        ("speaker", "spk0"),
        ("speaker", "spk1"),
        ("speaker", "spk2"),
        ("language", "en-US"),
    }
    # Every dimension partitions the whole set, and the whole-set family is not double counted.
    whole = prom.query(f'sum(stt_eval_utterances_total{{namespace="{NS}",variant="canary"}})')
    assert float(whole[0]["value"][1]) == 2400
    for key in ("noise", "speaker", "language"):
        assert sum(v for (k, _), v in got.items() if k == key) == 2400


def test_one_regressed_slice_fails_the_analysis_although_the_whole_set_passes(
    fed: tuple[PrometheusServer, float],
) -> None:
    prom, start = fed
    spec = AnalysisSpec.model_validate(
        {
            "metrics": [
                {"name": "wer", "preset": "wer", "nonInferiorityMargin": 0.03, "minSamples": 200},
                {
                    "name": "wer-noise",
                    "preset": "wer",
                    "slice": "noise",
                    "nonInferiorityMargin": 0.03,
                    "minSamples": 200,
                },
            ]
        }
    )
    ctx = AnalysisContext(
        namespace=NS,
        endpoint=EP,
        candidate=Arm("canary"),
        baseline=Arm("stable"),
        language="en-US",
        start=start,
    )
    result = evaluate_metrics(PrometheusClient(prom.url), spec.metrics, ctx)
    by_name = {m.name: m for m in result.metrics}
    assert set(by_name) == {"wer", "wer-noise[noise=clean]", "wer-noise[noise=noisy]"}, result.message
    assert by_name["wer"].outcome == "Passed", by_name["wer"].message
    assert by_name["wer-noise[noise=clean]"].outcome == "Passed", by_name["wer-noise[noise=clean]"].message
    assert by_name["wer-noise[noise=noisy]"].outcome == "Failed", by_name["wer-noise[noise=noisy]"].message
    assert result.outcome == "Failed"
    # The sliced queries read the per-slice family of that value only.
    assert any('slice_value="noisy"' in q for q in by_name["wer-noise[noise=noisy]"].queries)
    # Holm covers the slices: three rules in the family, the slice keys carried to the next look.
    assert {k.split("/")[0] for k in p_state(result)} == set(by_name)
