"""The smoke transcription's pure parts: the shipped utterance and the verdict on an answer."""

from __future__ import annotations

from stt_operator.services.smoke import builtin_utterance, judge, smoke_transcribe


def test_the_builtin_utterance_is_16k_mono_speech_named_by_its_text() -> None:
    text, audio = builtin_utterance()
    assert text == "turn on the kitchen lights"
    assert audio.dtype.name == "int16" and audio.ndim == 1
    assert 1.0 < audio.size / 16000 < 4.0  # seconds of speech
    assert int(abs(audio).max()) > 10000  # not silence (peak -3 dBFS)


def test_judge_compares_normalised_text_and_quotes_the_transcript() -> None:
    assert judge("turn on the kitchen lights", "Turn on the kitchen lights.", "r1").outcome == "Passed"
    wrong = judge("turn on the kitchen lights", "turn on the heater", "r1")
    assert wrong.outcome == "Failed" and wrong.transcript == "turn on the heater"
    assert '"turn on the heater"' in wrong.message and '"turn on the kitchen lights"' in wrong.message


def test_no_server_is_an_error_not_a_failure() -> None:
    io = {
        "inputs": [{"name": "AUDIO", "role": "audio"}],
        "outputs": [{"name": "TRANSCRIPT", "role": "transcript"}],
    }
    result = smoke_transcribe("127.0.0.1:9", "m", io, "r1", timeout_s=2)
    assert result.outcome == "Error" and result.transcript is None
    assert "no answer from 127.0.0.1:9" in result.message


def test_a_model_without_a_transcript_or_logits_cannot_be_smoke_tested() -> None:
    io = {"inputs": [{"name": "AUDIO", "role": "audio"}], "outputs": [{"name": "X", "role": "other"}]}
    result = smoke_transcribe("127.0.0.1:9", "m", io, "r1", timeout_s=2)
    assert result.outcome == "Error" and "cannot smoke-test this model" in result.message
