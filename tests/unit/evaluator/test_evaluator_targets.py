"""Evaluator targets from STTModel I/O contracts; logits decoding; config round trip."""

from __future__ import annotations

import numpy as np
import pytest

from stt_operator.api.sttmodel import IOSpec
from stt_operator.evaluator.model_io import ModelIO, Target
from stt_operator.evaluator.replay import TranscriptionError, check_input_types, decode_logits
from stt_operator.evaluator.targets import (
    model_io_from_config,
    model_io_from_spec,
    model_io_to_config,
    vocabulary_from_tokens,
)
from stt_operator.models.catalog import sphinx_io

CTC_IO = {
    "inputs": [
        {"name": "audio_signal", "dataType": "TYPE_FP32", "dims": [-1], "role": "audio"},
        {"name": "length", "dataType": "TYPE_INT64", "dims": [1], "role": "audio-length"},
    ],
    "outputs": [{"name": "logprobs", "dataType": "TYPE_FP32", "dims": [-1, 5], "role": "logits"}],
    "vocabulary": ["<blank>", "turn", "on", "the", "lights"],
}


def test_transcript_model_from_the_builtin_contract() -> None:
    io = model_io_from_spec(sphinx_io())
    assert io == ModelIO("AUDIO", "AUDIO_LENGTH", "TRANSCRIPT", "CONFIDENCE", None, None)


def test_ctc_model_from_an_api_contract() -> None:
    io = model_io_from_spec(IOSpec.model_validate(CTC_IO))
    assert (io.audio, io.audio_length, io.transcript, io.logits) == (
        "audio_signal",
        "length",
        None,
        "logprobs",
    )
    assert io.vocabulary.unit == "word" and io.vocabulary.blank == 0
    # The same from the raw camelCase body.
    assert model_io_from_spec(CTC_IO) == io


def test_character_vocabularies_are_recognised() -> None:
    v = vocabulary_from_tokens(["_", "a", "b", "|"])
    assert (v.unit, v.word_separator) == ("char", "|")
    assert vocabulary_from_tokens(["<b>", "a", " "]).unit == "char"
    with pytest.raises(ValueError, match=r"io\.vocabulary"):
        vocabulary_from_tokens(["<blank>"])


@pytest.mark.parametrize(
    ("io", "message"),
    [
        ({**CTC_IO, "vocabulary": None}, "io.vocabulary"),
        ({**CTC_IO, "inputs": CTC_IO["inputs"][1:]}, "role 'audio'"),
        ({**CTC_IO, "outputs": []}, "'transcript' or 'logits'"),
        ({**CTC_IO, "inputs": [*CTC_IO["inputs"], {"name": "x", "role": "audio"}]}, "more than one"),
    ],
)
def test_unusable_contracts_are_explained(io: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model_io_from_spec(io)


def test_config_round_trip() -> None:
    io = model_io_from_spec(CTC_IO)
    assert model_io_from_config(model_io_to_config(io), "targets[0]") == io
    assert model_io_from_config(None, "t") == ModelIO()
    assert model_io_from_config(model_io_to_config(ModelIO()), "t") == ModelIO()
    with pytest.raises(ValueError, match=r"targets\[0\]\.io: unknown keys"):
        model_io_from_config({"audo": "x"}, "targets[0]")
    with pytest.raises(ValueError, match=r"targets\[1\]\.io"):
        model_io_from_config({"audio": "a", "logits": "l"}, "targets[1]")  # logits without vocabulary


def test_decode_logits_greedy_ctc() -> None:
    vocab = vocabulary_from_tokens(["<blank>", "turn", "on", "the", "lights"])
    path = [0, 1, 1, 0, 2, 3, 3, 0, 4]
    logits = np.full((1, len(path), 5), -10.0, np.float32)
    logits[0, np.arange(len(path)), path] = 10.0
    text, conf = decode_logits(logits, vocab)
    assert text == "turn on the lights"
    assert conf is not None and conf > 0.99
    with pytest.raises(TranscriptionError, match="logits"):
        decode_logits(np.zeros((3, 7), np.float32), vocab)
    with pytest.raises(TranscriptionError, match="no logits output"):
        decode_logits(None, vocab)


def test_input_types_are_checked_against_the_contract() -> None:
    t = Target("a", "m", "h:1", io=model_io_from_spec(CTC_IO))
    assert check_input_types(t, {"audio_signal": "FP32", "length": "INT64"})["length"] == "INT64"
    with pytest.raises(TranscriptionError, match="no input 'audio_signal'"):
        check_input_types(t, {"AUDIO": "FP32"})
    with pytest.raises(TranscriptionError, match="not INT16 or FP32"):
        check_input_types(t, {"audio_signal": "FP64", "length": "INT64"})
    with pytest.raises(TranscriptionError, match="INT32/INT64"):
        check_input_types(t, {"audio_signal": "FP32", "length": "FP32"})
