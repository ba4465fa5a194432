"""The video VAE's blocks: resnets (optionally timestep-modulated), resnet stacks, and the
space-to-depth downsampler / depth-to-space upsampler that change scale.

State-dict names follow the official checkpoints (``res_blocks.N.conv1.conv.weight``,
``time_embedder.timestep_embedder.linear_1.weight``, ``conv.conv.weight`` ...). Every block takes
``causal`` (temporal padding rule) and, where it mixes frames, an optional ``TemporalStream``.
"""

import torch
from torch import nn

from fastltx.layers import fused_video
from fastltx.layers.conv import CausalConv3d, depth_to_space, space_to_depth
from fastltx.layers.embeddings import TimestepEmbedder
from fastltx.layers.norm_act import NormAct
from fastltx.layers.streaming import TemporalStream, align, drop_first_frame

NORM_EPS = 1e-6  # GroupNorm on channel-changing shortcuts (PixelNorm keeps its own 1e-8)


class TimeEmbedder(nn.Module):
    """Sinusoid -> MLP embedding of the decode timestep (key path ``timestep_embedder.linear_1`` ...)."""

    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B,) timesteps (or one for all) -> (B, dim, 1, 1, 1)."""
        embedded = self.timestep_embedder(t.reshape(-1), dtype)
        return embedded.view(embedded.shape[0], -1, 1, 1, 1)


def modulation(table: torch.Tensor, embedded: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rows of ``table`` (R, C) plus the embedded timestep (B, R*C, 1, 1, 1), split into R (B, C, 1, 1, 1)."""
    rows = table.shape[0]
    values = table[None, :, :, None, None, None].to(dtype=like.dtype) + embedded.reshape(
        embedded.shape[0], rows, -1, 1, 1, 1)
    return values.unbind(dim=1)


def _with_bias(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x if bias is None else x.add_(bias.view(1, -1, 1, 1, 1))


class ResnetBlock3D(nn.Module):
    """PixelNorm -> [AdaLN] -> SiLU -> conv1 -> [noise] -> PixelNorm -> [AdaLN] -> SiLU -> conv2 -> [noise],
    plus the input (through GroupNorm(1) and a 1x1x1 conv when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int, padding: str, timestep_conditioning: bool = False,
                 inject_noise: bool = False):
        super().__init__()
        self.timestep_conditioning, self.inject_noise = timestep_conditioning, inject_noise
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, spatial_padding_mode=padding)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, spatial_padding_mode=padding)
        if inject_noise:
            self.per_channel_scale1 = nn.Parameter(torch.zeros(in_channels, 1, 1))
            self.per_channel_scale2 = nn.Parameter(torch.zeros(in_channels, 1, 1))
        self.changes_width = in_channels != out_channels
        if self.changes_width:
            self.norm3 = nn.GroupNorm(1, in_channels, eps=NORM_EPS, affine=True)
            self.conv_shortcut = nn.Conv3d(in_channels, out_channels, kernel_size=1)
        if timestep_conditioning:
            self.scale_shift_table = nn.Parameter(torch.zeros(4, in_channels))

    def _noise(self, h: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Add one spatial noise image (the same for every frame and sample), scaled per channel."""
        noise = torch.randn(h.shape[-2:], device=h.device, dtype=h.dtype, generator=generator)[None]
        return h + (noise * scale.to(device=h.device, dtype=h.dtype))[None, :, None]

    def forward(self, x: torch.Tensor, causal: bool, embedded: torch.Tensor | None = None,
                generator: torch.Generator | None = None, stream: TemporalStream | None = None) -> torch.Tensor:
        act1 = act2 = NormAct()
        if self.timestep_conditioning:
            if embedded is None:
                raise ValueError("this resnet is timestep-conditioned: an embedded timestep is required")
            shift1, scale1, shift2, scale2 = modulation(self.scale_shift_table, embedded, x)
            act1, act2 = NormAct(scale1, shift1), NormAct(scale2, shift2)
        # PixelNorm -> [AdaLN] -> SiLU -> conv, twice; a fused convolution leaves its bias to the next kernel
        h, bias = self.conv1.forward_unbiased(x, causal, stream, act1)
        if self.inject_noise:
            h = self._noise(_with_bias(h, bias), self.per_channel_scale1, generator)
            bias = None
        h, bias = self.conv2.forward_unbiased(h, causal, stream, act2.with_bias(bias))
        if self.inject_noise:
            h = self._noise(_with_bias(h, bias), self.per_channel_scale2, generator)
            bias = None
        skip = self.conv_shortcut(self.norm3(x)) if self.changes_width else x
        # in place: h is this block's own buffer
        return fused_video.add_bias_residual_(h, bias, align(stream, self, skip, h.shape[2]))


class ResStack(nn.Module):
    """``res_x``: ``num_layers`` resnets of one width, sharing one timestep embedding (``time_embedder``)."""

    def __init__(self, channels: int, num_layers: int, padding: str, timestep_conditioning: bool = False,
                 inject_noise: bool = False):
        super().__init__()
        self.timestep_conditioning = timestep_conditioning
        if timestep_conditioning:
            self.time_embedder = TimeEmbedder(4 * channels)
        self.res_blocks = nn.ModuleList(
            ResnetBlock3D(channels, channels, padding, timestep_conditioning, inject_noise) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, causal: bool, timestep: torch.Tensor | None = None,
                generator: torch.Generator | None = None, stream: TemporalStream | None = None) -> torch.Tensor:
        embedded = None
        if self.timestep_conditioning:
            if timestep is None:
                raise ValueError("this block is timestep-conditioned: a timestep is required")
            embedded = self.time_embedder(timestep, x.dtype)
        for block in self.res_blocks:
            x = block(x, causal, embedded, generator, stream)
        return x


class SpaceToDepthDownsample(nn.Module):
    """``compress_*_res``: conv to out/prod(stride) channels then space-to-depth, plus the input's
    space-to-depth averaged over channel groups. A temporal stride duplicates frame 0 first."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int], padding: str):
        super().__init__()
        self.stride = stride
        volume = stride[0] * stride[1] * stride[2]
        self.group_size = in_channels * volume // out_channels
        self.conv = CausalConv3d(in_channels, out_channels // volume, 3, spatial_padding_mode=padding)

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        if self.stride[0] == 2:
            x = torch.cat([x[:, :, :1], x], dim=2)
        skip = space_to_depth(x, self.stride)
        b, c, d, h, w = skip.shape
        skip = skip.view(b, c // self.group_size, self.group_size, d, h, w).mean(dim=2)
        return space_to_depth(self.conv(x, causal), self.stride) + skip


class DepthToSpaceUpsample(nn.Module):
    """Decoder ``compress_*``: conv to prod(stride)*C/multiplier channels then depth-to-space; with a
    temporal stride the first output frame is dropped. ``residual`` adds the input's depth-to-space,
    repeated over channels (and without its first frame likewise)."""

    def __init__(self, in_channels: int, stride: tuple[int, int, int], padding: str, multiplier: int = 1,
                 residual: bool = False):
        super().__init__()
        self.stride, self.residual = stride, residual
        volume = stride[0] * stride[1] * stride[2]
        self.repeats = volume // multiplier
        self.conv = CausalConv3d(in_channels, volume * in_channels // multiplier, 3, spatial_padding_mode=padding)

    def forward(self, x: torch.Tensor, causal: bool, stream: TemporalStream | None = None) -> torch.Tensor:
        temporal = self.stride[0] == 2
        y, bias = self.conv.forward_unbiased(x, causal, stream)
        if fused_video.output_usable(y):
            return self._fused(x, y, bias, temporal, stream)
        y = _with_bias(y, bias)
        if self.residual:
            skip = depth_to_space(x, self.stride).repeat(1, self.repeats, 1, 1, 1)
            if temporal:
                skip = drop_first_frame(stream, (self, "skip"), skip)
        h = depth_to_space(y, self.stride)
        if temporal:
            h = drop_first_frame(stream, (self, "main"), h)
        if self.residual:
            h = h.add_(align(stream, self, skip, h.shape[2]))
        return h

    def _fused(self, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None, temporal: bool,
               stream: TemporalStream | None) -> torch.Tensor:
        """The same on CUDA with channels-last convolution outputs: one kernel per rearrangement (one in
        all for a one-pass residual block), which also adds the convolution's bias; channels-last results."""
        channels = y.shape[1] // (self.stride[0] * self.stride[1] * self.stride[2])
        if stream is None:
            return fused_video.depth_to_space(y, self.stride, channels, int(temporal), x if self.residual else None,
                                              bias)
        if self.residual:
            skip = fused_video.depth_to_space(x, self.stride, channels)
            if temporal:
                skip = drop_first_frame(stream, (self, "skip"), skip)
        h = fused_video.depth_to_space(y, self.stride, channels, bias=bias)
        if temporal:
            h = drop_first_frame(stream, (self, "main"), h)
        if self.residual:
            h = h.add_(align(stream, self, skip, h.shape[2]))
        return h
