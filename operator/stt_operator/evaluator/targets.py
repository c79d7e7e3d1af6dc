"""Evaluator targets from STTModel I/O contracts, and their config-file form (pure).

The roles of `spec.io` say which tensor is the audio, the audio length, the transcript, the
CTC logits and the confidence. A model with a `transcript` output is scored on it; a model
with only `logits` is decoded greedily with `io.vocabulary` (blank at index 0; tokens of at
most one character, or a `|` / space separator, mean a character vocabulary).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stt_operator.evaluator.model_io import ModelIO

CHAR_SEPARATORS = ("|", " ", "▁")


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        if name in obj:
            return obj[name]
        head, *rest = name.split("_")
        return obj.get(head + "".join(w.capitalize() for w in rest))
    return getattr(obj, name, None)


def vocabulary_from_tokens(tokens: Sequence[str], blank: int = 0, unit: str | None = None) -> Any:
    """A CTC `Vocabulary`; the unit is inferred from the tokens unless given."""
    from stt_operator.speech.ctc import Vocabulary

    tokens = tuple(str(t) for t in tokens)
    if len(tokens) < 2:
        raise ValueError(
            f"io.vocabulary: a CTC vocabulary needs a blank and at least one token, got {list(tokens)}"
        )
    non_blank = [t for i, t in enumerate(tokens) if i != blank]
    separator = next((s for s in CHAR_SEPARATORS if s in non_blank), " ")
    if unit is None:
        unit = "char" if all(len(t) <= 1 for t in non_blank) or separator != " " else "word"
    return Vocabulary(tokens, blank=blank, unit=unit, word_separator=separator if unit == "char" else " ")


def model_io_from_spec(io: Any) -> ModelIO:
    """`ModelIO` from an STTModel `spec.io` (pydantic model, dataclass or camelCase dict)."""
    inputs, outputs = list(_get(io, "inputs") or []), list(_get(io, "outputs") or [])

    def by_role(tensors: list[Any], role: str, where: str) -> str | None:
        names = [_get(t, "name") for t in tensors if (_get(t, "role") or "other") == role]
        if len(names) > 1:
            raise ValueError(f"io.{where}: more than one tensor has role {role!r}: {names}")
        return names[0] if names else None

    audio = by_role(inputs, "audio", "inputs")
    if audio is None:
        raise ValueError("io.inputs: no input has role 'audio'; the evaluator cannot send speech")
    transcript = by_role(outputs, "transcript", "outputs")
    logits = by_role(outputs, "logits", "outputs")
    vocabulary = None
    if transcript is None:
        if logits is None:
            raise ValueError("io.outputs: need an output with role 'transcript' or 'logits'")
        tokens = _get(io, "vocabulary")
        if not tokens:
            raise ValueError("io.vocabulary: a model that returns logits needs its CTC vocabulary")
        vocabulary = vocabulary_from_tokens(tokens)
    return ModelIO(
        audio=audio,
        audio_length=by_role(inputs, "audio-length", "inputs"),
        transcript=transcript,
        confidence=by_role(outputs, "confidence", "outputs"),
        logits=None if transcript else logits,
        vocabulary=vocabulary,
    )


def model_io_to_config(io: ModelIO) -> dict[str, Any]:
    """The `io` block of a target in the evaluator's config file."""
    out: dict[str, Any] = {"audio": io.audio}
    for key, value in (
        ("audioLength", io.audio_length),
        ("transcript", io.transcript),
        ("confidence", io.confidence),
        ("logits", io.logits),
    ):
        if value:
            out[key] = value
    if io.vocabulary is not None:
        out["vocabulary"] = {
            "tokens": list(io.vocabulary.tokens),
            "blank": io.vocabulary.blank,
            "unit": io.vocabulary.unit,
            "wordSeparator": io.vocabulary.word_separator,
        }
    return out


def model_io_from_config(data: Mapping[str, Any] | None, where: str) -> ModelIO:
    if data is None:
        return ModelIO()
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}.io: expected a mapping of tensor names")
    known = {"audio", "audioLength", "transcript", "confidence", "logits", "vocabulary"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}.io: unknown keys {unknown}; known: {sorted(known)}")
    vocabulary = None
    if data.get("vocabulary") is not None:
        from stt_operator.speech.ctc import Vocabulary

        v = data["vocabulary"]
        try:
            vocabulary = Vocabulary(
                tuple(str(t) for t in v["tokens"]),
                blank=int(v.get("blank", 0)),
                unit=str(v.get("unit", "word")),
                word_separator=str(v.get("wordSeparator", " ")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}.io.vocabulary: {exc}") from exc
    try:
        return ModelIO(
            audio=str(data.get("audio") or "AUDIO"),
            audio_length=data.get("audioLength"),
            # An io block that names logits means "no transcript output" unless it says so.
            transcript=data.get("transcript", None if data.get("logits") else "TRANSCRIPT"),
            confidence=data.get("confidence", None if data.get("logits") else "CONFIDENCE"),
            logits=data.get("logits"),
            vocabulary=vocabulary,
        )
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from exc
