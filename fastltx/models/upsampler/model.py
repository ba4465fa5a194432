"""The latent upsampler: latents (B, 128, F, H, W) in the VAE's own (un-normalised) scale -> larger.

Conv(3) -> GroupNorm -> SiLU -> resnets -> upsampler -> resnets -> Conv(3). Upsamplers:
spatial x2 (per-frame Conv2d to 4x channels, then pixel shuffle), rational (per-frame Conv2d to
num^2 x channels, pixel shuffle by num, then a fixed binomial blur with stride den: x1.5 = 3/2),
temporal x2 (Conv3d to 2x channels, depth-to-space in time, first frame dropped) and both at once
(Conv3d to 8x channels). State-dict names follow the official files (``initial_conv``,
``res_blocks.N``, ``upsampler.0`` or ``upsampler.conv`` / ``upsampler.blur_down.kernel``,
``post_upsample_res_blocks.N``, ``final_conv``).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastltx.layers.conv import depth_to_space
from fastltx.models.upsampler.config import GROUPS, RATIONAL_SCALES, UpsamplerConfig


def _conv(dims: int, cin: int, cout: int) -> nn.Module:
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(cin, cout, kernel_size=3, padding=1)


def _frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def _batch_to_frames(x: torch.Tensor, b: int) -> torch.Tensor:
    bf, c, h, w = x.shape
    return x.reshape(b, bf // b, c, h, w).permute(0, 2, 1, 3, 4)


class ResBlock(nn.Module):
    """conv1 -> GroupNorm -> SiLU -> conv2 -> GroupNorm -> SiLU(+ input)."""

    def __init__(self, channels: int, dims: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(dims, channels, channels), _conv(dims, channels, channels)
        self.norm1, self.norm2 = nn.GroupNorm(GROUPS, channels), nn.GroupNorm(GROUPS, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(h)) + x)


class PixelShuffle(nn.Module):
    """Depth-to-space over the last ``dims`` axes by 2 (``dims`` 1: time only, 2: space, 3: all)."""

    def __init__(self, dims: int, factor: int = 2):
        super().__init__()
        self.dims, self.factor = dims, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 2:
            return F.pixel_shuffle(x, self.factor)
        return depth_to_space(x, (self.factor, 1, 1) if self.dims == 1 else (self.factor,) * 3)


class BlurDownsample(nn.Module):
    """A fixed normalised binomial blur (buffer ``kernel``, stored in the file) applied with a stride."""

    def __init__(self, stride: int, size: int = 5):
        super().__init__()
        self.stride, self.size = stride, size
        k = torch.tensor([math.comb(size - 1, i) for i in range(size)])
        k2 = k[:, None] @ k[None, :]
        self.register_buffer("kernel", (k2 / k2.sum()).float()[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x
        c = x.shape[1]
        return F.conv2d(x, self.kernel.expand(c, 1, self.size, self.size), stride=self.stride, padding=self.size // 2,
                        groups=c)


class RationalResampler(nn.Module):
    """Per-frame spatial scaling by num/den: conv, pixel shuffle by num, blur-downsample by den."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.num, self.den = RATIONAL_SCALES[float(scale)]
        self.conv = nn.Conv2d(channels, self.num ** 2 * channels, kernel_size=3, padding=1)
        self.pixel_shuffle = PixelShuffle(2, self.num)
        self.blur_down = BlurDownsample(self.den)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur_down(self.pixel_shuffle(self.conv(x)))


class LatentUpsampler(nn.Module):
    def __init__(self, cfg: UpsamplerConfig):
        super().__init__()
        self.cfg = cfg
        mid, dims = cfg.mid_channels, cfg.dims
        self.initial_conv = _conv(dims, cfg.in_channels, mid)
        self.initial_norm = nn.GroupNorm(GROUPS, mid)
        self.res_blocks = nn.ModuleList(ResBlock(mid, dims) for _ in range(cfg.num_blocks_per_stage))
        if cfg.spatial_upsample and cfg.temporal_upsample:
            self.upsampler = nn.Sequential(nn.Conv3d(mid, 8 * mid, kernel_size=3, padding=1), PixelShuffle(3))
        elif cfg.rational:
            self.upsampler = RationalResampler(mid, cfg.spatial_scale)
        elif cfg.spatial_upsample:
            self.upsampler = nn.Sequential(nn.Conv2d(mid, 4 * mid, kernel_size=3, padding=1), PixelShuffle(2))
        else:
            self.upsampler = nn.Sequential(nn.Conv3d(mid, 2 * mid, kernel_size=3, padding=1), PixelShuffle(1))
        self.post_upsample_res_blocks = nn.ModuleList(ResBlock(mid, dims) for _ in range(cfg.num_blocks_per_stage))
        self.final_conv = _conv(dims, mid, cfg.in_channels)

    def check_latent(self, latent: torch.Tensor) -> None:
        c = self.cfg.in_channels
        if latent.ndim != 5 or latent.shape[1] != c:
            raise ValueError(f"expected a latent of shape (B, {c}, F, H, W), got {tuple(latent.shape)}")

    def _stage(self, x: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:
        for block in blocks:
            x = block(x)
        return x

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Upsample an un-normalised latent (see ``upsample_latent`` for normalised ones)."""
        self.check_latent(latent)
        b = latent.shape[0]
        frame_wise = self.cfg.dims == 2
        x = _frames_to_batch(latent) if frame_wise else latent
        x = self._stage(F.silu(self.initial_norm(self.initial_conv(x))), self.res_blocks)
        if frame_wise or self.cfg.temporal_upsample:
            x = self.upsampler(x)
            if self.cfg.temporal_upsample:
                x = x[:, :, 1:]  # the first latent frame stands for one pixel frame
        else:
            x = _batch_to_frames(self.upsampler(_frames_to_batch(x)), b)
        x = self.final_conv(self._stage(x, self.post_upsample_res_blocks))
        return _batch_to_frames(x, b) if frame_wise else x
