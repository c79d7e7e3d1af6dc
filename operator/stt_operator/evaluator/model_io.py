"""What the evaluator needs to know of one variant's model: which tensors carry what
(`ModelIO`, from the STTModel's `io` roles) and where it is served (`Target`). Plain data, so
the manifest builders use it without importing the replay's clients (evaluator/replay.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AUDIO_INPUT, TRANSCRIPT_OUTPUT, CONFIDENCE_OUTPUT = "AUDIO", "TRANSCRIPT", "CONFIDENCE"


@dataclass(frozen=True)
class ModelIO:
    """Which tensors of a model carry what (from the STTModel `io` roles).

    Either `transcript` (a string output) or `logits` plus a CTC `vocabulary` (decoded here).
    """

    audio: str = AUDIO_INPUT
    audio_length: str | None = None
    transcript: str | None = TRANSCRIPT_OUTPUT
    confidence: str | None = CONFIDENCE_OUTPUT
    logits: str | None = None
    vocabulary: Any = None  # stt_operator.speech.ctc.Vocabulary

    def __post_init__(self) -> None:
        if not self.audio:
            raise ValueError("io: an audio input name is required")
        if not self.transcript and not (self.logits and self.vocabulary is not None):
            raise ValueError("io: need a transcript output, or a logits output with a vocabulary")


@dataclass(frozen=True)
class Target:
    """One variant to evaluate: a Triton model behind a gRPC address."""

    variant: str  # metric label `variant` (ABTest variant or stable/canary/preview)
    triton_model: str  # model name in Triton's repository
    url: str  # host:port of Triton's gRPC endpoint
    model: str = ""  # metric label `model` (the STTModel name); defaults to triton_model
    io: ModelIO = ModelIO()

    @property
    def model_label(self) -> str:
        return self.model or self.triton_model
