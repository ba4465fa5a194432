"""Convolution helpers for video networks: frame-padded 3-D convolutions, space/depth rearrangements.

``CausalConv3d`` pads time by replicating edge frames (the first frame k-1 times in front when
causal; (k-1)/2 copies of the first and last frames otherwise) and space by ``spatial_padding_mode``
(zeros, reflect, replicate or circular, applied by ``nn.Conv3d`` itself). It can run streamed over
temporal chunks (``fastltx.layers.streaming``) when its temporal stride is 1.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastltx.layers.streaming import TemporalStream, frames

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def pad_frames(x: torch.Tensor, front: int, back: int) -> torch.Tensor:
    """Replicate the first frame ``front`` times before and the last frame ``back`` times after."""
    parts = []
    if front:
        parts.append(x[:, :, :1].expand(-1, -1, front, -1, -1))
    parts.append(x)
    if back:
        parts.append(x[:, :, -1:].expand(-1, -1, back, -1, -1))
    return torch.cat(parts, dim=2) if len(parts) > 1 else x


class CausalConv3d(nn.Module):
    """Conv3d (state-dict key ``conv``) with replicated-frame temporal padding; see the module docstring."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int | tuple[int, int, int] = 1, spatial_padding_mode: str = "zeros"):
        super().__init__()
        if spatial_padding_mode not in PADDING_MODES:
            raise ValueError(f"spatial_padding_mode must be one of {PADDING_MODES}, got {spatial_padding_mode!r}")
        self.kernel_size = kernel_size
        pad = kernel_size // 2
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=(0, pad, pad),
                              padding_mode=spatial_padding_mode)

    def forward(self, x: torch.Tensor, causal: bool = True, stream: TemporalStream | None = None) -> torch.Tensor:
        k = self.kernel_size
        front, back = (k - 1, 0) if causal else ((k - 1) // 2, (k - 1) // 2)
        if stream is None:
            return self.conv(pad_frames(x, front, back))
        if self.conv.stride[0] != 1:
            raise ValueError("a temporally strided convolution cannot run streamed")
        if self in stream.finished:
            return self._empty(x)
        held = stream.carry.pop(self, None)
        if held is None:  # first frames: the front padding
            if frames(x) == 0:
                return self._empty(x)
            x = pad_frames(x, front, 0)
        else:
            x = torch.cat([held, x], dim=2)
        if self in stream.ending:  # the input is complete: the end padding, and nothing left to carry
            x = pad_frames(x, 0, back)
            stream.finished.add(self)
        else:  # the frames the next output frames still need
            stream.carry[self] = x[:, :, frames(x) - (k - 1):].clone()
        return self.conv(x) if frames(x) >= k else self._empty(x)

    def _empty(self, x: torch.Tensor) -> torch.Tensor:
        b, _, _, h, w = x.shape
        return x.new_empty((b, self.conv.out_channels, 0, h, w))


def space_to_depth(x: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, D*p1, H*p2, W*p3) -> (B, C*p1*p2*p3, D, H, W), channel index ((c*p1 + i)*p2 + j)*p3 + k."""
    b, c, d, h, w = x.shape
    p1, p2, p3 = stride
    x = x.reshape(b, c, d // p1, p1, h // p2, p2, w // p3, p3).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * p1 * p2 * p3, d // p1, h // p2, w // p3)


def depth_to_space(x: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
    """The inverse of ``space_to_depth``: (B, C*p1*p2*p3, D, H, W) -> (B, C, D*p1, H*p2, W*p3)."""
    b, c, d, h, w = x.shape
    p1, p2, p3 = stride
    c //= p1 * p2 * p3
    x = x.reshape(b, c, p1, p2, p3, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, d * p1, h * p2, w * p3)


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store every Conv2d / Conv3d weight channels-last (cuDNN's fast layout for bf16 convolutions).

    Convolutions then produce channels-last outputs; values are unchanged up to the convolution
    algorithm's accumulation order.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            fmt = torch.channels_last if isinstance(m, nn.Conv2d) else torch.channels_last_3d
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)
    return module


def silu_(x: torch.Tensor) -> torch.Tensor:
    """SiLU in place (the same rounding as ``F.silu``, without a second activation-sized buffer)."""
    return F.silu(x, inplace=True)
