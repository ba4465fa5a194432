"""The mel front end against independent implementations of the same definition.

librosa's Slaney mel (power 1, Hann, centred, reflect padding) is the independent implementation
here: bound 1e-4 relative (max |ours - ref| / max |ref| on the log mel; measured 5.6e-7). Where a
working torchaudio is installed (not on the CPU machines: it does not load on torch 2.13), the
reference's own ``AudioProcessor`` is compared end to end at 16 kHz too.
"""

import numpy as np
import pytest
import torch

from fastltx.layers.mel import log_mel_spectrogram, slaney_mel_filters
from fastltx.media.audio import resample
from fastltx.models.audio_vae import AudioVAEConfig, waveform_to_mel
from tests.helpers import max_rel_error
from tests.parity.audio_reference import real_torchaudio

pytestmark = pytest.mark.parity
BOUND = 1e-4
CFG = AudioVAEConfig()  # 16 kHz, n_fft 1024, hop 160, 64 bins


def signal(rate: int, seconds: float = 1.0, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    """Stereo test signal (2, samples): tones below 6 kHz plus white noise (so no mel bin is empty)."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 5000 * t)
    right = 0.2 * np.sin(2 * np.pi * 3100 * t + 1) + 0.05 * np.sin(2 * np.pi * 150 * t)
    x = np.stack([left, right]) + noise * rng.standard_normal((2, len(t)))
    return torch.from_numpy(x.astype(np.float32))


def librosa_log_mel(x: torch.Tensor, **overrides) -> torch.Tensor:
    librosa = pytest.importorskip("librosa")
    args = dict(sr=16000, n_fft=1024, hop_length=160, win_length=1024, window="hann", center=True,
                pad_mode="reflect", power=1.0, n_mels=64, fmin=0.0, fmax=8000.0, htk=False, norm="slaney")
    args.update(overrides)
    mel = librosa.feature.melspectrogram(y=x.numpy(), **args)
    return torch.from_numpy(np.log(np.maximum(mel, 1e-5))).transpose(-1, -2)


def test_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0, htk=False, norm="slaney",
                              dtype=np.float64)
    assert max_rel_error(slaney_mel_filters(16000, 1024, 64), torch.from_numpy(ref)) <= 1e-6


@pytest.mark.parametrize("seconds", [1.0, 0.37])
def test_log_mel_matches_librosa(seconds):
    x = signal(16000, seconds)
    ours = waveform_to_mel(x, 16000, CFG)
    ref = librosa_log_mel(x)
    frames = int(16000 * seconds) // 160 + 1
    assert ours.shape == (1, 2, frames, 64) and ours.dtype == torch.float32
    assert max_rel_error(ours[0], ref) <= BOUND


def test_silence_hits_the_floor():
    assert torch.equal(waveform_to_mel(torch.zeros(2, 1600), 16000, CFG), torch.full((1, 2, 11, 64), np.log(1e-5)))


def test_measure_catches_a_porting_error(monkeypatch):
    """Controls: a symmetric Hann window (2e-3) and the HTK mel scale (1.0) are both outside the bound."""
    x = signal(16000)
    ref = librosa_log_mel(x)
    assert max_rel_error(log_mel_spectrogram(x, 16000, 1024, 160, 64), librosa_log_mel(x, htk=True)) > BOUND
    hann = torch.hann_window
    monkeypatch.setattr(torch, "hann_window", lambda n, periodic=True, **kw: hann(n, periodic=False, **kw))
    assert max_rel_error(log_mel_spectrogram(x, 16000, 1024, 160, 64), ref) > BOUND


@pytest.mark.parametrize("rate", [48000, 44100, 22050])
def test_resampling_to_16k(rate):
    """SciPy's polyphase resampler reproduces the signal sampled at 16 kHz away from the edges
    (passband error ~3e-4 of a 0.4 amplitude), and the front end takes any rate."""
    clean = signal(rate, noise=0.0)
    y = resample(clean, rate, 16000)
    assert y.shape == (2, 16000)
    assert (y - signal(16000, noise=0.0))[:, 400:-400].abs().max() < 1e-3
    assert waveform_to_mel(clean, rate, CFG).shape == (1, 2, 101, 64)


def test_reference_audio_processor_end_to_end():
    if not real_torchaudio():
        pytest.skip("torchaudio is not importable here (the reference's AudioProcessor needs it)")
    from ltx_core.model.audio_vae import AudioProcessor
    from ltx_core.types import Audio

    x = signal(16000).unsqueeze(0)
    ref = AudioProcessor(target_sample_rate=16000, mel_bins=64, mel_hop_length=160, n_fft=1024).waveform_to_mel(
        Audio(waveform=x, sampling_rate=16000))
    ours = waveform_to_mel(x, 16000, CFG)
    assert ours.shape == ref.shape
    assert max_rel_error(ours, ref) <= BOUND
