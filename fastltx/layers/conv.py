"""Convolution helpers for video networks: frame-padded 3-D convolutions, space/depth rearrangements.

``CausalConv3d`` pads time by replicating edge frames (the first frame k-1 times in front when
causal; (k-1)/2 copies of the first and last frames otherwise) and space by ``spatial_padding_mode``
(zeros, reflect, replicate or circular, applied by ``nn.Conv3d`` itself). It can run streamed over
temporal chunks (``fastltx.layers.streaming``) when its temporal stride is 1, and apply a
``NormAct`` to its input first. On CUDA with channels-last weights that activation and the padding
run as one fused kernel writing the buffer the convolution reads (``fastltx.layers.fused_video``),
and ``forward_unbiased`` can leave the bias to whatever kernel reads the output next (PyTorch adds
a convolution's bias in a pass of its own).
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastltx.layers import fused_video
from fastltx.layers.norm_act import NormAct
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

    def forward(self, x: torch.Tensor, causal: bool = True, stream: TemporalStream | None = None,
                act: NormAct | None = None) -> torch.Tensor:
        """Convolve ``x`` (after ``act``, when given) with the temporal padding of ``causal``."""
        y, bias = self.forward_unbiased(x, causal, stream, act)
        return y if bias is None else y.add_(bias.view(1, -1, 1, 1, 1))  # as PyTorch adds a cuDNN conv's bias

    def forward_unbiased(self, x: torch.Tensor, causal: bool = True, stream: TemporalStream | None = None,
                         act: NormAct | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``forward``, except that the fused path returns its output without the bias and the bias to add
        (per output channel); the eager path returns the complete output and None."""
        if fused_video.conv_usable(x, self.conv):
            return self._forward_fused(x, causal, stream, act), self.conv.bias
        return self._forward_eager(x, causal, stream, act), None

    def _forward_eager(self, x: torch.Tensor, causal: bool, stream: TemporalStream | None,
                       act: NormAct | None) -> torch.Tensor:
        if act is not None:
            x = act.eager(x)
        k = self.kernel_size
        front, back = self._temporal_padding(causal)
        if stream is None:
            return self.conv(pad_frames(x, front, back))
        self._check_streamable()
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

    def _temporal_padding(self, causal: bool) -> tuple[int, int]:
        k = self.kernel_size
        return (k - 1, 0) if causal else ((k - 1) // 2, (k - 1) // 2)

    def _check_streamable(self) -> None:
        if self.conv.stride[0] != 1:
            raise ValueError("a temporally strided convolution cannot run streamed")

    def _forward_fused(self, x: torch.Tensor, causal: bool, stream: TemporalStream | None,
                       act: NormAct | None) -> torch.Tensor:
        """The same computation with the input built by one kernel: activation, spatial padding (zeros are
        left to the convolution) and temporal padding or the frames carried from the previous chunk."""
        k, mode = self.kernel_size, self.conv.padding_mode
        pad = 0 if mode == "zeros" else self.conv.padding[1]
        front, back = self._temporal_padding(causal)
        if stream is None:
            return self._conv_prepadded(fused_video.norm_act_pad(x, act, front, back, pad, mode))
        self._check_streamable()
        if self in stream.finished:
            return self._empty(x)
        held = stream.carry.pop(self, None)
        if held is None and frames(x) == 0:
            return self._empty(x)
        ending = self in stream.ending
        padded = fused_video.norm_act_pad(x, act, front if held is None else 0, back if ending else 0, pad, mode,
                                          lead=held)
        if ending:
            stream.finished.add(self)
        else:
            stream.carry[self] = padded[:, :, frames(padded) - (k - 1):].clone()
        return self._conv_prepadded(padded) if frames(padded) >= k else self._empty(x)

    def _conv_prepadded(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution, without its bias, on an input that carries its own padding (all but zeros,
        which cuDNN adds)."""
        conv = self.conv
        pad = conv.padding[1] if conv.padding_mode == "zeros" else 0
        return F.conv3d(x, conv.weight, None, conv.stride, (0, pad, pad))

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
