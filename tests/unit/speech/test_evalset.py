import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from stt_operator.speech.evalset import (
    DEFAULT_VOICES,
    SAMPLE_RATE,
    command_sentences,
    command_vocabulary,
    generate_evalset,
    load_evalset,
    plan_utterances,
    read_wav,
)
from stt_operator.speech.normalise import normalise_text


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_evalset(
        tmp_path_factory.mktemp("es") / "set", 8, seed=11, noise_snr_db=10, noisy_fraction=0.5
    )


def test_grammar_is_small_command_domain() -> None:
    vocab = command_vocabulary()
    assert 30 <= len(vocab) <= 70
    for s in command_sentences():
        assert 2 <= len(s.split()) <= 6
        assert normalise_text(s) == s


def test_plan_is_deterministic_and_seed_dependent() -> None:
    a = plan_utterances(40, 1, DEFAULT_VOICES, (150, 180), 0.5)
    assert a == plan_utterances(40, 1, DEFAULT_VOICES, (150, 180), 0.5)
    assert a != plan_utterances(40, 2, DEFAULT_VOICES, (150, 180), 0.5)
    assert len({p.voice for p in a}) >= 4


def test_same_seed_gives_identical_bytes(small_set: Path, tmp_path: Path) -> None:
    again = generate_evalset(tmp_path / "again", 8, seed=11, noise_snr_db=10, noisy_fraction=0.5)
    assert _digest(again) == _digest(small_set)
    other = generate_evalset(tmp_path / "other", 8, seed=12, noise_snr_db=10, noisy_fraction=0.5)
    assert (other / "manifest.jsonl").read_bytes() != (small_set / "manifest.jsonl").read_bytes()


def test_manifest_fields(small_set: Path) -> None:
    header = json.loads((small_set / "manifest.json").read_text())
    assert header["seed"] == 11
    assert header["normaliser_version"] == "v1"
    assert header["n_utterances"] == 8
    assert header["slices"]["clean"] + header["slices"]["noisy"] == 8
    lines = [json.loads(x) for x in (small_set / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 8
    for line in lines:
        assert {"id", "audio", "text", "speaker", "language", "slice", "duration_s"} <= set(line)
        assert line["language"] == "en-US"
        assert line["slice"] in ("clean", "noisy")
        assert line["speaker"] in DEFAULT_VOICES
        assert (small_set / line["audio"]).is_file()
        assert not Path(line["audio"]).is_absolute()
    assert {line["slice"] for line in lines} == {"clean", "noisy"}


def test_audio_format_and_load(small_set: Path) -> None:
    utts = load_evalset(small_set)
    assert len(utts) == 8
    for u in utts:
        assert u.sample_rate == SAMPLE_RATE
        assert u.audio.dtype == np.int16 and u.audio.ndim == 1
        assert abs(u.duration_s - len(u.audio) / SAMPLE_RATE) < 1e-3
        assert 0.4 < u.duration_s < 6.0
        # Real speech, not silence: peak near the -3 dBFS the generator normalises to.
        assert np.abs(u.audio).max() > 8000
        f = u.audio_float()
        assert f.dtype == np.float32 and np.abs(f).max() <= 1.0
    pcm, rate = read_wav(utts[0].path)
    assert rate == 16_000 and np.array_equal(pcm, utts[0].audio)
    # Loading through the header file or the lines file gives the same set.
    assert [u.id for u in load_evalset(small_set / "manifest.json")] == [u.id for u in utts]
    assert [u.id for u in load_evalset(small_set / "manifest.jsonl")] == [u.id for u in utts]


def test_noisy_slice_is_noisier(tmp_path: Path) -> None:
    clean = load_evalset(generate_evalset(tmp_path / "c", 3, seed=5))
    noisy = load_evalset(generate_evalset(tmp_path / "n", 3, seed=5, noise_snr_db=5))
    for c, n in zip(clean, noisy, strict=True):
        assert c.text == n.text and c.slice == "clean" and n.slice == "noisy"
        # Leading padding of the clean version is digital silence; the noisy one is not.
        head = slice(0, 1000)
        assert np.abs(c.audio[head]).max() < 50
        assert np.abs(n.audio[head]).mean() > 100
        # The added noise sits at the requested SNR against the speech's active power.
        speech = c.audio.astype(np.float64)
        residual = n.audio.astype(np.float64) - speech
        active = np.abs(speech) > 32
        snr = 10 * np.log10(np.mean(speech[active] ** 2) / np.mean(residual**2))
        assert 4.0 < snr < 6.0


def test_bad_manifest_names_field(small_set: Path, tmp_path: Path) -> None:
    lines = (small_set / "manifest.jsonl").read_text().splitlines()
    entry = json.loads(lines[0])
    entry["audio"] = str(small_set / entry["audio"])  # absolute path elsewhere
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.jsonl").write_text(json.dumps(entry) + "\n")
    with pytest.raises(ValueError, match=r"'audio'.*outside"):
        load_evalset(bad)
    del entry["text"]
    (bad / "manifest.jsonl").write_text(json.dumps(entry) + "\n")
    with pytest.raises(ValueError, match=r"manifest.jsonl:1: field 'text'"):
        load_evalset(bad)


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_utterances"):
        generate_evalset(tmp_path, 0)
    with pytest.raises(ValueError, match="speeds"):
        generate_evalset(tmp_path, 1, speeds=[10])
    with pytest.raises(ValueError, match="'no-such-voice-xx'"):
        generate_evalset(tmp_path, 1, voices=["no-such-voice-xx"])
    with pytest.raises(ValueError, match="variant 'nosuch'"):
        generate_evalset(tmp_path, 1, voices=["en-us+nosuch"])
