"""`stt-operator evaluate`: replay a labelled evaluation set against Triton models.

Settings come from `--config FILE` (YAML/JSON, camelCase keys: what the operator mounts from a
ConfigMap) and flags; a flag wins over the file. Example:

    stt-operator evaluate --evalset ./evalset \\
        --target stable=sphinx-baseline@127.0.0.1:8001 \\
        --target canary=sphinx-degraded@127.0.0.1:8001 --rate 20 --concurrency 4 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stt_operator.evaluator.model_io import Target
from stt_operator.evaluator.replay import ReplayConfig

_TARGET_RE = re.compile(
    r"^(?P<variant>[^=@/\s]+)=(?P<model>[^=@/\s]+)@(?P<url>[^@/\s]+:\d+)(?:/(?P<stt>[^\s/]+))?$"
)


def parse_target(text: str) -> Target:
    """`VARIANT=TRITON_MODEL@HOST:PORT[/STTMODEL]`."""
    m = _TARGET_RE.match(text.strip())
    if not m:
        raise ValueError(f"--target {text!r}: expected VARIANT=TRITON_MODEL@HOST:PORT[/STTMODEL]")
    return Target(m["variant"], m["model"], m["url"], m["stt"] or "")


def target_from_mapping(d: Mapping[str, Any], where: str) -> Target:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a mapping with variant, tritonModel, url")
    missing = [k for k in ("variant", "tritonModel", "url") if not d.get(k)]
    if missing:
        raise ValueError(f"{where}: missing {missing}")
    from stt_operator.evaluator.targets import model_io_from_config

    io = model_io_from_config(d.get("io"), where)
    return Target(str(d["variant"]), str(d["tritonModel"]), str(d["url"]), str(d.get("model") or ""), io)


# file key -> (argparse dest, type)
_FILE_KEYS: dict[str, tuple[str, type]] = {
    "evalset": ("evalset", str),
    "endpoint": ("endpoint", str),
    "baseline": ("baseline", str),
    "rate": ("rate", float),
    "concurrency": ("concurrency", int),
    "batchSize": ("batch_size", int),
    "timeoutSeconds": ("timeout", float),
    "maxRetries": ("max_retries", int),
    "rounds": ("rounds", int),
    "roundIntervalSeconds": ("round_interval", float),
    "metricsPort": ("metrics_port", int),
    "metricsAddress": ("metrics_address", str),
    "normaliserVersion": ("normaliser_version", str),
    "maxUtterances": ("max_utterances", int),
    "lingerSeconds": ("linger", float),
}
DEFAULTS: dict[str, Any] = {
    "endpoint": "local",
    "rate": 0.0,
    "concurrency": 4,
    "batch_size": 1,
    "timeout": 30.0,
    "max_retries": 5,
    "rounds": 1,
    "round_interval": 60.0,
    "metrics_port": 9102,
    "metrics_address": "0.0.0.0",
    "linger": 0.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML/JSON settings file (camelCase keys, e.g. a mounted ConfigMap)")
    parser.add_argument("--evalset", help="evaluation set: directory, manifest.json(l), or URI")
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="VARIANT=MODEL@HOST:PORT[/STTMODEL]",
        help="a variant to evaluate (repeat; the first is the baseline unless --baseline)",
    )
    parser.add_argument("--endpoint", help="metric label `endpoint` (the ModelDeployment)")
    parser.add_argument("--baseline", help="variant the others are paired against")
    parser.add_argument(
        "--rate", type=float, help="utterances per second, each sent to every variant (0 = no limit)"
    )
    parser.add_argument("--concurrency", type=int, help="requests in flight, all variants together")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="utterances per request for models that take a padded batch with an audio-length "
        "input (default 1; latency then describes batched requests)",
    )
    parser.add_argument("--timeout", type=float, help="seconds per request")
    parser.add_argument("--max-retries", type=int, help="retries of a failed request (with backoff)")
    parser.add_argument("--rounds", type=int, help="passes over the set (0 = forever)")
    parser.add_argument("--round-interval", type=float, help="seconds between rounds")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics and /healthz (-1 = none)")
    parser.add_argument("--metrics-address", help="bind address of /metrics")
    parser.add_argument("--normaliser-version", help="text normaliser version (default: the set's own)")
    parser.add_argument("--max-utterances", type=int, help="use only the first N utterances")
    parser.add_argument(
        "--linger", type=float, help="keep serving /metrics this many seconds after the last round"
    )
    parser.add_argument("--summary", help="write the local summary (JSON) to this file")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--text-logs", action="store_true", help="plain text logs instead of JSON")


def load_file(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"--config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping at the top level")
    unknown = sorted(set(data) - set(_FILE_KEYS) - {"targets"})
    if unknown:
        raise ValueError(
            f"--config {path}: unknown keys {unknown}; known: {sorted([*_FILE_KEYS, 'targets'])}"
        )
    return data


def build_config(args: argparse.Namespace) -> Any:
    """Merge defaults < file < flags into an EvaluatorConfig (pure apart from reading --config)."""
    from stt_operator.evaluator.service import EvaluatorConfig

    values = dict(DEFAULTS)
    targets: list[Target] = []
    if args.config:
        data = load_file(args.config)
        for key, (dest, typ) in _FILE_KEYS.items():
            if key in data and data[key] is not None:
                try:
                    values[dest] = typ(data[key])
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"--config {args.config}: {key}: {exc}") from exc
        for i, t in enumerate(data.get("targets") or []):
            targets.append(target_from_mapping(t, f"--config {args.config}: targets[{i}]"))
    for dest, _ in _FILE_KEYS.values():
        flag = getattr(args, dest, None)
        if flag is not None:
            values[dest] = flag
    if args.target:
        targets = [parse_target(t) for t in args.target]
    if not targets:
        raise ValueError("targets: give at least one --target (or `targets` in --config)")
    if not values.get("evalset"):
        raise ValueError("evalset: give --evalset (or `evalset` in --config)")
    replay = ReplayConfig(
        rate=values["rate"],
        concurrency=values["concurrency"],
        batch_size=values["batch_size"],
        timeout_s=values["timeout"],
        max_retries=values["max_retries"],
    )
    port = values["metrics_port"]
    return EvaluatorConfig(
        evalset=values["evalset"],
        targets=targets,
        endpoint=values["endpoint"],
        baseline=values.get("baseline"),
        replay=replay,
        rounds=values["rounds"],
        round_interval_s=values["round_interval"],
        metrics_address=values["metrics_address"],
        metrics_port=None if port is None or port < 0 else port,
        summary_path=args.summary,
        linger_s=values["linger"],
        normaliser_version=values.get("normaliser_version"),
        max_utterances=values.get("max_utterances"),
    )


def main(args: argparse.Namespace) -> int:
    from stt_operator.evaluator import logs
    from stt_operator.evaluator.allocator import keep_large_buffers
    from stt_operator.evaluator.service import run_evaluator

    logs.configure(args.log_level, json_logs=not args.text_logs)
    keep_large_buffers()
    try:
        config = build_config(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"stt-operator evaluate: {exc}", file=sys.stderr)
        return 2

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        result = await run_evaluator(config, stop=stop)
        print(json.dumps(result.as_dict(), indent=2))
        return 0

    try:
        return asyncio.run(run())
    except (ValueError, FileNotFoundError) as exc:
        print(f"stt-operator evaluate: {exc}", file=sys.stderr)
        return 2
