"""Step 6: run the model on a labelled evaluation set with onnxruntime and measure it.

The model is driven from its I/O contract alone, so any ONNX STT model that declares its
tensors can be measured:
- the `audio` input takes the waveform when its per-item shape is 1-D, or the project's
  log-mel front-end (`speech.features.log_mel`) when it is `[frames, n_mels]`;
- `audio-length` / `sample-rate` inputs get the length (samples or frames) and the rate;
- a `transcript` output (strings) is read directly, a `logits` output is CTC-greedy decoded
  with `spec.io.vocabulary` (or a `vocabulary.json` beside the model).

WER and CER are corpus-level (jiwer) after the project's text normaliser; latency is per
utterance (batch 1, after a warm-up run); the real-time factor is compute time over audio
time; peak memory is the process's peak resident set (what a Job's memory limit sees).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stt_operator.artifacts.contract import IOContract, TensorSpec
from stt_operator.artifacts.report import Metrics, StepResult

BLANK_TOKENS = ("<blank>", "<b>", "<pad>", "_", "")
NP_TYPES = {
    "TYPE_FP32": np.float32,
    "TYPE_FP16": np.float16,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
}


@dataclass(frozen=True)
class Sample:
    """One labelled utterance: mono float audio in [-1, 1) and its reference transcript."""

    id: str
    audio: np.ndarray
    sample_rate: int
    text: str

    @property
    def duration_s(self) -> float:
        return len(self.audio) / float(self.sample_rate)


def load_samples(path: str | Path, limit: int | None = None) -> list[Sample]:
    """An evaluation set in the project's format (`speech.evalset`), texts normalised."""
    from stt_operator.speech.evalset import load_evalset

    utterances = load_evalset(path, normalise=True)
    if limit:
        utterances = utterances[:limit]
    return [Sample(u.id, u.audio_float(), u.sample_rate, u.text) for u in utterances]


def default_providers() -> list[str]:
    """CUDA (and TensorRT) when a GPU device is present, else CPU only.

    The GPU wheel lists CUDA as available even without a driver; asking for it then only
    produces load errors, so the device node decides.
    """
    if Path("/dev/nvidia0").exists():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(model_path: Path, providers: Sequence[str] | None = None, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=list(providers or default_providers()))


def _blank_index(tokens: Sequence[str]) -> int:
    for i, token in enumerate(tokens):
        if token in BLANK_TOKENS:
            return i
    return 0


def vocabulary_for(
    contract: IOContract, model_path: Path, metadata: Mapping[str, str] | None = None
) -> Any | None:
    """The CTC vocabulary: a `vocab.json` beside the model, else the model's own `vocabulary`
    metadata (the project's models embed it), else spec.io.vocabulary."""
    import json

    from stt_operator.speech.ctc import Vocabulary

    for name in ("vocabulary.json", "vocab.json"):
        candidate = model_path.parent / name
        if candidate.is_file():
            return Vocabulary.load(candidate)
    embedded = (metadata or {}).get("vocabulary")
    if embedded:
        data = json.loads(embedded)
        return Vocabulary(
            tuple(data["tokens"]),
            int(data.get("blank", 0)),
            str(data.get("unit", "word")),
            str(data.get("word_separator", " ")),
        )
    if not contract.vocabulary:
        return None
    tokens = tuple(contract.vocabulary)
    blank = _blank_index(tokens)
    units = [t for i, t in enumerate(tokens) if i != blank]
    unit = "char" if all(len(t) <= 1 for t in units) else "word"
    separator = "|" if unit == "char" and "|" in tokens else " "
    return Vocabulary(tokens=tokens, blank=blank, unit=unit, word_separator=separator)


@dataclass
class ContractRunner:
    """Builds feeds for one utterance and turns the outputs into text, from the contract."""

    session: Any
    contract: IOContract
    vocabulary: Any | None = None
    input_ranks: dict[str, int] = field(default_factory=dict)
    input_shapes: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def create(cls, session: Any, contract: IOContract, model_path: Path) -> ContractRunner:
        shapes = {i.name: list(i.shape) for i in session.get_inputs()}
        return cls(
            session=session,
            contract=contract,
            vocabulary=vocabulary_for(contract, model_path, session.get_modelmeta().custom_metadata_map),
            input_ranks={k: len(v) for k, v in shapes.items()},
            input_shapes=shapes,
        )

    def _audio_tensor(self, spec: TensorSpec, sample: Sample) -> tuple[np.ndarray, int]:
        """The audio input and its length along time (samples or frames)."""
        rank = self.input_ranks.get(spec.name, len(spec.dims) + 1)
        per_item = self.input_shapes.get(spec.name, [])[-1:] if rank >= 2 else []
        dtype = NP_TYPES.get(spec.data_type, np.float32)
        batched = self.contract.max_batch_size > 0 or rank == len(spec.dims) + 1
        item_rank = rank - 1 if batched else rank
        if item_rank == 1:
            audio = sample.audio
            if dtype == np.int16:
                data = np.clip(audio * 32768.0, -32768, 32767).astype(np.int16)
            else:
                data = audio.astype(dtype)
            length = len(data)
        else:
            from stt_operator.speech import features

            bands = per_item[0] if per_item and isinstance(per_item[0], int) else features.N_MELS
            if bands != features.N_MELS:
                raise ValueError(
                    f"input {spec.name}: [frames, {bands}] features, but the project's front-end makes "
                    f"{features.N_MELS} log-mel bands"
                )
            data = features.log_mel(sample.audio, sample.sample_rate).astype(dtype)
            length = data.shape[0]
        return (data[np.newaxis] if batched else data), length

    def feeds(self, sample: Sample) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {}
        length = 0
        audio_spec = self.contract.by_role("audio")
        if audio_spec is None:
            raise ValueError("spec.io.inputs has no 'audio' input to feed")
        feeds[audio_spec.name], length = self._audio_tensor(audio_spec, sample)
        for spec in self.contract.inputs:
            if spec.role not in ("audio-length", "sample-rate"):
                continue
            value = length if spec.role == "audio-length" else sample.sample_rate
            rank = self.input_ranks.get(spec.name, 1)
            array = np.array(value, dtype=NP_TYPES.get(spec.data_type, np.int64))
            feeds[spec.name] = array.reshape((1,) * rank)
        missing = [i.name for i in self.session.get_inputs() if i.name not in feeds]
        if missing:
            raise ValueError(f"cannot feed model inputs {missing}: give them a role in spec.io.inputs")
        return feeds

    def output_names(self) -> list[str]:
        wanted = [t.name for t in self.contract.outputs if t.role in ("transcript", "logits")]
        return wanted[:1]

    def decode(self, outputs: Sequence[np.ndarray]) -> str:
        out = outputs[0]
        spec = next(t for t in self.contract.outputs if t.name == self.output_names()[0])
        if spec.role == "transcript":
            value = np.asarray(out).reshape(-1)[0]
            return value.decode() if isinstance(value, bytes) else str(value)
        if self.vocabulary is None:
            raise ValueError(f"logits output {spec.name} needs spec.io.vocabulary to decode")
        from stt_operator.speech.ctc import greedy_decode

        logits = np.asarray(out, dtype=np.float32)
        while logits.ndim > 2:
            logits = logits[0]
        return greedy_decode(logits, self.vocabulary).text

    def transcribe(self, sample: Sample) -> str:
        return self.decode(self.session.run(self.output_names(), self.feeds(sample)))


@dataclass
class Measurement:
    hypotheses: list[str]
    references: list[str]
    latencies_ms: list[float]
    audio_s: float
    compute_s: float
    peak_rss_mib: float

    def metrics(self) -> Metrics:
        import jiwer

        from stt_operator.speech.normalise import normalise_text

        refs = [normalise_text(r) or "<empty>" for r in self.references]
        hyps = [normalise_text(h) for h in self.hypotheses]
        lat = np.asarray(self.latencies_ms)
        return Metrics(
            wer=float(jiwer.wer(refs, hyps)),
            cer=float(jiwer.cer(refs, hyps)),
            latency_p50_ms=float(np.percentile(lat, 50)),
            latency_p95_ms=float(np.percentile(lat, 95)),
            real_time_factor=self.compute_s / self.audio_s if self.audio_s else None,
            peak_memory_mib=self.peak_rss_mib,
            utterances=len(self.references),
        )


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(transcribe: Callable[[Sample], str], samples: Iterable[Sample], warmup: int = 1) -> Measurement:
    samples = list(samples)
    if not samples:
        raise ValueError("the evaluation set is empty")
    for sample in samples[:warmup]:
        transcribe(sample)
    hyps, refs, lats = [], [], []
    audio_s = compute_s = 0.0
    for sample in samples:
        start = time.perf_counter()
        text = transcribe(sample)
        elapsed = time.perf_counter() - start
        hyps.append(text)
        refs.append(sample.text)
        lats.append(elapsed * 1000.0)
        audio_s += sample.duration_s
        compute_s += elapsed
    return Measurement(hyps, refs, lats, audio_s, compute_s, peak_rss_mib())


THRESHOLDS: tuple[tuple[str, str, str], ...] = (
    ("maxWer", "wer", "WER"),
    ("maxCer", "cer", "CER"),
    ("maxLatencyP95Ms", "latency_p95_ms", "latency p95 (ms)"),
    ("maxRealTimeFactor", "real_time_factor", "real-time factor"),
    ("maxPeakMemoryMiB", "peak_memory_mib", "peak memory (MiB)"),
)


def threshold_violations(metrics: Metrics, thresholds: Mapping[str, Any] | None) -> list[str]:
    problems = []
    for key, attr, label in THRESHOLDS:
        limit = (thresholds or {}).get(key)
        value = getattr(metrics, attr)
        if limit is not None and value is not None and value > float(limit):
            problems.append(f"{label} {value:.4g} exceeds validation.thresholds.{key} {float(limit):.4g}")
    return problems


def performance_step(
    fmt: str | None,
    model_path: Path | None,
    contract: IOContract,
    samples: list[Sample] | None,
    thresholds: Mapping[str, Any] | None,
    blocked_by: str | None = None,
    providers: Sequence[str] | None = None,
) -> tuple[StepResult, Metrics]:
    if blocked_by:
        return StepResult.skipped("performance", f"not run: {blocked_by}"), Metrics()
    if fmt != "onnx" or model_path is None:
        return (
            StepResult.skipped("performance", f"the validator runs ONNX models only; format is {fmt}"),
            Metrics(),
        )
    if not samples:
        return StepResult.skipped("performance", "no validation.evaluationSet configured"), Metrics()
    try:
        session = make_session(model_path, providers)
        runner = ContractRunner.create(session, contract, model_path)
        measurement = measure(runner.transcribe, samples)
    except Exception as exc:  # ORT and decoding errors: the model cannot be run as declared
        message = f"running the model failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return StepResult.failed("performance", message, findings=[message]), Metrics()
    metrics = measurement.metrics()
    summary = (
        f"{metrics.utterances} utterances: WER {metrics.wer:.4f}, CER {metrics.cer:.4f}, "
        f"p50 {metrics.latency_p50_ms:.1f} ms, p95 {metrics.latency_p95_ms:.1f} ms, "
        f"RTF {metrics.real_time_factor:.4f}, peak RSS {metrics.peak_memory_mib:.0f} MiB "
        f"({', '.join(session.get_providers()[:1])})"
    )
    problems = threshold_violations(metrics, thresholds)
    if problems:
        return StepResult.failed(
            "performance", "; ".join(problems) + f" — {summary}", findings=problems
        ), metrics
    return StepResult.passed("performance", summary), metrics


__all__ = [
    "ContractRunner",
    "Measurement",
    "Sample",
    "default_providers",
    "load_samples",
    "make_session",
    "measure",
    "performance_step",
    "threshold_violations",
]
