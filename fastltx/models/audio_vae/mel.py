"""The audio VAE's front end: a waveform at any rate -> the log mel its encoder expects.

Resample to the VAE's rate (16 kHz) with SciPy's polyphase filter, then the Slaney log mel
(n_fft 1024, hop 160, 64 bins, Hann, centred, reflect padding, log(max(x, 1e-5))) per channel.
"""

import math

import torch

from fastltx.layers.mel import log_mel_spectrogram
from fastltx.media.audio import resample
from fastltx.models.audio_vae.config import LATENT_DOWNSAMPLE, AudioVAEConfig


def waveform_to_mel(waveform: torch.Tensor, sample_rate: int, cfg: AudioVAEConfig) -> torch.Tensor:
    """(channels, samples) or (B, channels, samples) -> float32 (B, channels, frames, mel_bins)."""
    if cfg.mel_bins is None:
        raise ValueError("the audio VAE config does not say how many mel bins its encoder takes")
    if waveform.ndim == 2:
        waveform = waveform.unsqueeze(0)
    waveform = resample(waveform, sample_rate, cfg.sample_rate)
    return log_mel_spectrogram(waveform, cfg.sample_rate, cfg.n_fft, cfg.mel_hop_length, cfg.mel_bins)


def latent_frames(samples: int, sample_rate: int, cfg: AudioVAEConfig) -> int:
    """How many latent frames the encoder makes of ``samples`` samples at ``sample_rate`` (without
    running anything): resampled length ceil(n * up / down), centred mel frames, 4x downsampling."""
    g = math.gcd(int(sample_rate), int(cfg.sample_rate))
    resampled = -(-samples * (cfg.sample_rate // g) // (int(sample_rate) // g))
    return (resampled // cfg.mel_hop_length) // LATENT_DOWNSAMPLE + 1
