"""Run the project's own ONNX CTC recogniser (audio in, word logits out) with onnxruntime."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from stt_operator.speech import features
from stt_operator.speech.ctc import Vocabulary, greedy_decode
from stt_operator.speech.evalset import Utterance

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "model.onnx"
DEFAULT_VOCAB = ASSETS / "vocab.json"
INPUT = "audio"
OUTPUT = "logits"
# Silence put around every clip. The trailing pad is longer than the model's receptive field
# (about 0.5 s), so a clip decodes the same alone or zero-padded in a batch; training adds
# silence of this order too (training/train_ctc.py).
LEAD_PAD_S = 0.2
TRAIL_PAD_S = 0.6


@dataclasses.dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float
    # Wall time of the onnxruntime call that produced it (shared by a batch).
    compute_s: float


def _metadata(session: ort.InferenceSession) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def load_vocabulary(model_path: Path, vocab_path: Path | None, meta: dict[str, str]) -> Vocabulary:
    """Explicit vocab file, else the one embedded in the model's metadata, else vocab.json beside it."""
    if vocab_path is not None:
        return Vocabulary.load(vocab_path)
    if "vocabulary" in meta:
        data = json.loads(meta["vocabulary"])
        return Vocabulary(tuple(data["tokens"]), int(data["blank"]), data["unit"], data["word_separator"])
    sibling = model_path.with_name("vocab.json")
    if sibling.is_file():
        return Vocabulary.load(sibling)
    raise ValueError(f"{model_path}: no vocabulary given, none in the model metadata and no {sibling.name}")


class OnnxSTT:
    """A CTC model with input `audio` float32 [batch, samples] and output `logits` [batch, frames, vocab]."""

    def __init__(
        self,
        model_path: str | Path = DEFAULT_MODEL,
        vocab_path: str | Path | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: ONNX model not found")
        opts = ort.SessionOptions()
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        try:
            self.session = ort.InferenceSession(str(self.model_path), opts, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ValueError(f"{self.model_path}: onnxruntime cannot load the model ({e})") from e
        meta = _metadata(self.session)
        self.vocab = load_vocabulary(self.model_path, Path(vocab_path) if vocab_path else None, meta)
        self.frame_stack = int(meta.get("frame_stack", "1"))
        self._check_io()

    def _check_io(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if INPUT not in inputs or inputs[INPUT].type != "tensor(float)" or len(inputs[INPUT].shape) != 2:
            found = [(i.name, i.type, i.shape) for i in inputs.values()]
            raise ValueError(
                f"{self.model_path}: expected input '{INPUT}' float [batch, samples], found {found}"
            )
        if OUTPUT not in outputs or len(outputs[OUTPUT].shape) != 3:
            found = [(o.name, o.type, o.shape) for o in outputs.values()]
            raise ValueError(
                f"{self.model_path}: expected output '{OUTPUT}' [batch, frames, vocab], found {found}"
            )
        width = outputs[OUTPUT].shape[2]
        if isinstance(width, int) and width != self.vocab.size:
            raise ValueError(
                f"{self.model_path}: output '{OUTPUT}' has {width} classes, the vocabulary {self.vocab.size}"
            )

    def output_frames(self, n_samples: int) -> int:
        return features.num_frames(n_samples) // self.frame_stack

    def logits(self, audio: Sequence[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """Per-item [frames, vocab] logits for a batch of mono 16 kHz clips, and the compute time.

        Each clip gets LEAD_PAD_S / TRAIL_PAD_S of silence, then clips are zero-padded to the
        longest; each item's logits are cut back to its own padded length.
        """
        lead = np.zeros(round(LEAD_PAD_S * features.SAMPLE_RATE), dtype=np.float32)
        trail = np.zeros(round(TRAIL_PAD_S * features.SAMPLE_RATE), dtype=np.float32)
        clips = [np.concatenate([lead, features.as_float_audio(a), trail]) for a in audio]
        if not clips:
            return [], 0.0
        width = max(len(c) for c in clips)
        batch = np.zeros((len(clips), width), dtype=np.float32)
        for row, clip in zip(batch, clips, strict=True):
            row[: len(clip)] = clip
        started = time.perf_counter()
        (out,) = self.session.run([OUTPUT], {INPUT: batch})
        elapsed = time.perf_counter() - started
        return [
            out[i, : self.output_frames(max(len(c), features.N_FFT))] for i, c in enumerate(clips)
        ], elapsed

    def transcribe_batch(
        self, audio: Sequence[np.ndarray], sample_rate: int = features.SAMPLE_RATE
    ) -> list[Transcript]:
        if sample_rate != features.SAMPLE_RATE:
            raise ValueError(f"sample_rate must be {features.SAMPLE_RATE} Hz, got {sample_rate}")
        per_item, elapsed = self.logits(audio)
        out = []
        for logits in per_item:
            d = greedy_decode(logits, self.vocab)
            out.append(Transcript(d.text, d.confidence, elapsed))
        return out

    def transcribe(self, audio: np.ndarray, sample_rate: int = features.SAMPLE_RATE) -> Transcript:
        return self.transcribe_batch([audio], sample_rate)[0]

    def transcribe_utterance(self, utterance: Utterance) -> Transcript:
        return self.transcribe(utterance.audio, utterance.sample_rate)
