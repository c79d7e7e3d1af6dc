"""Analysis engine: Prometheus in, verdicts out.

Entry points for the controllers:
- `engine.evaluate_metrics(client, metric_specs, context) -> AnalysisResult`
- `policy.decide(history, analysis_spec) -> Decision`
- `engine.check_sample_ratio(client, context, weights) -> SRMResult | reason`
- `prom.PrometheusClient(url, timeout_s=...)`
"""
