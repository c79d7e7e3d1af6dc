"""PromQL for STTModel.status.analytics and the pure summariser."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stt_operator import evalmetrics as em
from stt_operator.api.sttmodel import LanguageAnalytics
from stt_operator.triton.analytics import analytics_queries, summarise_analytics

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def vec(value: str, **labels: str) -> dict:
    return {"metric": labels, "value": [1.0, value]}


def test_queries_are_ratios_of_sums_scoped_to_the_model() -> None:
    q = analytics_queries("asr-v2", "asr-v2", window="10m", triton_selector='namespace="ml"', namespace="ml")
    assert q["wer"].startswith(f"sum by (language) ({em.ERRORS}{{")
    assert 'model="asr-v2",namespace="ml",unit="word"' in q["wer"]
    assert f"/ sum by (language) ({em.REF_LEN}" in q["wer"]
    assert "histogram_quantile(0.95, sum by (language, le) (increase(" in q["latency_p95_ms"]
    assert "[10m]" in q["throughput_rps"]
    assert 'nv_inference_request_success{model="asr-v2",namespace="ml"}' in q["success_rate"]
    assert q["gpu_utilization"] == 'avg(nv_gpu_utilization{namespace="ml"})'
    with pytest.raises(ValueError, match="label value"):
        analytics_queries('a"b', "x")


def test_summary_per_language_with_model_wide_triton_figures() -> None:
    results = {
        "wer": [vec("0.071", language="en-US"), vec("0.2", language="de-DE")],
        "cer": [vec("0.03", language="en-US")],
        "confidence": [vec("NaN", language="en-US")],  # 0/0: no data, not a number
        "latency_p95_ms": [vec("182.5", language="en-US")],
        "throughput_rps": [vec("12.5")],
        "success_rate": [vec("0.999")],
        "requests": [vec("4000")],
        "gpu_utilization": [],
        "memory_bytes": [vec("1073741824")],
    }
    out = summarise_analytics(results, "en-US", NOW)
    assert [e["language"] for e in out] == ["de-DE", "en-US"]
    en = out[1]
    assert en["wer"] == 0.071 and en["cer"] == 0.03 and en["latencyP95Ms"] == 182.5
    assert "confidence" not in en and "gpuUtilization" not in en
    assert en["throughputRps"] == out[0]["throughputRps"] == 12.5
    assert en["updatedAt"] == "2026-01-02T03:04:05Z"
    for entry in out:  # the status model accepts every entry
        LanguageAnalytics.model_validate(entry)


def test_only_triton_data_gives_one_entry_and_nothing_gives_none() -> None:
    out = summarise_analytics({"requests": [vec("10")], "wer": []}, "en-US", NOW)
    assert out == [{"language": "en-US", "requests": 10.0, "updatedAt": "2026-01-02T03:04:05Z"}]
    assert summarise_analytics({"wer": [], "requests": [vec("NaN")]}, "en-US", NOW) == []
    with pytest.raises(ValueError, match="unknown queries"):
        summarise_analytics({"wat": []}, "en-US")


def test_analytics_entries_carry_the_models_language_pair() -> None:
    out = summarise_analytics({"requests": [vec("10")]}, "en-US", NOW, language_pair="en>es")
    assert [(e["language"], e["languagePair"]) for e in out] == [("en-US", "en>es")]
    assert "languagePair" not in summarise_analytics({"requests": [vec("10")]}, "en-US", NOW)[0]
