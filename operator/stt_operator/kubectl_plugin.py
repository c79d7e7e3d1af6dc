"""`kubectl stt` — a kubectl plugin (installed as the `kubectl-stt` console script).

    kubectl stt get      NAME                  a ModelDeployment as a tree: route weights, revisions,
                                               their Deployments and pods, analysis runs
    kubectl stt get      abt/NAME              an ABTest as a tree: variants, decision, guardrails
    kubectl stt promote  NAME                  skip the current pause / analysis step, or promote a
                                               blue-green preview (annotation stt.dev/promote)
    kubectl stt abort    NAME                  roll the rollout in flight back (stt.dev/abort);
                         abt/NAME              stop an A/B test (spec.stop)
    kubectl stt pause    NAME / resume NAME    hold the rollout where it is (spec.paused)
    kubectl stt retry    NAME                  let a rolled-back revision roll out again
    kubectl stt undo     NAME --to-revision N  go back to revision N of the recorded history
    kubectl stt results  NAME                  an ABTest's verdict: variants, effect, interval, p
    kubectl stt promotion abt/NAME             the Git change that promotes an ABTest's winner (a
                                               ModelDeployment patch; -o json: a merge patch)
    kubectl stt report   NAME|abt/NAME         a self-contained HTML report with plots
    kubectl stt metrics  [MODEL]               per-model, per-language analytics
    kubectl stt compare  [--language-pair P]   models ranked per language pair, best marked (the
                                               selector's own selection, --optimize METRIC)
    kubectl stt status                         models, endpoints and A/B tests at a glance

Common flags: -n NAMESPACE, -A (get-less listing verbs), --kubeconfig. It talks to the
apiserver through the same kubeconfig kubectl uses; `report` also reads Prometheus
(`--prometheus URL`, or STT_PROMETHEUS_URL). Writes are merge patches of spec or of the
annotations the controllers read (docs/api-contract.md); the operator does the rest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stt_operator import API_GROUP, API_VERSION
from stt_operator.rollout.history import ANNOTATION_RETRY, ANNOTATION_UNDO
from stt_operator.rollout.transitions import ANNOTATION_ABORT, ANNOTATION_PROMOTE
from stt_operator.stats.selection import METRICS

ANALYTICS_COLUMNS = (
    ("MODEL", "model"),
    ("LANGUAGE", "language"),
    ("PAIR", "languagePair"),
    ("WER", "wer"),
    ("CER", "cer"),
    ("CONFIDENCE", "confidence"),
    ("P95 MS", "latencyP95Ms"),
    ("RPS", "throughputRps"),
    ("SUCCESS", "successRate"),
    ("REQUESTS", "requests"),
    ("GPU UTIL", "gpuUtilization"),
    ("UPDATED", "updatedAt"),
)

KINDS = {  # what a NAME prefix selects: (plural, Kind)
    "": ("modeldeployments", "ModelDeployment"),
    "mdep": ("modeldeployments", "ModelDeployment"),
    "modeldeployment": ("modeldeployments", "ModelDeployment"),
    "abt": ("abtests", "ABTest"),
    "abtest": ("abtests", "ABTest"),
    "sttm": ("sttmodels", "STTModel"),
    "sttmodel": ("sttmodels", "STTModel"),
}


class UsageError(Exception):
    """Bad input: printed as `error: ...` with exit code 2."""


class NotFound(Exception):
    """A named object does not exist: exit code 1."""


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """kubectl-style columns: left-aligned, two spaces apart."""
    cells = [list(header)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def analytics_rows(models: Iterable[Mapping[str, Any]], all_namespaces: bool) -> list[list[Any]]:
    rows = []
    for model in models:
        meta = model["metadata"]
        name = f"{meta['namespace']}/{meta['name']}" if all_namespaces else meta["name"]
        entries = (model.get("status") or {}).get("analytics") or [{}]
        for entry in entries:
            rows.append([name if key == "model" else entry.get(key) for _, key in ANALYTICS_COLUMNS])
    return rows


def compare_rows(
    models: Sequence[Mapping[str, Any]], optimize: str = "wer", pair: str | None = None
) -> list[list[Any]]:
    """STTModels grouped by spec.languagePair (else spec.language), each group ranked by the
    same selection a ModelDeployment selector runs (stt_operator.stats.selection)."""
    from stt_operator.rollout.selection import summary
    from stt_operator.stats.selection import Criteria, select_best_model

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for m in models:
        spec = m.get("spec") or {}
        key = spec.get("languagePair") or spec.get("language") or "-"
        if pair is None or key == pair:
            groups.setdefault(key, []).append(m)
    rows: list[list[Any]] = []
    for key in sorted(groups):
        summaries = {m["metadata"]["name"]: summary(m) for m in groups[key]}
        sel = select_best_model(summaries.values(), Criteria(optimize=optimize))
        for v in sel.candidates:
            sm = summaries[v.name]
            rows.append(
                [
                    key,
                    v.name,
                    sm.wer,
                    sm.cer,
                    sm.latency_p95_ms,
                    v.rank,
                    "*" if v.name == sel.best else "",
                    "; ".join(v.reasons),
                ]
            )
    return rows


def status_rows(objects: Iterable[Mapping[str, Any]], all_namespaces: bool) -> list[list[Any]]:
    rows = []
    for obj in objects:
        meta, status = obj["metadata"], obj.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        name = f"{meta['namespace']}/{meta['name']}" if all_namespaces else meta["name"]
        rows.append([obj["kind"], name, status.get("phase"), ready.get("reason"), ready.get("message")])
    return rows


def parse_ref(ref: str, default_kind: str = "") -> tuple[str, str, str]:
    """`NAME`, `abt/NAME`, `modeldeployment/NAME` -> (plural, Kind, name)."""
    prefix, _, name = ref.rpartition("/")
    prefix = (prefix or default_kind).lower().removesuffix("s") if prefix != "abtests" else "abtest"
    if prefix not in KINDS:
        raise UsageError(f"unknown kind {prefix!r} in {ref!r}: use NAME, mdep/NAME or abt/NAME")
    if not name:
        raise UsageError(f"no name in {ref!r}")
    plural, kind = KINDS[prefix]
    return plural, kind, name


# --- trees ------------------------------------------------------------------------------------


def _tree(lines: list[tuple[int, str]]) -> str:
    """Indented (depth, text) lines drawn with box characters, like `kubectl argo rollouts get`."""
    out = []
    for i, (depth, text) in enumerate(lines):
        if depth == 0:
            out.append(text)
            continue
        guides = ""
        for d in range(1, depth):
            ancestor = max(j for j in range(i) if lines[j][0] == d)
            guides += "│   " if _next_sibling(lines, ancestor) is not None else "    "
        out.append(guides + ("└── " if _next_sibling(lines, i) is None else "├── ") + text)
    return "\n".join(out)


def _next_sibling(lines: list[tuple[int, str]], i: int) -> int | None:
    depth = lines[i][0]
    for j in range(i + 1, len(lines)):
        if lines[j][0] < depth:
            return None
        if lines[j][0] == depth:
            return j
    return None


def _pod_state(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or [])
    return f"{status.get('phase', '?')}{', ready' if ready else ', not ready'}, restarts {restarts}"


def rollout_tree(
    md: Mapping[str, Any],
    route: Mapping[str, Any] | None,
    deployments: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
) -> str:
    """The `get` tree of a ModelDeployment from the objects as the apiserver returns them."""
    from stt_operator.builders.metadata import LABEL_REVISION

    meta, spec, status = md["metadata"], md.get("spec") or {}, md.get("status") or {}
    strategy = (spec.get("strategy") or {}).get("type", "?")
    head = (
        f"ModelDeployment {meta['namespace']}/{meta['name']}  {status.get('phase', '-')}  strategy {strategy}"
    )
    if status.get("currentStepIndex") is not None:
        head += f"  step {status['currentStepIndex']}"
    if status.get("currentWeight") is not None:
        head += f"  canary weight {status['currentWeight']}%"
    lines: list[tuple[int, str]] = [(0, head)]
    declared, served = status.get("declaredModel"), status.get("stableModel")
    if declared and served and declared != served:  # Git asks for one model, another serves
        lines.append((1, f"declared model {declared}, serving {served}"))
    if status.get("heldBy"):
        lines.append((1, f"held by ABTest {status['heldBy']}"))
    weights: dict[str, int] = {}
    if route is not None:
        for rule in (route.get("spec") or {}).get("rules") or []:
            for ref in rule.get("backendRefs") or []:
                weights[ref["name"]] = int(ref.get("weight", 1))
        lines.append((1, "HTTPRoute " + route["metadata"]["name"]))
        for backend, weight in weights.items():
            lines.append((2, f"{backend}  weight {weight}"))
    roles = {status.get("stableRevision"): "stable", status.get("canaryRevision"): "canary"}
    by_revision: dict[str, list[Mapping[str, Any]]] = {}
    for d in deployments:
        rid = (d["metadata"].get("labels") or {}).get(LABEL_REVISION, "")
        by_revision.setdefault(rid, []).append(d)
    records = {r.get("revisionId"): r for r in status.get("revisions") or []}
    for rid in sorted(set(by_revision) | {k for k in records if k}, key=lambda r: str(r)):
        rec = records.get(rid) or {}
        role = roles.get(rid)
        text = f"revision {rec.get('revision', '?')} ({rid})  model {rec.get('model', '?')}"
        text += f"  [{role}]" if role else ""
        text += f"  {rec['outcome']}" if rec.get("outcome") else ""
        lines.append((1, text))
        for d in by_revision.get(rid, []):
            ds = d.get("status") or {}
            name = d["metadata"]["name"]
            replicas = (d.get("spec") or {}).get("replicas", 0)
            ready = f"{ds.get('readyReplicas', 0)}/{replicas} ready"
            lines.append((2, f"Deployment {name}  {ready}  weight {weights.get(name, 0)}"))
            selector = (d.get("spec") or {}).get("selector", {}).get("matchLabels") or {}
            for pod in pods:
                labels = pod["metadata"].get("labels") or {}
                if selector and all(labels.get(k) == v for k, v in selector.items()):
                    lines.append((3, f"Pod {pod['metadata']['name']}  {_pod_state(pod)}"))
    runs = status.get("analysisRuns") or []
    if runs:
        lines.append((1, f"analysis runs ({len(runs)})"))
        for run in runs[-10:]:
            value = run.get("value")
            shown = f"  value {_cell(value)}" if value is not None else ""
            lines.append((2, f"step {run.get('step', '-')} {run.get('metric')}: {run.get('outcome')}{shown}"))
    return _tree(lines)


def abtest_tree(ab: Mapping[str, Any]) -> str:
    meta, status = ab["metadata"], ab.get("status") or {}
    endpoint = ((ab.get("spec") or {}).get("endpoint") or {}).get("modelDeploymentRef", {}).get("name")
    lines: list[tuple[int, str]] = [
        (0, f"ABTest {meta['namespace']}/{meta['name']}  {status.get('phase', '-')}  endpoint {endpoint}")
    ]
    for v in status.get("variants") or []:
        lines.append(
            (
                1,
                f"variant {v.get('name')}  model {v.get('model')}  weight {v.get('weight')}%"
                f"  samples {_cell(v.get('samples'))}  WER {_cell(v.get('wer'))}",
            )
        )
    d = status.get("decision")
    if d:
        ci = d.get("confidenceInterval") or {}
        interval = f"  interval [{_cell(ci.get('lower'))}, {_cell(ci.get('upper'))}]" if ci else ""
        lines.append(
            (
                1,
                f"decision {d.get('outcome')} on {d.get('metric')}:"
                f" effect {_cell(d.get('effect'))}{interval}",
            )
        )
    sr = status.get("sampleRatio")
    if sr:
        lines.append(
            (1, f"sample ratio p {_cell(sr.get('pValue'))}{'  MISMATCH' if sr.get('detected') else ''}")
        )
    for g in status.get("guardrails") or []:
        lines.append((1, f"guardrail {g.get('metric')}: {g.get('outcome')}  p {_cell(g.get('pValue'))}"))
    return _tree(lines)


def results_table(ab: Mapping[str, Any]) -> str:
    status = ab.get("status") or {}
    d = status.get("decision") or {}
    ci = d.get("confidenceInterval") or {}
    rows = [
        [v.get(k) for k in ("name", "model", "weight", "samples", "wer", "cer", "latencyP95Ms", "errorRate")]
        for v in status.get("variants") or []
    ]
    text = format_table(["VARIANT", "MODEL", "WEIGHT", "SAMPLES", "WER", "CER", "P95 MS", "ERRORS"], rows)
    verdict = f"\nphase {status.get('phase', '-')}  winner {status.get('winner') or '-'}"
    if d:
        verdict += f"\ndecision {d.get('outcome')} on {d.get('metric')}: effect {_cell(d.get('effect'))}"
        if ci:
            verdict += f", {round((ci.get('level') or 0.95) * 100)}% interval"
            verdict += f" [{_cell(ci.get('lower'))}, {_cell(ci.get('upper'))}]"
        verdict += f", p {_cell(d.get('pValue'))}"
        if d.get("reason"):
            verdict += f"\nreason: {d['reason']}"
    sr = status.get("sampleRatio") or {}
    if sr:
        verdict += f"\nsample ratio p {_cell(sr.get('pValue'))}" + (
            "  (MISMATCH: decision held)" if sr.get("detected") else ""
        )
    return text + verdict


# --- the CLI ----------------------------------------------------------------------------------


class Cluster:
    """The few reads and writes the verbs need, through the kubeconfig kubectl uses."""

    def __init__(self, kubeconfig: str | None, namespace: str | None, all_namespaces: bool = False) -> None:
        from kubernetes import client, config

        config.load_kube_config(config_file=kubeconfig)
        self.custom = client.CustomObjectsApi()
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self.all_namespaces = all_namespaces
        self.namespace = namespace or config.list_kube_config_contexts(config_file=kubeconfig)[1][
            "context"
        ].get("namespace", "default")

    def list(self, plural: str) -> list[dict[str, Any]]:
        if self.all_namespaces:
            return self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, plural)["items"]
        return self.custom.list_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, plural)[
            "items"
        ]

    def get(self, plural: str, kind: str, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{kind} {name} not found in namespace {self.namespace}") from exc
            raise

    def patch(self, plural: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(
            API_GROUP, API_VERSION, self.namespace, plural, name, body
        )

    def route(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def workloads(self, md_name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        from stt_operator.builders.metadata import LABEL_DEPLOYMENT

        sel = f"{LABEL_DEPLOYMENT}={md_name}"
        deps = self.apps.list_namespaced_deployment(self.namespace, label_selector=sel).items
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=sel).items
        to_dict = self.core.api_client.sanitize_for_serialization
        return [to_dict(d) for d in deps], [to_dict(p) for p in pods]


def _annotate(cluster: Cluster, plural: str, name: str, key: str, value: str = "true") -> None:
    cluster.patch(plural, name, {"metadata": {"annotations": {key: value}}})


def cmd_get(args: argparse.Namespace, cluster: Cluster) -> int:
    plural, kind, name = parse_ref(args.name)
    obj = cluster.get(plural, kind, name)
    if kind == "ABTest":
        print(abtest_tree(obj))
    elif kind == "ModelDeployment":
        deployments, pods = cluster.workloads(name)
        print(rollout_tree(obj, cluster.route(name), deployments, pods))
    else:
        raise UsageError("get takes a ModelDeployment (NAME) or an ABTest (abt/NAME)")
    return 0


def _require(kind: str, allowed: Sequence[str], verb: str) -> None:
    if kind not in allowed:
        raise UsageError(f"{verb} applies to {' or '.join(allowed)}, not {kind}")


def cmd_promote(args: argparse.Namespace, cluster: Cluster) -> int:
    plural, kind, name = parse_ref(args.name)
    _require(kind, ["ModelDeployment"], "promote")
    obj = cluster.get(plural, kind, name)
    if (obj.get("status") or {}).get("heldBy"):
        raise UsageError(f"{name} is held by ABTest {obj['status']['heldBy']}: it decides promotion")
    _annotate(cluster, plural, name, ANNOTATION_PROMOTE)
    print(f"modeldeployment/{name} promote requested")
    return 0


def cmd_abort(args: argparse.Namespace, cluster: Cluster) -> int:
    plural, kind, name = parse_ref(args.name)
    _require(kind, ["ModelDeployment", "ABTest"], "abort")
    cluster.get(plural, kind, name)
    if kind == "ABTest":
        cluster.patch(plural, name, {"spec": {"stop": True}})
        print(f"abtest/{name} stop requested")
    else:
        _annotate(cluster, plural, name, ANNOTATION_ABORT)
        print(f"modeldeployment/{name} abort requested")
    return 0


def cmd_pause(args: argparse.Namespace, cluster: Cluster, paused: bool = True) -> int:
    plural, kind, name = parse_ref(args.name)
    _require(kind, ["ModelDeployment"], "pause" if paused else "resume")
    cluster.get(plural, kind, name)
    cluster.patch(plural, name, {"spec": {"paused": paused}})
    print(f"modeldeployment/{name} {'paused' if paused else 'resumed'}")
    return 0


def cmd_retry(args: argparse.Namespace, cluster: Cluster) -> int:
    plural, kind, name = parse_ref(args.name)
    _require(kind, ["ModelDeployment"], "retry")
    obj = cluster.get(plural, kind, name)
    if not (obj.get("status") or {}).get("lastRollback"):
        raise UsageError(f"{name} has no rolled-back revision to retry")
    _annotate(cluster, plural, name, ANNOTATION_RETRY, str(int(time.time())))
    print(f"modeldeployment/{name} retry requested")
    return 0


def cmd_undo(args: argparse.Namespace, cluster: Cluster) -> int:
    plural, kind, name = parse_ref(args.name)
    _require(kind, ["ModelDeployment"], "undo")
    obj = cluster.get(plural, kind, name)
    revisions = [r.get("revision") for r in (obj.get("status") or {}).get("revisions") or []]
    target = args.to_revision
    if target is None:
        raise UsageError("undo needs --to-revision N (see `kubectl stt get NAME` for the history)")
    if target not in revisions:
        known = ", ".join(str(r) for r in revisions) or "none"
        raise UsageError(f"{name} has no revision {target} in its history (recorded: {known})")
    _annotate(cluster, plural, name, ANNOTATION_UNDO, str(target))
    print(f"modeldeployment/{name} undo to revision {target} requested")
    return 0


def promotion_patch(ab: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(endpoint, winning model, manifest patch) of an ABTest with a winner, for a Git change."""
    spec, status = ab.get("spec") or {}, ab.get("status") or {}
    recorded = status.get("promotion") or {}
    winner = status.get("winner")
    model = recorded.get("model") or next(
        ((v.get("model") or {}).get("name") for v in spec.get("variants") or [] if v.get("name") == winner),
        None,
    )
    if not model:
        phase = status.get("phase", "-")
        raise UsageError(f"ABTest {ab['metadata']['name']} has no winner to promote (phase {phase})")
    endpoint = recorded.get("endpoint") or ((spec.get("endpoint") or {}).get("modelDeploymentRef") or {}).get(
        "name", ""
    )
    manifest = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": endpoint, "namespace": ab["metadata"]["namespace"]},
        "spec": {"model": {"name": model}},
    }
    return endpoint, model, manifest


def cmd_promotion(args: argparse.Namespace, cluster: Cluster) -> int:
    import yaml

    plural, kind, name = parse_ref(args.name, default_kind="abt")
    _require(kind, ["ABTest"], "promotion")
    obj = cluster.get(plural, kind, name)
    endpoint, model, manifest = promotion_patch(obj)
    if args.output == "json":
        print(json.dumps({"spec": manifest["spec"]}, separators=(",", ":")))
        return 0
    status = obj.get("status") or {}
    mode = (status.get("promotion") or {}).get("mode", "not promoted")
    decision = status.get("decision") or {}
    print(f"# ABTest {name}: winner {status.get('winner')} (model {model}), promotion {mode}")
    if decision:
        effect, p = _cell(decision.get("effect")), _cell(decision.get("pValue"))
        print(f"# {decision.get('outcome')} on {decision.get('metric')}: effect {effect}, p {p},")
        print(f"# decided {decision.get('decidedAt', '-')}")
    print(f"# In Git, set spec.model.name of ModelDeployment {endpoint} to {model} (or apply this patch):")
    print(yaml.safe_dump(manifest, sort_keys=False).rstrip())
    return 0


def cmd_results(args: argparse.Namespace, cluster: Cluster) -> int:
    plural, kind, name = parse_ref(args.name, default_kind="abt")
    _require(kind, ["ABTest"], "results")
    obj = cluster.get(plural, kind, name)
    if args.output == "json":
        print(json.dumps(obj.get("status") or {}, indent=2, sort_keys=True))
    else:
        print(results_table(obj))
    return 0


def cmd_report(args: argparse.Namespace, cluster: Cluster) -> int:
    from stt_operator.api.common import iso, parse_duration
    from stt_operator.report import collect, html

    plural, kind, name = parse_ref(args.name)
    _require(kind, ["ModelDeployment", "ABTest"], "report")
    url = args.prometheus or os.environ.get("STT_PROMETHEUS_URL")
    if not url:
        raise UsageError("report reads Prometheus: pass --prometheus URL or set STT_PROMETHEUS_URL")
    obj = cluster.get(plural, kind, name)
    start, end = collect.lifetime(obj)
    now = time.time()
    if args.since:
        try:
            start = iso(dt.datetime.fromtimestamp(now - parse_duration(args.since), dt.UTC))
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from exc
        end = None
    t0, t1, step = collect.window(start, end, now)
    source = collect.PrometheusRange(url)
    namespace = None if args.no_namespace_label else cluster.namespace
    if kind == "ABTest":
        spec = obj.get("spec") or {}
        endpoint = (spec.get("endpoint") or {}).get("modelDeploymentRef", {}).get("name", "")
        variants = spec.get("variants") or [{}]
        control = spec.get("controlVariant") or variants[0].get("name")
        selector = collect.Selector(endpoint, namespace)
        data = collect.collect_series(source, selector, t0, t1, step, control)
    else:
        selector = collect.Selector(name, namespace)
        data = collect.collect_series(source, selector, t0, t1, step, "stable")
        data.route_weights = collect.route_weight_series(source, data, cluster.namespace, name)
    collect.add_live_traffic(source, data, obj, selector)
    text = (html.abtest_report if kind == "ABTest" else html.rollout_report)(obj, data, alpha=args.alpha)
    out = Path(args.output_file or f"{kind.lower()}-{name}-report.html")
    out.write_text(text)
    print(str(out.resolve()))
    return 0


def cmd_metrics(args: argparse.Namespace, cluster: Cluster) -> int:
    models = cluster.list("sttmodels")
    if args.name:
        models = [m for m in models if m["metadata"]["name"] == args.name]
        if not models:
            raise NotFound(f"STTModel {args.name} not found in namespace {cluster.namespace}")
    header = [h for h, _ in ANALYTICS_COLUMNS]
    print(format_table(header, analytics_rows(models, cluster.all_namespaces)))
    return 0


def cmd_compare(args: argparse.Namespace, cluster: Cluster) -> int:
    rows = compare_rows(cluster.list("sttmodels"), args.optimize, args.language_pair)
    print(format_table(["PAIR", "MODEL", "WER", "CER", "P95 MS", "RANK", "BEST", "NOTE"], rows))
    return 0


def cmd_status(args: argparse.Namespace, cluster: Cluster) -> int:
    objects = [o for plural in ("sttmodels", "modeldeployments", "abtests") for o in cluster.list(plural)]
    rows = status_rows(objects, cluster.all_namespaces)
    print(format_table(["KIND", "NAME", "PHASE", "REASON", "MESSAGE"], rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl stt", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
    common.add_argument("--kubeconfig")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verbs: dict[str, tuple[str, Callable[..., int]]] = {
        "get": ("a ModelDeployment or ABTest as a tree", cmd_get),
        "promote": ("skip the current step or promote a preview", cmd_promote),
        "abort": ("roll the rollout back now; abt/NAME stops an A/B test", cmd_abort),
        "pause": ("hold the rollout where it is", cmd_pause),
        "resume": ("continue a paused rollout", lambda a, c: cmd_pause(a, c, paused=False)),
        "retry": ("let a rolled-back revision roll out again", cmd_retry),
        "undo": ("go back to a recorded revision", cmd_undo),
        "results": ("an ABTest's verdict", cmd_results),
        "promotion": ("the Git change that promotes an ABTest's winner", cmd_promotion),
        "report": ("write an HTML report with plots", cmd_report),
    }
    for verb, (help_text, func) in verbs.items():
        p = sub.add_parser(verb, help=help_text, parents=[common])
        p.add_argument("name", help="NAME (a ModelDeployment), mdep/NAME or abt/NAME")
        p.set_defaults(func=func)
        if verb == "undo":
            p.add_argument("--to-revision", type=int, help="revision number from `kubectl stt get`")
        if verb == "results":
            p.add_argument("-o", "--output", choices=("table", "json"), default="table")
        if verb == "promotion":
            p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
        if verb == "report":
            p.add_argument("--prometheus", help="Prometheus base URL (default: $STT_PROMETHEUS_URL)")
            p.add_argument("-o", "--output-file", help="HTML file to write (default: KIND-NAME-report.html)")
            p.add_argument("--alpha", type=float, default=0.05, help="interval level 1 - alpha")
            p.add_argument(
                "--since", help="start the window this long ago (e.g. 30m, 2h) instead of the start"
            )
            p.add_argument(
                "--no-namespace-label",
                action="store_true",
                help="the evaluator series carry no namespace label (scraped outside the cluster)",
            )
    for verb, help_text, func in (
        ("metrics", "per-model, per-language analytics", cmd_metrics),
        ("status", "phases and reasons at a glance", cmd_status),
        ("compare", "models ranked per language pair, best marked", cmd_compare),
    ):
        p = sub.add_parser(verb, help=help_text, parents=[common])
        if verb == "metrics":
            p.add_argument("name", nargs="?", help="an STTModel")
        if verb == "compare":
            p.add_argument("--language-pair", help="only this pair (e.g. en>es)")
            p.add_argument("--optimize", default="wer", choices=sorted(METRICS))
        p.add_argument("-A", "--all-namespaces", action="store_true")
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "alpha", 0.05) and not 0 < getattr(args, "alpha", 0.05) < 1:
            raise UsageError("--alpha must be between 0 and 1")
        cluster = Cluster(args.kubeconfig, args.namespace, getattr(args, "all_namespaces", False))
        return int(args.func(args, cluster))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
