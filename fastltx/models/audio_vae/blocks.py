"""Building blocks of the audio VAE: a 2-D network over (time, mel) images, causal along time.

Tensors are (B, C, T, F). Every 3x3 convolution pads two rows of zeros above (the past) and one
column on each side of the mel axis, so an output frame never sees a later input frame.
Normalisation is PixelNorm (RMS over channels, eps 1e-6); there are no learned norm weights.
Parameter names follow the official checkpoints (``conv1.conv.weight``, ``nin_shortcut.conv``, ...).
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastltx.layers.norm import pixel_norm

EPS = 1e-6


def norm(x: torch.Tensor) -> torch.Tensor:
    return pixel_norm(x, dim=1, eps=EPS)


class CausalConv2d(nn.Module):
    """Zero padding (k_w-1)//2 left, the rest right on the mel axis and k_t-1 rows before the
    first frame, then an unpadded convolution (key ``conv``)."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        pad = kernel - 1
        self.padding = (pad // 2, pad - pad // 2, pad, 0)
        self.conv = nn.Conv2d(cin, cout, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding) if any(self.padding) else x)


class PerChannelStatistics(nn.Module):
    """Latent statistics over the flattened (channel, mel bin) features: buffers ``mean-of-means``
    and ``std-of-means`` of length z_channels * latent_mel_bins."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("std-of-means", torch.empty(n))
        self.register_buffer("mean-of-means", torch.empty(n))

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, f = x.shape[1], x.shape[3]  # (B, C, T, F): feature c*F + f
        shape = (1, c, 1, f)
        return (self.get_buffer("mean-of-means").to(x).view(shape), self.get_buffer("std-of-means").to(x).view(shape))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x - mean) / std

    def un_normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return x * std + mean


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = CausalConv2d(cin, cout, 3)
        self.conv2 = CausalConv2d(cout, cout, 3)
        self.nin_shortcut = CausalConv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(norm(x)))
        h = self.conv2(F.silu(norm(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all (time, mel) positions with 1x1-conv projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = norm(x)
        b, c, t, f = x.shape
        # The reference's op order and memory layouts (contiguous operands: the matmuls round alike).
        q = self.q(h).reshape(b, c, t * f).permute(0, 2, 1).contiguous()
        k = self.k(h).reshape(b, c, t * f).contiguous()
        v = self.v(h).reshape(b, c, t * f).contiguous()
        w = torch.softmax(torch.bmm(q, k) * c ** (-0.5), dim=2)
        out = torch.bmm(v, w.permute(0, 2, 1).contiguous()).reshape(b, c, t, f)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution after padding one column right and two rows before the first frame."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 2, 0)))


class Upsample(nn.Module):
    """Nearest x2 on both axes, a causal 3x3 convolution, then drop the first frame (T -> 2T - 1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv2d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))[:, :, 1:, :]


class Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (empty or one per block) and an
    optional ``downsample`` / ``upsample``."""

    def __init__(self, channels: list[tuple[int, int]], attention: bool, resample: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(i, o) for i, o in channels)
        self.attn = nn.ModuleList(AttnBlock(o) for _, o in channels) if attention else nn.ModuleList()
        self.resample_name = name if resample is not None else None
        if resample is not None:
            self.add_module(name, resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        return x if self.resample_name is None else getattr(self, self.resample_name)(x)


class MidBlock(nn.Module):
    def __init__(self, channels: int, attention: bool):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels) if attention else None
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block_1(x)
        if self.attn_1 is not None:
            x = self.attn_1(x)
        return self.block_2(x)
