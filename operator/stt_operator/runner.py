"""`stt-operator run`: start the Kopf operator with the project's settings."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import random

from stt_operator.heap import cap_malloc_arenas
from stt_operator.observability import GC_OBJECTS_FROZEN, configure_logging, serve_metrics, track_gc
from stt_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

# A young collection after this many new container objects, not CPython's 700. The operator
# allocates in bursts (a decoded watch event, a reconcile's manifests); at 700, objects alive for
# the few milliseconds of one reconcile are collected twice over and promoted, and every
# promotion brings the next full collection (a scan of everything the caches hold) closer.
GC_YOUNG_THRESHOLD = 50_000
GC_OLDER_THRESHOLDS = (20, 10)
# Reconcile threads wait on the apiserver, so they seldom allocate at the same moment: two malloc
# heaps serve them, rather than one per thread holding each one's peak (stt_operator/heap.py).
MALLOC_ARENAS = 2


def settle_heap() -> None:
    """Once imports and configuration are done: what exists now (modules, Kopf's registry, the
    API models and their schemas) lives as long as the process, so the collector stops scanning
    it (`gc.freeze`), and young collections run less often (`GC_YOUNG_THRESHOLD`). Before any
    thread starts, the allocator's heaps are capped (`MALLOC_ARENAS`)."""
    cap_malloc_arenas(MALLOC_ARENAS)
    gc.collect()
    gc.freeze()
    GC_OBJECTS_FROZEN.set(gc.get_freeze_count())
    gc.set_threshold(GC_YOUNG_THRESHOLD, *GC_OLDER_THRESHOLDS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace", action="append", dest="namespaces", help="watch only this namespace (repeatable)"
    )
    parser.add_argument("--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--kubeconfig", help="kubeconfig to use outside a cluster (default: KUBECONFIG)")
    parser.add_argument("--config", help="settings YAML file (Helm renders it)")
    parser.add_argument("--liveness-port", type=int, help="port of the /healthz liveness endpoint (0 = off)")
    parser.add_argument("--metrics-port", type=int, help="port of the operator's /metrics (0 = off)")
    parser.add_argument("--peering", help="Kopf peering name for HA; standalone when omitted")
    parser.add_argument(
        "--priority",
        type=int,
        help="peering priority; the highest live replica works, the others stand by (default: random)",
    )
    parser.add_argument("--prometheus-url", help="Prometheus used for analysis")
    parser.add_argument("--triton-image", help="default Triton image of serving pods")
    parser.add_argument("--operator-image", help="this operator's own image (informational)")
    parser.add_argument("--jobs-image", help="image of validation/quantization Jobs and evaluators")
    parser.add_argument(
        "--fetch-image", help="image of Triton's fetch-model init container (default: --jobs-image)"
    )
    parser.add_argument("--reconcile-interval", type=float, dest="reconcile_interval_s")
    parser.add_argument("--analytics-interval", type=float, dest="analytics_interval_s")
    parser.add_argument("--log-format", choices=["text", "json"])
    parser.add_argument("--workers", type=int, help="reconciles running at the same time (default 32)")
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        dest="peering_lifetime_s",
        help="HA: seconds after which a replica that stopped renewing its peering is presumed dead",
    )
    parser.add_argument(
        "--watch-timeout",
        type=int,
        dest="watch_timeout_s",
        help="renew each watch stream after this many seconds (default 60)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        dest="shutdown_timeout_s",
        help="after SIGTERM, exit within this many seconds whatever the apiserver does (default 20)",
    )


def main(args: argparse.Namespace) -> int:
    settings = OperatorSettings.load(
        args.config,
        namespaces=None if args.all_namespaces else args.namespaces,
        peering=args.peering,
        liveness_port=args.liveness_port,
        metrics_port=args.metrics_port,
        prometheus_url=args.prometheus_url,
        triton_image=args.triton_image,
        operator_image=args.operator_image,
        jobs_image=args.jobs_image,
        fetch_image=args.fetch_image,
        reconcile_interval_s=args.reconcile_interval_s,
        analytics_interval_s=args.analytics_interval_s,
        log_format=args.log_format,
        workers=args.workers,
        shutdown_timeout_s=args.shutdown_timeout_s,
        peering_lifetime_s=args.peering_lifetime_s,
        watch_timeout_s=args.watch_timeout_s,
    )
    configure_logging(settings.log_format, burst=settings.log_burst, period=settings.log_period_s)
    if settings.log_watch_streams:  # Kopf logs stream starts/stops at DEBUG
        logging.getLogger("kopf._cogs.clients.watching").setLevel(logging.DEBUG)
    if args.kubeconfig:
        # Before kopf or the kubernetes client are imported: the client reads KUBECONFIG into
        # its default path at import time, and Kopf's login uses that default.
        os.environ["KUBECONFIG"] = args.kubeconfig
    import kopf

    # Importing the controllers registers their handlers with Kopf's default registry.
    from stt_operator.controllers import context
    from stt_operator.controllers.kopf_tuning import discover_namespaces_in_listings

    context.configure(settings, kubeconfig=args.kubeconfig)
    discover_namespaces_in_listings()
    track_gc()
    settle_heap()
    if settings.metrics_port:
        serve_metrics(settings.metrics_port)
    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    if not settings.prometheus_url:
        # One line, once: no per-object retries against a guessed address.
        log.warning(
            "no default Prometheus configured (--prometheus-url / config.prometheusUrl): analytics are"
            " off, and analysis works only for objects naming one of %d prometheusSources",
            len(settings.prometheus_sources),
        )
    log.info(
        "starting stt-operator: namespaces=%s peering=%s",
        settings.namespaces or "all",
        settings.peering or "standalone",
    )
    # Kopf pauses every replica whose priority equals another's, so HA replicas must differ.
    priority = args.priority if args.priority is not None else random.randint(1, 2**31 - 1)
    code = 0
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=not settings.namespaces,
                namespaces=settings.namespaces,
                standalone=settings.peering is None,
                peering_name=settings.peering,
                priority=priority,
                liveness_endpoint=liveness,
            )
        )
    except BaseException:
        log.exception("the operator stopped with an error")
        code = 1
    log.info("stt-operator stopped")
    # Exit now: a reconcile thread still blocked on an unreachable apiserver would otherwise
    # hold the interpreter's exit (it joins worker threads) past the pod's grace period.
    logging.shutdown()
    os._exit(code)
