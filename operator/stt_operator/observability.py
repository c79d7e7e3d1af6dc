"""The operator's own Prometheus metrics and log set-up."""

from __future__ import annotations

import gc
import json
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import islice
from socketserver import ThreadingMixIn
from typing import Any, cast
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

# No `_created` series beside each counter and histogram: Prometheus stores them as series of
# their own (20,000 more at 10,000 endpoints for the per-endpoint counters alone) and neither
# the chart's alerts nor its dashboard read them; Go controllers (Argo Rollouts, the
# controller manager) expose none in the text format either.
disable_created_metrics()

RECONCILES = Counter("stt_operator_reconciles_total", "Reconciles by kind and result", ["kind", "result"])
RECONCILE_SECONDS = Histogram(
    "stt_operator_reconcile_duration_seconds",
    "Time spent in one reconcile",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class _EndpointState:
    """What is exported of one endpoint (`EndpointSeries`)."""

    __slots__ = ("in_flight", "promotions", "rollbacks", "routes")

    def __init__(self) -> None:
        self.in_flight: int | None = None  # None: no rollout recorded (a route only)
        self.promotions = 0
        self.rollbacks = 0
        self.routes: tuple[tuple[str, int], ...] = ()  # (backend, weight), as last written


class EndpointSeries(Collector):
    """The per-endpoint series (rollout in flight, promotions and rollbacks, route weights),
    from plain numbers per endpoint, built into metric families only when scraped.

    Not a prometheus_client labelled child per series: each of those holds a lock, a value
    object and a dict of its own, about 2.7 KiB per endpoint in all, the largest part of the
    operator's memory at 10,000 endpoints after the objects themselves (bench/scale/RESULTS.md).
    An endpoint's series go when its loop ends (`forget`), so a deleted endpoint leaves none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._endpoints: dict[tuple[str, str], _EndpointState] = {}

    def _state(self, namespace: str, name: str) -> _EndpointState:
        state = self._endpoints.get((namespace, name))
        if state is None:
            state = self._endpoints[(namespace, name)] = _EndpointState()
        return state

    def record_rollout(
        self, namespace: str, name: str, in_flight: bool, promoted: bool, rolled_back: bool
    ) -> None:
        with self._lock:
            state = self._state(namespace, name)
            state.in_flight = 1 if in_flight else 0
            state.promotions += 1 if promoted else 0
            state.rollbacks += 1 if rolled_back else 0

    def record_route(self, namespace: str, endpoint: str, weights: Mapping[str, int]) -> None:
        with self._lock:
            self._state(namespace, endpoint).routes = tuple(sorted(weights.items()))

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._endpoints.pop((namespace, name), None)

    def rollbacks(self, namespace: str, name: str) -> int:
        with self._lock:
            state = self._endpoints.get((namespace, name))
            return state.rollbacks if state is not None else 0

    def collect(self) -> Iterator[Metric]:
        """One family at a time, each built only when the exposition asks for it, and each
        family's samples made one by one as they are read (`SlicedFamily`): a scrape holds a
        slice of the exposition's lines, not 10,000 to 20,000 sample objects with a label dict
        each (bench/scale/scrape_memory.py)."""
        with self._lock:  # a consistent copy; the samples are made outside the lock
            held = [
                (key, state.in_flight, state.promotions, state.rollbacks, state.routes)
                for key, state in self._endpoints.items()
            ]
        name = "stt_operator_rollouts_in_flight"
        yield SlicedFamily(
            name,
            "ModelDeployments currently progressing",
            "gauge",
            (
                Sample(name, {"namespace": namespace, "name": endpoint}, flight)
                for (namespace, endpoint), flight, _, _, _ in held
                if flight is not None
            ),
        )
        for name, documentation, rollbacks in (
            ("stt_operator_rollbacks", "Automatic and manual rollbacks", True),
            ("stt_operator_promotions", "Revisions promoted to stable", False),
        ):
            yield SlicedFamily(
                name,
                documentation,
                "counter",
                (
                    Sample(
                        f"{name}_total",
                        {"namespace": namespace, "name": endpoint},
                        rolled_back if rollbacks else promoted,
                    )
                    for (namespace, endpoint), flight, promoted, rolled_back, _ in held
                    if flight is not None
                ),
            )
        name = "stt_operator_route_weight"
        yield SlicedFamily(
            name,
            "Weight (percent) of each backend in the endpoint's route, as last written",
            "gauge",
            (
                Sample(name, {"namespace": namespace, "endpoint": endpoint, "backend": backend}, weight)
                for (namespace, endpoint), _, _, _, weights in held
                for backend, weight in weights
            ),
        )


class SlicedFamily(Metric):
    """A metric family whose samples are made as they are read, and which the exposition may
    write in slices (`exposition_chunks`).

    Only for families whose samples the encoders write in the order given: gauge values and
    counter totals, no `_created`, `_gsum` or `_gcount` sample (the text encoder moves those to
    the end of their family, so a slice would split them). The samples are a one-shot iterator;
    a collector builds the family anew at each scrape, so nothing reads them twice."""

    def __init__(self, name: str, documentation: str, typ: str, samples: Iterator[Sample]) -> None:
        super().__init__(name, documentation, typ)
        self.samples = cast(list[Sample], samples)  # the encoders and `name[]` read it once, in order

    def slices(self, size: int) -> Iterator[Metric]:
        """The family as consecutive families of at most `size` samples each, the first always
        (so an empty family still writes its HELP and TYPE, as the whole render does)."""
        samples = iter(self.samples)
        first = True
        while True:
            part = Metric(self.name, self.documentation, self.type, self.unit)
            part.samples = list(islice(samples, size))
            if not part.samples and not first:
                return
            yield part
            first = False
            if len(part.samples) < size:
                return


ENDPOINTS = EndpointSeries()
REGISTRY.register(ENDPOINTS)


def record_route(namespace: str, endpoint: str, weights: Mapping[str, int]) -> None:
    """Set the route-weight series of one endpoint; backends no longer named drop out."""
    ENDPOINTS.record_route(namespace, endpoint, weights)


def record_rollout(namespace: str, name: str, in_flight: bool, promoted: bool, rolled_back: bool) -> None:
    """The rollout-in-flight gauge and the promotion and rollback counters of one endpoint.
    Both counters exist at 0 from its first reconcile: `increase()` in the chart's alerts cannot
    see a series whose first sample is already 1 (the first rollback would be missed)."""
    ENDPOINTS.record_rollout(namespace, name, in_flight, promoted, rolled_back)


# One reconcile loop per live object this replica serves: more than the objects means a leak.
# A namespace's series goes when its last loop ends (namespaces come and go).
LOOPS = Gauge(
    "stt_operator_loops", "Objects with a reconcile loop running in this process", ["kind", "namespace"]
)
WAKEUPS = Counter(
    "stt_operator_wakeups_total", "Reconciles asked for by a watch event (not by a timer)", ["kind"]
)
API_CALLS = Counter(
    "stt_operator_api_calls_total", "Kubernetes API calls made by the reconcilers", ["verb", "kind"]
)
API_CALL_SECONDS = Histogram(
    "stt_operator_api_call_duration_seconds",
    "Wall time of one Kubernetes API call as the reconciler sees it (request, wait, response)",
    ["verb", "kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONFLICTS = Counter(
    "stt_operator_conflicts_total", "Optimistic writes refused with 409 Conflict, then retried", ["kind"]
)
LOG_LINES_SUPPRESSED = Counter(
    "stt_operator_log_lines_suppressed_total", "Log lines dropped by the rate limit", ["logger"]
)


WATCH_LAG_SECONDS = Histogram(
    "stt_operator_watch_lag_seconds",
    "From one of the operator's own writes being answered to the watch event carrying it (or a later"
    " version of the object) reaching the operator: how far behind the watches run",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


class WriteEchoes:
    """The operator's own writes waiting for their watch event, one per object: (namespace,
    name) -> (resourceVersion written, when). A write that changed nothing (the apiserver returns
    the version it had) sends no event and is not waited for."""

    def __init__(self, kind: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], tuple[int, float]] = {}

    def wrote(self, key: tuple[str, str], before: int | None, after: int | None) -> None:
        if after is None or (before is not None and after <= before):
            return
        with self._lock:
            self._pending[key] = (after, self.clock())

    def seen(self, key: tuple[str, str], version: int | None) -> None:
        with self._lock:
            pending = self._pending.get(key)
            if pending is None or version is None or version < pending[0]:
                return
            del self._pending[key]
        WATCH_LAG_SECONDS.labels(self.kind).observe(self.clock() - pending[1])

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._pending.pop(key, None)

    def __len__(self) -> int:
        return len(self._pending)


GC_SECONDS = Counter(
    "stt_operator_gc_seconds_total",
    "Time the interpreter's cyclic garbage collector held the process, by generation",
    ["generation"],
)
GC_OBJECTS_FROZEN = Gauge(
    "stt_operator_gc_objects_frozen", "Objects moved out of the collector's reach at start (gc.freeze)"
)


class GcTimer:
    """Times every cyclic collection (a `gc.callbacks` entry). A collection stops every thread
    for as long as it scans, and a full one scans every tracked object the process holds, so its
    cost grows with the number of objects the operator caches (bench/scale reads this counter)."""

    def __init__(self) -> None:
        self._started = 0.0

    def __call__(self, phase: str, info: Mapping[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            GC_SECONDS.labels(str(info.get("generation", "?"))).inc(time.perf_counter() - self._started)
            self._started = 0.0


def track_gc() -> None:
    """Install the collection timer (once per process)."""
    if not any(isinstance(callback, GcTimer) for callback in gc.callbacks):
        gc.callbacks.append(GcTimer())


@contextmanager
def api_call(verb: str, kind: str) -> Iterator[None]:
    """Count one Kubernetes API call and time it, failed or not (the apiserver's own duration
    metric leaves out what the client waits for: its GIL, its connection, the response)."""
    API_CALLS.labels(verb, kind).inc()
    started = time.perf_counter()
    try:
        yield
    finally:
        API_CALL_SECONDS.labels(verb, kind).observe(time.perf_counter() - started)


@contextmanager
def track_reconcile(kind: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except Exception:
        RECONCILES.labels(kind, "error").inc()
        raise
    else:
        RECONCILES.labels(kind, "ok").inc()
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("k8s_namespace", "k8s_name", "kind"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class ObjectStateLog:
    """Log an object's error state once per change (a new kind of error, or recovery), not once
    per retry: an outage of hours logs one line per object, not one per attempt."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._state: dict[Hashable, str] = {}
        self._lock = threading.Lock()

    def record(self, key: Hashable, error: str | None, exc_info: bool = False) -> bool:
        """`error` None = healthy. Returns whether a line was written."""
        shape = None if error is None else _shape(error)
        with self._lock:
            before = self._state.get(key)
            if shape == before:
                return False
            if shape is None:
                del self._state[key]
            else:
                self._state[key] = shape
        if error is None:
            self.logger.info("%s: reconciling again after errors", _key_text(key))
        else:
            self.logger.warning(
                "%s: reconcile failed, retrying with backoff: %s", _key_text(key), error, exc_info=exc_info
            )
        return True


def _key_text(key: Hashable) -> str:
    if isinstance(key, tuple) and len(key) == 3:
        return f"{key[0]} {key[1]}/{key[2]}"
    return str(key)


_PREFIX = 32
_VOLATILE = re.compile(r"0x[0-9a-f]+|\d+")


def _shape(text: str) -> str:
    """A message with its numbers (ports, counts, addresses, durations) taken out."""
    return _VOLATILE.sub("#", text)[:160]


class RateLimitFilter(logging.Filter):
    """At most `burst` lines per message shape in any `period` seconds; what is dropped is
    counted and reported on the next line of that shape that gets through.

    A shape is (logger, level, message template with numbers removed; for a message formatted
    before logging, its first words), so a storm of one warning from thousands of objects,
    watch streams or retries costs `burst` lines a period, not thousands."""

    def __init__(self, burst: int = 20, period: float = 60.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.burst, self.period, self.clock = burst, period, clock
        self._windows: dict[tuple[str, int, str], list[float]] = {}  # shape -> [start, count, dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        template = record.msg if isinstance(record.msg, str) else repr(record.msg)
        # Pre-formatted messages (Kopf writes f-strings) carry their URL or object in the text:
        # their first words are the shape.
        shape = _shape(template) if record.args else _shape(template)[:_PREFIX]
        key = (record.name, record.levelno, shape)
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= self.period:
                dropped = int(window[2]) if window else 0
                window = self._windows[key] = [now, 0.0, 0.0]
                if len(self._windows) > 10_000:  # shapes are code-defined; guard anyway
                    self._windows = {key: window}
            else:
                dropped = 0
            if window[1] >= self.burst:
                window[2] += 1
                LOG_LINES_SUPPRESSED.labels(record.name).inc()
                return False
            window[1] += 1
        if dropped:
            record.msg = f"{record.getMessage()} [{dropped} similar lines suppressed]"
            record.args = None
        return True


def configure_logging(
    log_format: str, level: int = logging.INFO, burst: int = 10, period: float = 60.0
) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RateLimitFilter(burst=burst, period=period))
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Kopf writes an INFO line per handler run ("... succeeded"), per object and event: noise
    # that grows with the object count. Its warnings and errors stay.
    if level > logging.DEBUG:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # urllib3 warns on each connection retry; the reconcile's own failure line says it once.
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


# --- the /metrics endpoint -------------------------------------------------------------------

_OPENMETRICS_END = b"# EOF\n"


class _OneFamily:
    """A collector of one family already built, so the library's encoders render it alone."""

    __slots__ = ("family",)

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterable[Metric]:
        return (self.family,)


# Samples per chunk of a `SlicedFamily`: a chunk's lines are about 100 bytes each, so a slice
# holds some hundreds of KB while it is encoded, whatever the endpoint count.
SLICE_SAMPLES = 1000


def exposition_chunks(
    source: Collector, encoder: Callable[[Collector], bytes], openmetrics: bool
) -> Iterator[bytes]:
    """The exposition of `source`, one metric family per chunk (a `SlicedFamily` in chunks of
    `SLICE_SAMPLES` samples), in the encoder's format.

    prometheus_client's `generate_latest` renders every family into one list of lines, joins
    it and encodes it, so a scrape holds the whole text three times over (about 19 MB at
    10,000 endpoints, bench/scale/RESULTS.md); here a chunk is written to the socket before
    the next is built. The encoder writes each slice as a family of its own, so the header
    lines (`# HELP`, `# TYPE`, `# UNIT`) of every slice after a family's first are cut.
    OpenMetrics ends the whole exposition with one `# EOF` line: the encoder appends it to each
    family, so it is cut there and written once at the end."""
    for family in source.collect():
        parts = family.slices(SLICE_SAMPLES) if isinstance(family, SlicedFamily) else (family,)
        for index, part in enumerate(parts):
            text = encoder(_OneFamily(part))
            if openmetrics:
                text = text.removesuffix(_OPENMETRICS_END)
            if index:
                text = _without_header(text)
            if text:
                yield text
    if openmetrics:
        yield _OPENMETRICS_END


def _without_header(text: bytes) -> bytes:
    """`text` after its leading comment lines (no sample line starts with `#`)."""
    start = 0
    while text.startswith(b"# ", start):
        start = text.index(b"\n", start) + 1
    return text[start:]


def _gzip_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A gzip member written as the chunks come (Prometheus asks for gzip on every scrape)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip header and trailer
    for chunk in chunks:
        compressed = compressor.compress(chunk)
        if compressed:
            yield compressed
    yield compressor.flush()


def metrics_app(registry: CollectorRegistry = REGISTRY) -> Callable[..., Iterable[bytes]]:
    """The WSGI app behind the operator's metrics port: the library's content negotiation
    (text 0.0.4 or OpenMetrics from `Accept`, gzip from `Accept-Encoding`, `name[]` filters),
    its body streamed by `exposition_chunks`. The body has no length; the server is HTTP/1.0,
    so the connection's close ends it."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            start_response("200 OK", [("Allow", "OPTIONS,GET")])
            return [b""]
        if method != "GET":
            start_response("405 Method Not Allowed", [("Allow", "OPTIONS,GET")])
            return [f"# HTTP 405: {method}; use OPTIONS or GET\n".encode()]
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        params = parse_qs(environ.get("QUERY_STRING", ""))
        source: Collector = registry.restricted_registry(params["name[]"]) if "name[]" in params else registry
        openmetrics = content_type.startswith("application/openmetrics-text")
        chunks = exposition_chunks(source, encoder, openmetrics)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            headers.append(("Content-Encoding", "gzip"))
            chunks = _gzip_stream(chunks)
        start_response("200 OK", headers)
        return chunks

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: a scrape every few seconds is not news."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress does not hold up the process's exit


def serve_metrics(port: int, address: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> WSGIServer:
    """Serve `metrics_app` on `address:port` from a daemon thread; returns the server."""
    server = make_server(address, port, metrics_app(registry), _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    return server
