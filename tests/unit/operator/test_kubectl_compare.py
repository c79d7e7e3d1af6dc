"""`kubectl stt compare`: models grouped by language pair, ranked by the selector's selection."""

from __future__ import annotations

from typing import Any

from stt_operator.kubectl_plugin import build_parser, compare_rows


def _model(name: str, pair: str | None, wer: float, p95: float, ready: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"language": "en-US"}
    if pair:
        spec["languagePair"] = pair
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": spec,
        "status": {
            "validation": {"wer": wer, "cer": wer / 2, "latencyP95Ms": p95},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


MODELS = [
    _model("es-big", "en>es", 0.08, 400),
    _model("es-small", "en>es", 0.12, 90),
    _model("fr-a", "en>fr", 0.10, 200),
    _model("fr-b", "en>fr", 0.07, 250, ready=False),
    _model("plain", None, 0.2, 100),
]


def test_each_pair_has_its_own_best_model() -> None:
    rows = compare_rows(MODELS)
    best = {r[0]: r[1] for r in rows if r[6] == "*"}
    assert best == {"en>es": "es-big", "en>fr": "fr-a", "en-US": "plain"}
    # A not-Ready model is listed with the reason it was dropped, never best.
    (fr_b,) = [r for r in rows if r[1] == "fr-b"]
    assert fr_b[5] is None and fr_b[7], fr_b


def test_optimize_and_pair_filter() -> None:
    rows = compare_rows(MODELS, optimize="latency", pair="en>es")
    assert [(r[1], r[5], r[6]) for r in rows] == [("es-small", 1, "*"), ("es-big", 2, "")]
    args = build_parser().parse_args(["compare", "--language-pair", "en>es", "--optimize", "latency"])
    assert args.language_pair == "en>es" and args.optimize == "latency"
