"""Log-mel features of 16 kHz audio, the single definition training and inference share.

Frames are N_FFT (512) samples every HOP (160 = 10 ms) with a periodic Hann window of
WIN_LENGTH (400 = 25 ms) centred in them, no centre padding: exactly what
`torch.stft(x, 512, 160, window=hann(400) padded to 512, center=False)` computes, so the ONNX
model's built-in front end and this numpy version agree to float rounding.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 512
WIN_LENGTH = 400
HOP = 160
N_MELS = 64
F_MIN = 20.0
F_MAX = 7_600.0
LOG_FLOOR = 1e-6


def hann_window(n_fft: int = N_FFT, win_length: int = WIN_LENGTH) -> np.ndarray:
    """Periodic Hann of `win_length` zero-padded on both sides to `n_fft` (torch.stft's padding)."""
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(w, (left, n_fft - win_length - left)).astype(np.float32)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int = N_MELS,
    n_fft: int = N_FFT,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
) -> np.ndarray:
    """HTK-scale triangular filters, shape [n_fft // 2 + 1, n_mels] (peaks < 1 where bins are coarse)."""
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"mel_filterbank: need 0 <= f_min < f_max <= {sample_rate / 2}, got {f_min}, {f_max}"
        )
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(f_min)), _hz_to_mel(np.array(f_max)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32)


def num_frames(n_samples: int) -> int:
    """Frames `log_mel` yields for `n_samples` (audio shorter than one frame is zero-padded)."""
    return 1 + (max(n_samples, N_FFT) - N_FFT) // HOP


def as_float_audio(audio: np.ndarray) -> np.ndarray:
    """int16 PCM or float audio -> float32 in [-1, 1), 1-D."""
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"audio must be 1-D (mono samples), got shape {a.shape}")
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"audio must be int16 PCM or float, got dtype {a.dtype}")
    return a.astype(np.float32)


def log_mel(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Log-mel spectrogram [frames, N_MELS] (float32) of mono 16 kHz audio."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"sample_rate must be {SAMPLE_RATE} Hz, got {sample_rate} (resample first)")
    x = as_float_audio(audio)
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    spec = np.fft.rfft(frames * hann_window(), axis=-1)
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    return np.log(power @ mel_filterbank() + LOG_FLOOR).astype(np.float32)
