import numpy as np
import pytest

from stt_operator.speech.features import (
    HOP,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    hann_window,
    log_mel,
    mel_filterbank,
    num_frames,
)


def test_shapes_and_frame_count() -> None:
    for n in (100, N_FFT, N_FFT + HOP - 1, N_FFT + HOP, SAMPLE_RATE):
        feats = log_mel(np.zeros(n, dtype=np.float32))
        assert feats.shape == (num_frames(n), N_MELS)
        assert feats.dtype == np.float32
    assert num_frames(SAMPLE_RATE) == 1 + (SAMPLE_RATE - N_FFT) // HOP == 97


def test_window_is_25ms_hann_centred_in_frame() -> None:
    w = hann_window()
    assert w.shape == (N_FFT,)
    nonzero = np.flatnonzero(w)
    assert nonzero[0] == 57 and nonzero[-1] == 455  # 400-sample Hann at offset 56; its first sample is 0
    assert w.max() == pytest.approx(1.0)


def test_filterbank_covers_band_with_unit_peaks() -> None:
    fb = mel_filterbank()
    assert fb.shape == (N_FFT // 2 + 1, N_MELS)
    assert np.all(fb >= 0)
    assert np.all(fb.max(axis=0) > 0.3)  # no empty filter, even where FFT bins are coarse
    centres = fb.argmax(axis=0)
    assert np.all(np.diff(centres) >= 0)  # ordered low to high


def test_tone_lands_in_the_right_mel_bin() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low = log_mel((0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))
    high = log_mel((0.5 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32))
    assert low.mean(axis=0).argmax() < high.mean(axis=0).argmax()
    fb = mel_filterbank()
    assert low.mean(axis=0).argmax() == fb[round(300 / (SAMPLE_RATE / N_FFT))].argmax()


def test_matches_direct_dft_and_int16_input() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(3000) * 0.1).astype(np.float32)
    frame = x[HOP : HOP + N_FFT] * hann_window()
    k = np.arange(N_FFT // 2 + 1)[:, None]
    dft = np.exp(-2j * np.pi * k * np.arange(N_FFT)[None, :] / N_FFT) @ frame
    expected = np.log(np.abs(dft) ** 2 @ mel_filterbank() + 1e-6)
    assert np.allclose(log_mel(x)[1], expected, atol=1e-3)
    pcm = (x * 32768).astype(np.int16)
    assert np.allclose(log_mel(pcm), log_mel(pcm.astype(np.float32) / 32768.0))


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        log_mel(np.zeros(1000, dtype=np.float32), sample_rate=8000)
    with pytest.raises(ValueError, match="1-D"):
        log_mel(np.zeros((2, 1000), dtype=np.float32))
    with pytest.raises(ValueError, match="dtype"):
        log_mel(np.zeros(1000, dtype=np.int32))
