"""Per-model, per-language performance analytics for `STTModel.status.analytics`.

`analytics_queries` builds the PromQL; `summarise_analytics` (pure) turns instant-query results
into the status shape (camelCase, `LanguageAnalytics`); `collect_analytics` is the thin I/O
step the operator's timer calls. Accuracy, confidence and latency come from the evaluator's
counters (labelled by language); throughput, success rate, request totals, GPU utilisation and
memory come from Triton's own metrics, which have no language, so they are model-wide and
repeated on every language entry.

Ratios are ratios of sums of cumulative counters (docs/statistics.md); latency p95 is
`histogram_quantile` over the summed bucket increments in the window, never an average of
per-pod quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from stt_operator import evalmetrics as em

# query name -> LanguageAnalytics field (camelCase), and whether it is per language.
FIELDS: dict[str, tuple[str, bool]] = {
    "wer": ("wer", True),
    "cer": ("cer", True),
    "confidence": ("confidence", True),
    "latency_p95_ms": ("latencyP95Ms", True),
    "throughput_rps": ("throughputRps", False),
    "success_rate": ("successRate", False),
    "requests": ("requests", False),
    "gpu_utilization": ("gpuUtilization", False),
    "memory_bytes": ("memoryBytes", False),
}


def _label_value(value: str, what: str) -> str:
    if any(c in value for c in '"\\\n'):
        raise ValueError(
            f"{what} {value!r}: quotes, backslashes and newlines are not allowed in a label value"
        )
    return value


def analytics_queries(
    model: str,
    triton_model: str,
    *,
    window: str = "5m",
    triton_selector: str = "",
    namespace: str | None = None,
    cumulative_latency: bool = False,
) -> dict[str, str]:
    """PromQL per analytics field. `triton_selector` adds matchers for Triton's series (e.g.
    `namespace="ml",pod=~"asr-.*"`) so GPU gauges, which carry no model label, are scoped.
    Latency p95 is over the last `window` by default, or since the counters started with
    `cumulative_latency` (a window with no requests has no p95, and the field is left out)."""
    m = _label_value(model, "model")
    tm = _label_value(triton_model, "triton model")
    ev = f'{em.LABEL_MODEL}="{m}"' + (
        f',namespace="{_label_value(namespace, "namespace")}"' if namespace else ""
    )
    extra = f",{triton_selector}" if triton_selector else ""
    tri = f'model="{tm}"{extra}'
    gpu = triton_selector or f'model="{tm}"'

    def ratio(num: str, den: str, unit: str | None = None) -> str:
        u = f',{em.LABEL_UNIT}="{unit}"' if unit else ""
        return f"sum by (language) ({num}{{{ev}{u}}}) / sum by (language) ({den}{{{ev}{u}}})"

    buckets = f"{em.LATENCY}_bucket{{{ev}}}"
    if not cumulative_latency:
        buckets = f"increase({buckets}[{window}])"
    return {
        "wer": ratio(em.ERRORS, em.REF_LEN, em.UNIT_WORD),
        "cer": ratio(em.ERRORS, em.REF_LEN, em.UNIT_CHAR),
        "confidence": ratio(em.CONFIDENCE, em.CONFIDENCE_COUNT),
        "latency_p95_ms": f"1000 * histogram_quantile(0.95, sum by (language, le) ({buckets}))",
        "throughput_rps": f"sum(rate(nv_inference_request_success{{{tri}}}[{window}]))",
        "success_rate": (
            f"sum(nv_inference_request_success{{{tri}}})"
            f" / (sum(nv_inference_request_success{{{tri}}}) + sum(nv_inference_request_failure{{{tri}}}))"
        ),
        "requests": (
            f"sum(nv_inference_request_success{{{tri}}}) + sum(nv_inference_request_failure{{{tri}}})"
        ),
        "gpu_utilization": f"avg(nv_gpu_utilization{{{gpu}}})",
        "memory_bytes": f"sum(nv_gpu_memory_used_bytes{{{gpu}}})",
    }


def _value(sample: Mapping[str, Any]) -> float | None:
    try:
        v = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None  # NaN (0/0) and Inf mean "no data", not a number


def summarise_analytics(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    default_language: str,
    now: datetime | None = None,
    precision: int = 6,
    language_pair: str | None = None,
) -> list[dict[str, Any]]:
    """Instant-query results (`data.result` vectors by query name) -> `status.analytics` entries.

    One entry per language the evaluator reported (or `default_language` when only Triton has
    data); no entry at all when nothing has data. Fields without data are omitted.
    """
    unknown = sorted(set(results) - set(FIELDS))
    if unknown:
        raise ValueError(f"analytics results: unknown queries {unknown}; expected some of {sorted(FIELDS)}")
    per_language: dict[str, dict[str, float]] = {}
    model_wide: dict[str, float] = {}
    for name, vector in results.items():
        field, by_language = FIELDS[name]
        for sample in vector or []:
            v = _value(sample)
            if v is None:
                continue
            if by_language:
                lang = (sample.get("metric") or {}).get(em.LABEL_LANGUAGE) or default_language
                per_language.setdefault(lang, {})[field] = round(v, precision)
            else:
                model_wide[field] = round(v, precision)
    if not per_language and not model_wide:
        return []
    if not per_language:
        per_language[default_language] = {}
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    pair = {"languagePair": language_pair} if language_pair else {}
    return [
        {"language": lang, **pair, **fields, **model_wide, "updatedAt": stamp}
        for lang, fields in sorted(per_language.items())
    ]


def collect_analytics(
    query: Callable[[str], Sequence[Mapping[str, Any]]],
    model: str,
    triton_model: str,
    default_language: str,
    language_pair: str | None = None,
    **query_options: Any,
) -> list[dict[str, Any]]:
    """Run every query through `query` (e.g. `PrometheusConnect(url).custom_query`) and summarise."""
    queries = analytics_queries(model, triton_model, **query_options)
    results = {name: query(q) for name, q in queries.items()}
    return summarise_analytics(results, default_language, language_pair=language_pair)
