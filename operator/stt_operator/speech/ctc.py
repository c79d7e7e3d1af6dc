"""CTC vocabularies and greedy decoding of [time, vocab] logits into text plus a confidence."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

UNITS = ("word", "char")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Output tokens of a CTC model; index `blank` is the CTC blank.

    `unit` says how tokens join: "word" tokens with spaces, "char" tokens directly (the token
    `word_separator` then stands for a space).
    """

    tokens: tuple[str, ...]
    blank: int = 0
    unit: str = "word"
    word_separator: str = " "

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"vocabulary unit {self.unit!r} is not one of {UNITS}")
        if not 0 <= self.blank < len(self.tokens):
            raise ValueError(f"vocabulary blank index {self.blank} is outside 0..{len(self.tokens) - 1}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("vocabulary tokens must be unique")

    @property
    def size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Token ids of normalised text; an out-of-vocabulary unit is an error naming it."""
        index = {t: i for i, t in enumerate(self.tokens)}
        units: Sequence[str] = (
            text.split() if self.unit == "word" else [self.word_separator if c == " " else c for c in text]
        )
        missing = sorted({u for u in units if u not in index})
        if missing:
            raise ValueError(f"text {text!r}: units {missing} are not in the vocabulary")
        return [index[u] for u in units]

    def decode(self, ids: Sequence[int]) -> str:
        toks = [self.tokens[i] for i in ids if i != self.blank]
        if self.unit == "word":
            return " ".join(toks)
        return " ".join("".join(toks).replace(self.word_separator, " ").split())

    def to_json(self) -> dict[str, object]:
        return {
            "tokens": list(self.tokens),
            "blank": self.blank,
            "unit": self.unit,
            "word_separator": self.word_separator,
        }

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: cannot read vocabulary ({e})") from e
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise ValueError(f"{p}: vocabulary must be an object with a 'tokens' list")
        return cls(
            tokens=tuple(str(t) for t in data["tokens"]),
            blank=int(data.get("blank", 0)),
            unit=str(data.get("unit", "word")),
            word_separator=str(data.get("word_separator", " ")),
        )


@dataclasses.dataclass(frozen=True)
class Decoded:
    text: str
    ids: tuple[int, ...]
    confidence: float


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def greedy_decode(logits: np.ndarray, vocab: Vocabulary) -> Decoded:
    """Best path: argmax per frame, merge repeats, drop blanks.

    Confidence is the mean, over emitted tokens, of the token's peak posterior within its run of
    frames; with nothing emitted it is the mean blank posterior (sure of silence).
    """
    if logits.ndim != 2 or logits.shape[1] != vocab.size:
        raise ValueError(f"logits must be [time, {vocab.size}], got shape {logits.shape}")
    if logits.shape[0] == 0:
        return Decoded("", (), 0.0)
    probs = np.exp(log_softmax(logits.astype(np.float64)))
    best = probs.argmax(axis=-1)
    ids: list[int] = []
    peaks: list[float] = []
    prev = -1
    for t, k in enumerate(best):
        k = int(k)
        if k != vocab.blank:
            if k != prev:
                ids.append(k)
                peaks.append(float(probs[t, k]))
            else:
                peaks[-1] = max(peaks[-1], float(probs[t, k]))
        prev = k
    confidence = float(np.mean(peaks)) if peaks else float(probs[:, vocab.blank].mean())
    return Decoded(vocab.decode(ids), tuple(ids), confidence)
