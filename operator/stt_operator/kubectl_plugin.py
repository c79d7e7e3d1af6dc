"""`kubectl stt` — a kubectl plugin (installed as the `kubectl-stt` console script).

    kubectl stt metrics [MODEL] [-n NAMESPACE | -A]   per-model, per-language analytics
    kubectl stt status  [-n NAMESPACE | -A]           models, endpoints and A/B tests at a glance

It reads what the operator wrote into the resources' status (analytics come from Prometheus
on the operator's timer), through the same kubeconfig kubectl uses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stt_operator import API_GROUP, API_VERSION

ANALYTICS_COLUMNS = (
    ("MODEL", "model"),
    ("LANGUAGE", "language"),
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


def status_rows(objects: Iterable[Mapping[str, Any]], all_namespaces: bool) -> list[list[Any]]:
    rows = []
    for obj in objects:
        meta, status = obj["metadata"], obj.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        name = f"{meta['namespace']}/{meta['name']}" if all_namespaces else meta["name"]
        rows.append([obj["kind"], name, status.get("phase"), ready.get("reason"), ready.get("message")])
    return rows


def _list(api: Any, plural: str, namespace: str | None) -> list[dict[str, Any]]:
    if namespace is None:
        return api.list_cluster_custom_object(API_GROUP, API_VERSION, plural)["items"]
    return api.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, plural)["items"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubectl stt", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("metrics", "status"))
    parser.add_argument("name", nargs="?", help="an STTModel (metrics only)")
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
    parser.add_argument("-A", "--all-namespaces", action="store_true")
    parser.add_argument("--kubeconfig")
    args = parser.parse_args(argv)

    from kubernetes import client, config

    config.load_kube_config(config_file=args.kubeconfig)
    namespace = None
    if not args.all_namespaces:
        namespace = args.namespace or config.list_kube_config_contexts(config_file=args.kubeconfig)[1][
            "context"
        ].get("namespace", "default")
    api = client.CustomObjectsApi()
    if args.command == "metrics":
        models = _list(api, "sttmodels", namespace)
        if args.name:
            models = [m for m in models if m["metadata"]["name"] == args.name]
            if not models:
                print(f"STTModel {args.name} not found in namespace {namespace}", file=sys.stderr)
                return 1
        header = [h for h, _ in ANALYTICS_COLUMNS]
        print(format_table(header, analytics_rows(models, args.all_namespaces)))
        return 0
    objects = [
        o for plural in ("sttmodels", "modeldeployments", "abtests") for o in _list(api, plural, namespace)
    ]
    print(
        format_table(
            ["KIND", "NAME", "PHASE", "REASON", "MESSAGE"], status_rows(objects, args.all_namespaces)
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
