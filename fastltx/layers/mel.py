"""Mel spectrograms: the Slaney mel filterbank and a log-magnitude mel of a waveform.

Definitions (Slaney's Auditory Toolbox, as librosa and torchaudio name "slaney"):
* mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above it (27 mels per factor 6.4);
* filters: triangles between consecutive points of ``n_mels + 2`` equally spaced mels from
  ``f_min`` to ``f_max``, evaluated at the FFT bin frequencies ``linspace(0, sr/2, n_fft//2 + 1)``;
* "slaney" area normalisation: each triangle is scaled by 2 / (its upper edge - its lower edge) in Hz.

The spectrogram is the magnitude (power 1) of a centred STFT with a periodic Hann window of
``n_fft`` samples and reflect padding, projected on the filters, then ``log(max(mel, floor))``.
"""

import functools
import math

import numpy as np
import torch

_F_SP = 200.0 / 3  # Hz per mel in the linear region
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mels
_LOG_STEP = math.log(6.4) / 27.0  # mels are log-spaced above 1 kHz: 27 mels per factor 6.4


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_part = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, mel * _F_SP)


@functools.lru_cache(maxsize=8)
def _filters_np(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lo) / (mid - lo)
    falling = (hi - bins[None, :]) / (hi - mid)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return triangles * (2.0 / (hi - lo))


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                       f_max: float | None = None) -> torch.Tensor:
    """The (n_mels, n_fft//2 + 1) Slaney filterbank, computed in float64 and returned in float32."""
    f_max = sample_rate / 2 if f_max is None else f_max
    return torch.from_numpy(_filters_np(int(sample_rate), int(n_fft), int(n_mels), float(f_min), float(f_max))).float()


def log_mel_spectrogram(waveform: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
                        floor: float = 1e-5) -> torch.Tensor:
    """log(max(mel, floor)) of a (..., samples) float waveform -> (..., frames, n_mels), in float32.

    Frames are centred (reflect padding of n_fft/2 on both sides): frames = samples // hop + 1.
    """
    lead = waveform.shape[:-1]
    flat = waveform.reshape(-1, waveform.shape[-1]).float()
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float32, device=flat.device)
    spec = torch.stft(flat, n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True).abs()
    filters = slaney_mel_filters(sample_rate, n_fft, n_mels).to(flat.device)
    mel = torch.matmul(spec.transpose(-1, -2), filters.T)  # (N, frames, n_mels)
    return torch.log(torch.clamp(mel, min=floor)).reshape(*lead, mel.shape[-2], n_mels)
