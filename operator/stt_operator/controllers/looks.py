"""The looks the planners ask for before they decide: Prometheus (a rollout's analysis and
monitoring, an A/B test's measurement), the smoke transcription through the new revision's
Service, and the cluster's free capacity.

Each takes the operator's context and returns the planner's typed answer; any failure becomes
an answer (an Error outcome, an unavailable look), never an exception out of a reconcile.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from stt_operator.analysis.engine import check_live_split, check_sample_ratio, evaluate_metrics
from stt_operator.analysis.model import AnalysisContext, AnalysisResult, Arm, MetricResult, MonitoringLook
from stt_operator.analysis.monitoring import window_counts
from stt_operator.analysis.prom import PrometheusClient, PromQueryError
from stt_operator.api import ABTest, ModelDeployment
from stt_operator.api.common import PrometheusSpec, parse_duration
from stt_operator.api.modeldeployment import ModelDeploymentStatus
from stt_operator.builders.modelconfig import triton_model_name
from stt_operator.builders.routing import SERVICE_NAME_LABEL
from stt_operator.builders.serving import revision_object_name
from stt_operator.controllers.context import OperatorContext
from stt_operator.controllers.status import StatusWriter
from stt_operator.experiments.planner import ABTestInput, Measurement, backends, live_weights
from stt_operator.rollout.dispatch import plan_rollout
from stt_operator.rollout.monitoring import MonitoringRequest
from stt_operator.rollout.plan import AnalysisRequest, EndpointPlan, SmokeRequest, SmokeResult
from stt_operator.rollout.transitions import ANALYSIS_UNAVAILABLE, RolloutInput
from stt_operator.services.capacity import CapacityObserver
from stt_operator.services.smoke import builtin_utterance, smoke_transcribe
from stt_operator.stats.counts import SRMResult, combine_sample_ratios
from stt_operator.triton.analytics import collect_analytics

log = logging.getLogger(__name__)

# PromQueryError kinds that mean no Prometheus can be asked at all -> AnalysisUnavailable reasons.
UNAVAILABLE_REASONS = {"not-configured": "NoPrometheus", "not-allowed": "PrometheusNotAllowed"}
CONDITION_ANALYSIS_UNAVAILABLE = "AnalysisUnavailable"
PROMETHEUS_TIMEOUT_S = 10.0  # when the object names no prometheus.timeout


def _prometheus(ctx: OperatorContext, prom: PrometheusSpec | None) -> PrometheusClient:
    """The client for an object's `prometheus` (its source or address, or the operator's
    default); raises PromQueryError before any request when none is allowed."""
    url = ctx.settings.prometheus_for(prom.source if prom else None, prom.address if prom else None)
    return PrometheusClient(url, timeout_s=parse_duration(prom.timeout) if prom else PROMETHEUS_TIMEOUT_S)


def run_analysis(
    ctx: OperatorContext,
    md: ModelDeployment,
    request: AnalysisRequest,
    status: ModelDeploymentStatus,
    model_name: str,
) -> AnalysisResult:
    """One look: query Prometheus through the analysis engine. A failure of any kind is the
    outcome Error for every metric (the policy pauses after several), never a crash."""
    analysis = md.spec.analysis
    metrics = [m for m in (analysis.metrics if analysis else []) if m.name in request.metrics]
    name = md.name
    try:
        assert analysis is not None
        prom = analysis.prometheus
        client = _prometheus(ctx, prom)
        stable_model = status.stable_model or ""
        candidate = Arm(
            request.candidate_variant, revision_object_name(name, model_name, request.candidate), model_name
        )
        baseline = None
        if request.baseline:
            service = revision_object_name(name, stable_model, request.baseline)
            baseline = Arm("stable", service, stable_model)
        context = AnalysisContext(
            namespace=md.namespace,
            endpoint=name,
            candidate=candidate,
            baseline=baseline,
            start=request.start.timestamp(),
            interval=analysis.interval,
            confidence=analysis.confidence,
            no_data_policy=analysis.no_data_policy,
            scope_queries=ctx.settings.scope_custom_queries,
        )
        return evaluate_metrics(client, metrics, context)
    except PromQueryError as exc:  # no allowed Prometheus: the operator's words, no request sent
        if exc.kind in UNAVAILABLE_REASONS:  # configuration, not a failed look: the rollout holds
            return AnalysisResult("Error", exc.detail, (), unavailable=UNAVAILABLE_REASONS[exc.kind])
        return AnalysisResult(
            "Error",
            exc.detail,
            tuple(MetricResult(m.name, "Error", f"{m.name} Error: {exc.detail}") for m in metrics),
        )
    except Exception as exc:  # a bad address or an engine bug must not stop the reconcile loop
        log.exception("analysis of %s/%s failed", md.namespace, name)
        message = f"analysis could not run: {exc}"
        return AnalysisResult(
            "Error", message, tuple(MetricResult(m.name, "Error", f"{m.name} Error: {exc}") for m in metrics)
        )


def run_monitoring_look(
    ctx: OperatorContext, md: ModelDeployment, request: MonitoringRequest
) -> MonitoringLook:
    """One monitoring look (rollout/monitoring.py): the stable revision's counts over the
    request's window. Any failure is `unavailable` (a hold), never a crash or a verdict."""
    monitoring, analysis = md.spec.monitoring, md.spec.analysis
    prom = (monitoring.prometheus if monitoring else None) or (analysis.prometheus if analysis else None)
    try:
        service = revision_object_name(md.name, request.model, request.revision)
        return window_counts(
            _prometheus(ctx, prom),
            request.metrics,
            namespace=md.namespace,
            endpoint=md.name,
            service=service,
            model=request.model,
            start=request.start,
            end=request.end,
        )
    except PromQueryError as exc:
        return MonitoringLook((), UNAVAILABLE_REASONS.get(exc.kind, exc.kind), exc.detail)
    except Exception as exc:  # a bad address or a bug must not stop the reconcile loop
        log.exception("monitoring look of %s/%s failed", md.namespace, md.name)
        return MonitoringLook((), "LookFailed", f"monitoring look could not run: {exc}")


def analysis_availability(
    writer: StatusWriter, namespace: str, name: str, result: AnalysisResult | None
) -> None:
    """One AnalysisUnavailable condition, True while no Prometheus can be asked (`result` is
    this reconcile's look, None when none was due), with an Event and one log line when it
    turns True or changes reason: not one per interval."""
    was = writer.old_condition(CONDITION_ANALYSIS_UNAVAILABLE) or {}
    if result is not None and result.unavailable:
        message = f"{result.message}; the rollout holds (no promotion, no rollback) until one is"
        writer.condition(CONDITION_ANALYSIS_UNAVAILABLE, "True", result.unavailable, message)
        if writer.changed(CONDITION_ANALYSIS_UNAVAILABLE):
            log.warning("analysis of %s/%s unavailable: %s", namespace, name, result.message)
            writer.event("Warning", result.unavailable, message)
        return
    if was.get("status") != "True":
        return
    held = any(
        c.get("type") == "Paused" and c.get("reason") == ANALYSIS_UNAVAILABLE for c in writer.conditions
    )
    if result is not None:
        writer.condition(
            CONDITION_ANALYSIS_UNAVAILABLE, "False", "PrometheusAvailable", "Prometheus answered"
        )
        log.info("analysis of %s/%s: Prometheus answers again", namespace, name)
    elif not held:  # promoted, aborted or rolled back by a person meanwhile: nothing waits for it
        writer.condition(
            CONDITION_ANALYSIS_UNAVAILABLE, "False", "AnalysisNotRunning", "no analysis is waiting"
        )


_OBSERVERS: dict[int, CapacityObserver] = {}


def capacity_observer(ctx: OperatorContext) -> CapacityObserver:
    """One node cache per API facade (the operator has one)."""
    return _OBSERVERS.setdefault(id(ctx.kube), CapacityObserver(ctx.kube))


def run_smoke(
    ctx: OperatorContext, name: str, namespace: str, model: Mapping[str, Any], request: SmokeRequest
) -> SmokeResult:
    """The smoke transcription straight to one ready pod of the revision (its Service is
    headless: the address comes from the Service's EndpointSlices, gRPC port)."""
    service_name = revision_object_name(name, request.model, request.revision)
    slices = ctx.kube.list(
        "discovery.k8s.io/v1", "EndpointSlice", namespace, {SERVICE_NAME_LABEL: service_name}
    )
    address = ready_address(slices, "grpc")
    if address is None:
        expected, _ = builtin_utterance()
        return SmokeResult(
            request.revision, "Error", expected, None, f"Service {service_name} has no ready gRPC endpoint"
        )
    io = (model.get("spec") or {}).get("io") or {}
    triton_model = triton_model_name(model["metadata"]["name"])
    return smoke_transcribe(address, triton_model, io, request.revision, request.timeout_s)


def ready_address(slices: list[dict[str, Any]], port_name: str) -> str | None:
    """`host:port` of the first ready endpoint in a Service's EndpointSlices (lowest address
    first, so repeated looks pick the same pod), on the port named `port_name`; None if none."""
    found: list[tuple[str, int]] = []
    for item in slices:
        ports = [p.get("port") for p in item.get("ports") or [] if p.get("name") == port_name]
        if not ports or not ports[0]:
            continue
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            found += [(address, int(ports[0])) for address in endpoint.get("addresses") or []]
    if not found:
        return None
    host, port = min(found)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def plan_with_looks(
    ctx: OperatorContext, md: ModelDeployment, model: Mapping[str, Any], inputs: RolloutInput
) -> tuple[EndpointPlan, AnalysisResult | None]:
    """Plan; when the planner asks for a look (Prometheus, a smoke transcription, a monitoring
    window), take it and plan again with the answer, each at most once per reconcile (the
    planner is deterministic). Returns the plan and this reconcile's analysis look, if any."""
    plan = plan_rollout(inputs)
    looked: AnalysisResult | None = None
    for _ in range(3):
        if plan.analysis_request is not None and inputs.analysis is None:
            looked = run_analysis(ctx, md, plan.analysis_request, inputs.status, inputs.desired.model)
            inputs = replace(inputs, analysis=(plan.analysis_request, looked))
        elif plan.smoke_request is not None and inputs.smoke is None:
            smoke = run_smoke(ctx, md.name, md.namespace, model, plan.smoke_request)
            inputs = replace(inputs, smoke=smoke)
        elif plan.monitoring_request is not None and inputs.monitoring is None:
            look = run_monitoring_look(ctx, md, plan.monitoring_request)
            inputs = replace(inputs, monitoring=(plan.monitoring_request, look))
        elif any(r is not None for r in (plan.analysis_request, plan.smoke_request, plan.monitoring_request)):
            raise RuntimeError("the rollout planner asked for the same look twice in one reconcile")
        else:
            break
        plan = plan_rollout(inputs)
    return plan, looked


# Where operators before status.sequential kept the running p-values (read once, then removed).
LEGACY_P_STATE = "stt.dev/abtest-p-state"


def running_p_values(abt: ABTest, body: Mapping[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    """The sequential test's running minima from `status.sequential`; a test started by an
    operator that kept them in the LEGACY_P_STATE annotation resumes from that once."""
    if abt.status.sequential:
        return abt.status.running_p_values()
    raw = (body["metadata"].get("annotations") or {}).get(LEGACY_P_STATE)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {v: {k: (float(p[0]), float(p[1])) for k, p in d.items()} for v, d in data.items()}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        log.warning("ignoring unreadable %s annotation", LEGACY_P_STATE)
        return {}


def measure_abtest(
    ctx: OperatorContext, abt: ABTest, inp: ABTestInput, previous: Mapping[str, Mapping[str, Any]]
) -> Measurement:
    """One look: every non-control variant against the control (primary + guardrails, Holm
    across them), and the sample-ratio check. Any failure is a Measurement with `error`."""
    spec = abt.spec
    try:
        url = ctx.settings.prometheus_for(inp.endpoint.prometheus_source, inp.endpoint.prometheus_address)
        client = PrometheusClient(url, timeout_s=PROMETHEUS_TIMEOUT_S)
        by_variant = {b.variant: b for b in backends(inp)}
        control = spec.control().name

        def arm(variant: str) -> Arm:
            b = by_variant[variant]
            return Arm(variant, b.service, b.model)

        min_samples = max(spec.primary_metric.min_samples, spec.min_samples_per_variant)
        metrics = [
            spec.primary_metric.model_copy(update={"min_samples": min_samples}),
            *spec.guardrail_metrics,
        ]
        started = inp.status.started_at
        base = AnalysisContext(
            namespace=inp.namespace,
            endpoint=inp.endpoint.name,
            candidate=arm(control),
            baseline=arm(control),
            start=_ts(started) if started else 0.0,
            interval=f"{max(1, int(inp.analysis_interval_s))}s",
            confidence=1.0 - spec.significance_level,
            paired=spec.paired_evaluation,
            no_data_policy="Pause",
            scope_queries=ctx.settings.scope_custom_queries,
        )
        results = {
            v.name: evaluate_metrics(
                client,
                metrics,
                replace(base, candidate=arm(v.name), previous_p=dict(previous.get(v.name) or {})),
            )
            for v in spec.variants
            if v.name != control
        }
        # Two splits are checked and either alarm holds the decision: the evaluator's replay
        # (every utterance to every variant: equal counts expected) and the live traffic the
        # route splits (Triton's request counters per variant Service, less the replay).
        checks: dict[str, SRMResult | str] = {}
        if spec.paired_evaluation:
            checks["replay"] = check_sample_ratio(
                client,
                base,
                {v.name: 1.0 for v in spec.variants},
                threshold=spec.srm_threshold,
            )
        live = live_weights(inp, list(by_variant.values()))
        if live is not None:
            checks["live"] = check_live_split(
                client,
                base,
                live,
                {v: by_variant[v].service for v in live},
                threshold=spec.srm_threshold,
            )
        srm = combine_sample_ratios(checks)
        return Measurement(results=results, srm=srm)
    except PromQueryError as exc:  # no Prometheus configured: the operator's words, nothing sent
        return Measurement(error=exc.detail)
    except Exception as exc:  # a bad address or an engine bug pauses the test, never crashes it
        log.exception("analysis of ABTest %s/%s failed", inp.namespace, inp.name)
        return Measurement(error=f"{type(exc).__name__}: {exc}")


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def model_analytics(ctx: OperatorContext, model_body: Mapping[str, Any]) -> dict[str, Any] | None:
    """An STTModel's live performance summary from Prometheus (triton/analytics.py), or None when
    analytics are off or Prometheus gave no answer (logged, never raised: the timer keeps its
    rhythm)."""
    meta, spec = model_body["metadata"], model_body.get("spec") or {}
    if not ctx.settings.prometheus_configured or not ctx.settings.prometheus_url:
        return None  # analytics are off; the runner said so once at start
    client = PrometheusClient(ctx.settings.prometheus_url, timeout_s=PROMETHEUS_TIMEOUT_S)

    def query(promql: str) -> list[dict[str, Any]]:
        result = client.instant(promql)
        return [{"metric": s.labels, "value": [result.at or 0, str(s.value)]} for s in result.samples]

    try:
        return collect_analytics(
            query,
            meta["name"],
            triton_model_name(meta["name"]),
            spec.get("language") or "und",
            language_pair=spec.get("languagePair"),
            window=ctx.settings.analytics_window,
            namespace=meta["namespace"],
        )
    except (PromQueryError, ValueError) as exc:
        log.warning("analytics for %s/%s unavailable: %s", meta["namespace"], meta["name"], exc)
        return None
