"""The pocketsphinx Triton model's pure helpers, and the recogniser itself on synthesised speech."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from stt_operator.models import model_source
from stt_operator.models.catalog import command_grammar, jsgf_from_templates


def load_model_module() -> ModuleType:
    path = model_source("sphinx_stt") / "model.py"
    spec = importlib.util.spec_from_file_location("sphinx_stt_model", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


m = load_model_module()


def test_parameters_and_decoder_options(tmp_path: Path) -> None:
    (tmp_path / "g.jsgf").write_text("#JSGF V1.0;\ngrammar g;\npublic <g> = hello;\n")
    params = m.model_parameters(
        {"parameters": {"grammar": {"string_value": "g.jsgf"}, "beam": {"string_value": "1e-20"}}}
    )
    assert params == {"grammar": "g.jsgf", "beam": "1e-20"}
    opts = m.decoder_options(params, str(tmp_path))
    assert opts["jsgf"] == str(tmp_path / "g.jsgf")
    assert opts["beam"] == pytest.approx(1e-20)
    with pytest.raises(FileNotFoundError, match="grammar"):
        m.decoder_options({"grammar": "missing.jsgf"}, str(tmp_path))


def test_input_snr_degradation_overrides_dither() -> None:
    assert m.input_snr_db({}) == 30.0
    assert m.input_snr_db({"dither_snr_db": "off"}) is None
    assert m.input_snr_db({"noise_snr_db": "8"}) == 8.0


def test_add_noise_hits_the_requested_snr() -> None:
    rng = np.random.default_rng(0)
    x = np.sin(np.linspace(0, 2000, 160000)).astype(np.float32) * 0.5
    noisy = m.add_noise(x, 10.0, rng)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((noisy - x) ** 2))
    assert snr == pytest.approx(10.0, abs=0.2)
    assert np.array_equal(m.add_noise(np.zeros(10, np.float32), 10.0, rng), np.zeros(10, np.float32))


def test_as_float_accepts_pcm_and_float() -> None:
    assert m.as_float(np.array([[16384, -32768]], np.int16)).tolist() == [0.5, -1.0]
    assert m.as_float(np.array([0.25], np.float64)).dtype == np.float32


def test_to_pcm16_clips_and_scales() -> None:
    pcm = np.frombuffer(m.to_pcm16(np.array([0.0, 1.0, -2.0, 0.5])), dtype="<i2")
    assert pcm.tolist() == [0, 32767, -32767, 16383]


def test_request_rows_trims_each_row_to_its_audio_length() -> None:
    batch = np.array([[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 7, 8]], np.int16)
    rows = m.request_rows(batch, np.array([[3], [1], [4]], np.int32))
    assert [r.tolist() for r in rows] == [[1, 2, 3], [4], [5, 6, 7, 8]]
    assert all(r.dtype == np.int16 for r in rows)
    # INT64 lengths, a zero length, and no AUDIO_LENGTH at all (every row whole).
    rows = m.request_rows(batch, np.array([[0], [4], [2]], np.int64))
    assert [r.tolist() for r in rows] == [[], [4, 0, 0, 0], [5, 6]]
    assert [r.tolist() for r in m.request_rows(batch, None)] == batch.tolist()
    # Without batching AUDIO is [T] and AUDIO_LENGTH [1].
    assert [r.tolist() for r in m.request_rows(np.array([1, 2, 3], np.int16), np.array([2]))] == [[1, 2]]


@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        (np.array([[3], [5]], np.int32), r"AUDIO_LENGTH: row 1 has length 5, outside 0\.\.4"),
        (np.array([[-1], [2]], np.int64), r"AUDIO_LENGTH: row 0 has length -1"),
        (np.array([[3]], np.int32), r"AUDIO_LENGTH: shape \[1, 1\] gives 1 lengths for 2 AUDIO rows"),
        (np.array([[3.0], [2.0]], np.float32), r"AUDIO_LENGTH: must be INT32 or INT64"),
    ],
)
def test_request_rows_rejects_bad_lengths_naming_audio_length(lengths: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        m.request_rows(np.zeros((2, 4), np.int16), lengths)


def test_noise_depends_only_on_the_trimmed_audio() -> None:
    utterance = (np.sin(np.arange(800) / 7.0) * 9000).astype(np.int16)
    padded = np.zeros((2, 1200), np.int16)
    padded[1, :800] = utterance
    (_, row) = m.request_rows(padded, np.array([[0], [800]], np.int32))
    alone, batched = m.noise_rng(3, utterance), m.noise_rng(3, row)
    assert np.array_equal(alone.standard_normal(16), batched.standard_normal(16))
    # The seed and the samples both matter.
    assert not np.array_equal(m.noise_rng(3, utterance).random(4), m.noise_rng(4, utterance).random(4))
    assert not np.array_equal(m.noise_rng(3, utterance).random(4), m.noise_rng(3, padded[1]).random(4))


def test_jsgf_from_templates() -> None:
    text = jsgf_from_templates([[("turn",), ("on", "off"), ("the",), ("lights", "fan")], [("stop",)]])
    assert "public <commands> = turn (on | off) the (lights | fan)\n    | stop;" in text
    with pytest.raises(ValueError, match="templates"):
        jsgf_from_templates([])
    with pytest.raises(ValueError, match=r"templates\[0\]"):
        jsgf_from_templates([[("turn",), ()]])


def test_recogniser_transcribes_synthesised_commands(tmp_path: Path) -> None:
    """The real decoder with the command grammar on espeak-ng speech (no Triton needed)."""
    from pocketsphinx import Decoder

    from stt_operator.speech.evalset import synthesise

    (tmp_path / "commands.jsgf").write_text(command_grammar())
    model = m.TritonPythonModel.__new__(m.TritonPythonModel)
    model.decoder = Decoder(**m.decoder_options({"grammar": "commands.jsgf"}, str(tmp_path)))
    model.snr_db, model.seed = 30.0, 0
    audio = synthesise("turn off the kitchen lights", "en-us", 150, 50, tmp_path).astype(np.float32) / 32768
    text, confidence = model.transcribe(audio)
    assert text == "turn off the kitchen lights"
    assert 0.0 < confidence <= 1.0
    # The added noise depends only on the audio and seed, and the front end is reset for each
    # utterance: the same audio after other utterances gives exactly the same result.
    other = synthesise("turn on the fan", "en-gb", 180, 50, tmp_path).astype(np.float32) / 32768
    assert model.transcribe(other)[0] == "turn on the fan"
    assert model.transcribe(audio) == (text, confidence)
    assert model.transcribe(np.zeros(0, np.float32)) == ("", 0.0)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 1 / 3, 1.0])
def test_the_fault_knob_fails_an_exact_evenly_spread_share(fraction: float) -> None:
    failed = [m.injected_fault(i, fraction) for i in range(300)]
    for n in (1, 7, 40, 300):  # every prefix has exactly floor(n * fraction) failures
        assert sum(failed[:n]) == int(n * fraction)
    assert m.fault_fraction({"fault_error_fraction": str(fraction)}) == pytest.approx(fraction)
    assert m.fault_fraction({}) == 0.0


def test_the_fault_knob_rejects_a_share_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="not in"):
        m.fault_fraction({"fault_error_fraction": "1.5"})
