"""Anti-aliased periodic activations (BigVGAN v2) and the sinc resampler of the LTX-2.3 vocoder.

``Activation1d``: upsample x2 (transposed depthwise conv with a Kaiser-windowed sinc, replicate
padding) -> SnakeBeta -> low-pass and decimate x2. Its two 12-tap filters are buffers stored in the
checkpoints (``upsample.filter``, ``downsample.lowpass.filter``) and loaded from them;
``kaiser_sinc_filter`` gives their true values (the tiny-model factory writes them).
``SincResampler``: integer-ratio upsampling with a Hann-windowed sinc (6 zero crossings, roll-off
0.99), computed in float32 at construction as the reference does (not stored in checkpoints).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

KERNEL = 12  # taps of the activation's up- and down-sampling filters
EPS = 1e-9


def kaiser_sinc_filter(cutoff: float, half_width: float, taps: int) -> torch.Tensor:
    """(1, 1, taps) low-pass: sinc at ``cutoff`` (cycles/sample) under a Kaiser window whose beta
    follows Kaiser's formula for a transition band of 2 * half_width; normalised to unit DC gain."""
    half = taps // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    t = np.arange(-half, half) + 0.5 if taps % 2 == 0 else np.arange(taps) - half
    h = 2 * cutoff * np.kaiser(taps, beta) * np.sinc(2 * cutoff * t)
    return torch.from_numpy(h / h.sum()).float().view(1, 1, taps)


class SnakeBeta(nn.Module):
    """x + sin(a x)^2 / b with per-channel a = exp(alpha), b = exp(beta) (log-scale parameters)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(self.alpha)[None, :, None]
        beta = torch.exp(self.beta)[None, :, None]
        return x + (1.0 / (beta + EPS)) * torch.sin(x * alpha).pow(2)


class UpSample1d(nn.Module):
    """x2 upsampling: replicate padding, transposed depthwise conv with the stored filter, crop."""

    def __init__(self, ratio: int = 2, taps: int = KERNEL):
        super().__init__()
        if ratio & (ratio - 1):
            raise ValueError(f"the activation upsampler needs a power-of-two ratio, got {ratio}")
        self.ratio = ratio
        self.pad = taps // ratio - 1
        self.crop_left = self.pad * ratio + (taps - ratio) // 2
        self.crop_right = self.pad * ratio + (taps - ratio + 1) // 2
        self.register_buffer("filter", torch.zeros(1, 1, taps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        # ratio * conv(x, f) == conv(x, ratio * f) bit for bit (a power-of-two scale): one pass less.
        filt = (self.filter.to(x.dtype) * self.ratio).expand(c, -1, -1)
        y = F.conv_transpose1d(F.pad(x, (self.pad, self.pad), mode="replicate"), filt, stride=self.ratio, groups=c)
        return y[..., self.crop_left: -self.crop_right]


class LowPassFilter1d(nn.Module):
    def __init__(self, stride: int = 2, taps: int = KERNEL):
        super().__init__()
        self.stride = stride
        self.pad_left, self.pad_right = taps // 2 - (taps % 2 == 0), taps // 2
        self.register_buffer("filter", torch.zeros(1, 1, taps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(c, -1, -1), stride=self.stride, groups=c)


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, taps: int = KERNEL):
        super().__init__()
        self.lowpass = LowPassFilter1d(ratio, taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class Activation1d(nn.Module):
    """Anti-aliased SnakeBeta (keys ``act.alpha``, ``act.beta``, ``upsample.filter``,
    ``downsample.lowpass.filter``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = UpSample1d()
        self.downsample = DownSample1d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


def hann_sinc_filter(ratio: int, zero_crossings: int = 6, rolloff: float = 0.99) -> torch.Tensor:
    """(1, 1, 2 * width * ratio + 1) interpolation filter, in float32 with the reference's op order."""
    width = math.ceil(zero_crossings / rolloff)
    t = (torch.arange(2 * width * ratio + 1) / ratio - width) * rolloff
    window = torch.cos(t.clamp(-zero_crossings, zero_crossings) * math.pi / zero_crossings / 2) ** 2
    return (torch.sinc(t) * window * rolloff / ratio).view(1, 1, -1)


class SincResampler(nn.Module):
    """Integer-ratio upsampling with the Hann-windowed sinc (a non-persistent buffer)."""

    def __init__(self, ratio: int, zero_crossings: int = 6, rolloff: float = 0.99):
        super().__init__()
        self.ratio = ratio
        self.pad = math.ceil(zero_crossings / rolloff)
        with torch.device("cpu"):  # real values even when the model is built on the meta device
            filt = hann_sinc_filter(ratio, zero_crossings, rolloff)
        self.crop_left, self.crop_right = 2 * self.pad * ratio, filt.shape[-1] - ratio
        self.register_buffer("filter", filt, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        filt = self.filter.to(dtype=x.dtype, device=x.device).expand(c, -1, -1)
        y = self.ratio * F.conv_transpose1d(F.pad(x, (self.pad, self.pad), mode="replicate"), filt,
                                            stride=self.ratio, groups=c)
        return y[..., self.crop_left: -self.crop_right]
