"""The evaluator service: load a labelled set, replay it against every variant, export metrics.

Runs as a local process (`stt-operator evaluate`) and in the Deployment the operator creates
per ModelDeployment / ABTest (`rounds: 0` = keep replaying every `roundInterval`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from stt_operator import evalmetrics as em
from stt_operator.evaluator.model_io import Target
from stt_operator.evaluator.replay import ReplayConfig, Replayer, Transcriber, TritonTranscriber
from stt_operator.evaluator.scoring import Observation, PairDelta, paired_delta
from stt_operator.evaluator.server import MetricsServer
from stt_operator.speech.normalise import DEFAULT_VERSION

log = logging.getLogger("stt_operator.evaluator")
CREDENTIALS_ENV = "STT_FETCH_CREDENTIALS_DIR"


@dataclass
class EvaluatorConfig:
    evalset: str  # directory, manifest file, or URI (file://, pvc://, http(s)://, s3://, gs://)
    targets: list[Target]
    endpoint: str = "local"
    baseline: str | None = None  # default: the first target
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    rounds: int = 1  # 0 = forever
    round_interval_s: float = 60.0
    metrics_address: str = "0.0.0.0"
    metrics_port: int | None = 9102  # None = no HTTP endpoint
    summary_path: str | None = None
    linger_s: float = 0.0  # keep serving /metrics this long after the last round
    normaliser_version: str | None = None  # default: the evaluation set's own
    max_utterances: int | None = None

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"rounds: must be >= 0 (0 = forever), got {self.rounds}")
        if self.round_interval_s < 0:
            raise ValueError(f"roundInterval: must be >= 0 seconds, got {self.round_interval_s}")
        if not self.evalset:
            raise ValueError("evalset: a directory, manifest or URI of the evaluation set is required")


@dataclass
class EvaluationResult:
    summaries: dict[str, dict[str, Any]]
    pairs: list[PairDelta]
    observations: list[Observation]
    rounds: int
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "elapsed_s": round(self.elapsed_s, 3),
            "variants": self.summaries,
            "pairs": [p.__dict__ for p in self.pairs],
        }


def resolve_evalset(location: str, workdir: Path) -> Path:
    """A local directory or manifest for `location`; remote URIs are fetched (and unpacked)."""
    if "://" not in location:
        path = Path(location)
        if not path.exists():
            raise FileNotFoundError(f"evalset: {path} does not exist")
        return path
    from stt_operator.artifacts.fetch import Credentials, FetchOptions, fetch, local_path_for

    local = local_path_for(location)
    if local is not None:
        if not local.exists():
            raise FileNotFoundError(f"evalset: {location} -> {local} does not exist")
        return local
    from stt_operator.artifacts.archives import prepare

    # Credentials (a mounted Secret, one key per file) for s3 / gs / http sets.
    options = FetchOptions(credentials=Credentials.from_dir(os.environ.get(CREDENTIALS_ENV)))
    fetched = fetch(location, workdir, options)
    return prepare(fetched.path, None, workdir)


def load_utterances(location: str, workdir: Path) -> tuple[list[Any], str]:
    """Utterances of the set and the normaliser version its header names."""
    from stt_operator.speech.evalset import HEADER_FILE, load_evalset, read_header

    path = resolve_evalset(location, workdir)
    header_path = path / HEADER_FILE if path.is_dir() else path.parent / HEADER_FILE
    version = (
        read_header(header_path).get("normaliser_version", DEFAULT_VERSION) if header_path.exists() else None
    )
    return load_evalset(path), version or DEFAULT_VERSION


async def run_evaluator(
    config: EvaluatorConfig,
    *,
    registry: CollectorRegistry | None = None,
    transcriber: Transcriber | None = None,
    stop: asyncio.Event | None = None,
) -> EvaluationResult:
    """Load, replay `rounds` times (or until `stop`), export metrics; returns the local summary."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = em.build_eval_metrics(registry)
    stop = stop or asyncio.Event()
    loaded = {"ready": False}
    replayer: Replayer | None = None

    def health() -> dict[str, Any]:
        state = replayer.state if replayer else None
        return {
            "status": "ok",
            "ready": loaded["ready"],
            "rounds_completed": state.rounds_completed if state else 0,
            "utterances_sent": state.utterances_sent if state else 0,
            "last_error": state.last_error if state else None,
        }

    server = None
    if config.metrics_port is not None:
        server = MetricsServer(
            registry, health, lambda: loaded["ready"], config.metrics_address, config.metrics_port
        )
        server.start()
        log.info("serving metrics", extra={"fields": {"port": server.port}})
    own_transcriber = transcriber is None
    transcriber = transcriber or TritonTranscriber(config.replay.timeout_s)
    started = time.monotonic()
    observations: list[Observation] = []
    try:
        with tempfile.TemporaryDirectory(prefix="evalset-") as tmp:
            utterances, version = load_utterances(config.evalset, Path(tmp))
        if config.max_utterances:
            utterances = utterances[: config.max_utterances]
        replayer = Replayer(
            config.targets,
            transcriber,
            endpoint=config.endpoint,
            baseline=config.baseline,
            config=config.replay,
            metrics=metrics,
            normaliser_version=config.normaliser_version or version,
        )
        replayer.init_series(sorted({u.language for u in utterances}))
        replayer.init_slices(utterances)
        loaded["ready"] = True
        log.info(
            "evaluation set loaded",
            extra={"fields": {"utterances": len(utterances), "normaliser": replayer.normaliser_version}},
        )
        while not stop.is_set():
            t0 = time.monotonic()
            round_obs = await _round_or_stop(replayer, utterances, stop)
            if round_obs is None:
                log.info(
                    "stopped during a round", extra={"fields": {"round": replayer.state.rounds_completed + 1}}
                )
                break
            # Replaying forever: keep only the latest round for the paired summary (memory).
            observations = observations + round_obs if config.rounds else round_obs
            summary = {v: s.as_dict() for v, s in replayer.state.summaries.items()}
            log.info(
                "round complete",
                extra={
                    "fields": {
                        "round": replayer.state.rounds_completed,
                        "seconds": round(time.monotonic() - t0, 3),
                        "wer": {v: s["wer"] for v, s in summary.items()},
                    }
                },
            )
            if config.rounds and replayer.state.rounds_completed >= config.rounds:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=config.round_interval_s)
        result = _result(replayer, observations, time.monotonic() - started)
        if config.summary_path:
            Path(config.summary_path).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        if config.linger_s > 0 and server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=config.linger_s)
        return result
    finally:
        if own_transcriber and isinstance(transcriber, TritonTranscriber):
            await transcriber.close()
        if server is not None:
            server.stop()


async def _round_or_stop(
    replayer: Replayer, utterances: list[Any], stop: asyncio.Event
) -> list[Observation] | None:
    """One round, or None when `stop` is set first (SIGTERM must not wait for a long round;
    what was scored so far is already in the counters)."""
    round_task = asyncio.create_task(replayer.run_round(utterances))
    stop_task = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({round_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_task.cancel()
    if round_task in done:
        return round_task.result()
    round_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await round_task
    return None


def _result(replayer: Replayer, observations: list[Observation], elapsed: float) -> EvaluationResult:
    by_variant: dict[str, list[Observation]] = {}
    for o in observations:
        by_variant.setdefault(o.variant, []).append(o)
    pairs = [
        paired_delta(
            by_variant.get(t.variant, []), by_variant.get(replayer.baseline, []), t.variant, replayer.baseline
        )
        for t in replayer.targets
        if t.variant != replayer.baseline
    ]
    return EvaluationResult(
        summaries={v: s.as_dict() for v, s in replayer.state.summaries.items()},
        pairs=pairs,
        observations=observations,
        rounds=replayer.state.rounds_completed,
        elapsed_s=elapsed,
    )
