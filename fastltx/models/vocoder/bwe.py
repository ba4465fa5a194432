"""LTX-2.3's vocoder with bandwidth extension: 16 kHz base generator -> 48 kHz.

The base output is zero padded to a whole number of hops, its causal log mel (STFT and mel bases
loaded from the checkpoint: ``mel_stft.stft_fn.forward_basis``, ``inverse_basis`` (unused here) and
``mel_stft.mel_basis``) drives a second generator that predicts a residual, which is added to the
sinc-resampled base waveform; the sum is clamped to [-1, 1] and cut to ratio x the base length.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastltx.models.vocoder.antialias import SincResampler
from fastltx.models.vocoder.config import VocoderConfig
from fastltx.models.vocoder.generator import Generator


class STFTBases(nn.Module):
    def __init__(self, n_fft: int):
        super().__init__()
        rows = (n_fft // 2 + 1) * 2  # real parts of every frequency, then imaginary parts
        self.register_buffer("forward_basis", torch.zeros(rows, 1, n_fft))
        self.register_buffer("inverse_basis", torch.zeros(rows, 1, n_fft))


class CausalMel(nn.Module):
    """log(max(mel, 1e-5)) of a magnitude STFT whose frames only look back (left padding n_fft - hop)."""

    def __init__(self, n_fft: int, hop: int, n_mels: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.stft_fn = STFTBases(n_fft)
        self.register_buffer("mel_basis", torch.zeros(n_mels, n_fft // 2 + 1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(N, samples) -> (N, n_mels, samples // hop) for a whole number of hops."""
        y = F.pad(y.unsqueeze(1), (max(0, self.n_fft - self.hop), 0))
        spec = F.conv1d(y, self.stft_fn.forward_basis, stride=self.hop)
        n = spec.shape[1] // 2
        real, imag = spec[:, :n], spec[:, n:]
        magnitude = torch.sqrt(real**2 + imag**2)
        mel = torch.matmul(self.mel_basis.to(magnitude.dtype), magnitude)
        return torch.log(torch.clamp(mel, min=1e-5))


class VocoderWithBWE(nn.Module):
    def __init__(self, cfg: VocoderConfig):
        super().__init__()
        b = cfg.bwe
        self.cfg = cfg
        self.vocoder = Generator(cfg.generator)
        self.bwe_generator = Generator(b.generator)
        self.mel_stft = CausalMel(b.n_fft, b.hop_length, b.num_mels)
        self.ratio = b.output_sampling_rate // b.input_sampling_rate
        self.resampler = SincResampler(self.ratio)

    @property
    def output_sampling_rate(self) -> int:
        return self.cfg.bwe.output_sampling_rate

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 2, T, 64) log mel -> (B, 2, T * base hop * ratio) waveform in [-1, 1]."""
        x = self.vocoder(mel)
        length = x.shape[-1]
        hop = self.cfg.bwe.hop_length
        if length % hop:
            x = F.pad(x, (0, hop - length % hop))
        b, c, n = x.shape
        bwe_mel = self.mel_stft(x.reshape(b * c, n))
        bwe_mel = bwe_mel.reshape(b, c, bwe_mel.shape[1], bwe_mel.shape[2]).transpose(2, 3)
        residual = self.bwe_generator(bwe_mel)
        return torch.clamp(residual + self.resampler(x), -1, 1)[..., : length * self.ratio]
