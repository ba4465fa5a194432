"""The video VAE decoder: normalised latents (B, C, F, H, W) -> video (B, 3, 8(F-1)+1, 32H, 32W).

[noise: x <- 0.025 randn + 0.975 x] -> un-normalise -> ``conv_in`` -> ``up_blocks`` (the header's
``decoder_blocks`` reversed) -> PixelNorm -> [final AdaLN] -> SiLU -> ``conv_out`` -> unpatchify.
A timestep-conditioned decoder draws its noise from the caller's generator exactly as the reference
draws it (one randn of the latent's shape and dtype, then any per-resnet spatial noise in order) and
is modulated by the decode timestep (default 0.05) times the stored ``timestep_scale_multiplier``.

``forward`` decodes in one pass. ``decode_chunks`` streams the same computation over temporal
chunks of the latent (``fastltx.layers.streaming``): the frames it yields, concatenated, are the
one-pass result, while memory grows with the chunk instead of the whole video.
"""

from collections.abc import Iterator

import torch
from torch import nn

from fastltx.layers import fused_video
from fastltx.layers.conv import CausalConv3d
from fastltx.layers.norm_act import NormAct
from fastltx.layers.streaming import TemporalStream
from fastltx.models.video_vae.blocks import (DepthToSpaceUpsample, ResnetBlock3D, ResStack, TimeEmbedder,
                                             modulation)
from fastltx.models.video_vae.config import DECODER_BLOCKS, Block, DecoderConfig
from fastltx.models.video_vae.ops import LatentStatistics, unpatchify

DECODE_NOISE_SCALE = 0.025
DECODE_TIMESTEP = 0.05


def _decoder_block(block: Block, width: int, padding: str, timestep_conditioning: bool) -> tuple[nn.Module, int]:
    if block.kind == "res_x":
        return ResStack(width, block.num_layers, padding, timestep_conditioning, block.inject_noise), width
    if block.kind == "res_x_y":
        out = width // block.multiplier
        return ResnetBlock3D(width, out, padding, inject_noise=block.inject_noise), out
    module = DepthToSpaceUpsample(width, DECODER_BLOCKS[block.kind], padding, block.multiplier, block.residual)
    return module, width // block.multiplier


class VideoDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        pad = cfg.spatial_padding_mode
        self.per_channel_statistics = LatentStatistics(cfg.latent_channels)
        width = cfg.base_channels * 8  # the released layouts expand three times by two
        self.conv_in = CausalConv3d(cfg.latent_channels, width, 3, spatial_padding_mode=pad)
        blocks = []
        for block in reversed(cfg.blocks):
            module, width = _decoder_block(block, width, pad, cfg.timestep_conditioning)
            blocks.append(module)
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_out = CausalConv3d(width, cfg.out_channels * cfg.patch_size ** 2, 3, spatial_padding_mode=pad)
        if cfg.timestep_conditioning:
            self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0))
            self.last_time_embedder = TimeEmbedder(2 * width)
            self.last_scale_shift_table = nn.Parameter(torch.empty(2, width))

    @property
    def streamable(self) -> bool:
        """Whether ``decode_chunks`` applies: every layer acts frame by frame apart from temporal convolutions
        (not so a width-changing resnet, whose GroupNorm spans all frames, nor noise injection, drawn
        once per pass)."""
        return not any(isinstance(m, ResnetBlock3D) and (m.changes_width or m.inject_noise) for m in self.modules())

    @property
    def fused(self) -> bool:
        """Whether its convolutions take the fused GPU path (CUDA, channels-last weights, Triton)."""
        return fused_video.weights_usable(self.conv_in.conv)

    def check_latent(self, latent: torch.Tensor) -> None:
        """A clear error, before any work, for a latent this decoder cannot take."""
        c = self.cfg.latent_channels
        if latent.ndim != 5:
            raise ValueError(f"expected a latent of shape (B, {c}, F, H, W), got {tuple(latent.shape)}")
        if latent.shape[1] != c:
            raise ValueError(f"expected {c} latent channels, got {latent.shape[1]} (shape {tuple(latent.shape)})")
        if 0 in latent.shape:
            raise ValueError(f"empty latent of shape {tuple(latent.shape)}")

    def prepare(self, latent: torch.Tensor, timestep: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Noise (timestep-conditioned decoders), un-normalise; returns the VAE latent and the timestep."""
        self.check_latent(latent)
        x = latent
        if self.cfg.timestep_conditioning:
            noise = torch.randn(x.size(), generator=generator, dtype=x.dtype, device=x.device) * DECODE_NOISE_SCALE
            x = noise + (1.0 - DECODE_NOISE_SCALE) * x
        x = self.per_channel_statistics.un_normalize(x)
        if self.cfg.timestep_conditioning and timestep is None:
            timestep = torch.full((x.shape[0],), DECODE_TIMESTEP, device=x.device, dtype=x.dtype)
        return x, timestep

    def run(self, x: torch.Tensor, timestep: torch.Tensor | None, generator: torch.Generator | None = None,
            stream: TemporalStream | None = None) -> torch.Tensor:
        """The network on an un-normalised latent (or one chunk of it, with ``stream``)."""
        causal = self.cfg.causal
        x = self.conv_in(x, causal, stream)
        scaled = timestep * self.timestep_scale_multiplier.to(x) if self.cfg.timestep_conditioning else None
        for block in self.up_blocks:
            if isinstance(block, ResStack):
                x = block(x, causal, scaled, generator, stream)
            elif isinstance(block, ResnetBlock3D):
                x = block(x, causal, None, generator, stream)
            else:
                x = block(x, causal, stream)
        act = NormAct()  # PixelNorm -> [AdaLN] -> SiLU, applied by conv_out
        if self.cfg.timestep_conditioning:
            shift, scale = modulation(self.last_scale_shift_table, self.last_time_embedder(scaled, x.dtype), x)
            act = NormAct(scale, shift)
        x = self.conv_out(x, causal, stream, act=act)
        return unpatchify(x, self.cfg.patch_size)

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, F, H, W) normalised latent -> (B, 3, 8(F-1)+1, 32H, 32W) video in about [-1, 1]."""
        x, timestep = self.prepare(latent, timestep, generator)
        return self.run(x, timestep, generator)

    def temporal_convolutions(self) -> list[tuple[CausalConv3d, int]]:
        """Every temporal convolution in the order a pass runs them, with its input's frames per latent frame."""
        out, rate = [(self.conv_in, 1)], 1
        for block in self.up_blocks:
            out += [(m, rate) for m in block.modules() if isinstance(m, CausalConv3d)]
            if isinstance(block, DepthToSpaceUpsample):
                rate *= block.stride[0]
        return out + [(self.conv_out, rate)]

    def decode_chunks(self, latent: torch.Tensor, chunk_frames: int = 1, timestep: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Yield consecutive pieces (B, 3, f, H, W) of ``forward(latent)``, computed ``chunk_frames`` latent
        frames at a time: memory follows the chunk, not the video.

        The latent goes in chunk by chunk; then the convolutions are ended in network order, each
        group of them flushing about one chunk's worth of frames (``fastltx.layers.streaming``).
        """
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
        if not self.streamable:
            raise ValueError("this decoder has layers that mix all frames; decode it whole or with tiling")
        x, timestep = self.prepare(latent, timestep, generator)
        stream = TemporalStream()
        feeds = [(x[:, :, start:start + chunk_frames], ()) for start in range(0, x.shape[2], chunk_frames)]
        drains = [(x[:, :, :0], group) for group in self._drain_groups(chunk_frames)]
        for piece, ending in feeds + drains:
            stream.ending = set(ending)
            out = self.run(piece, timestep, generator, stream)
            if out.shape[2]:
                yield out

    def _drain_groups(self, chunk_frames: int) -> list[list[CausalConv3d]]:
        """The convolutions to end together, in network order: ending one flushes one frame at its own
        rate, 1/rate latent frames' worth; a group flushes at most one chunk's worth (or one convolution)."""
        if self.cfg.causal:  # causal convolutions pad nothing at the end and delay nothing
            return []
        groups, cost = [[]], 0.0
        for conv, rate in self.temporal_convolutions():
            if groups[-1] and cost + 1 / rate > chunk_frames:
                groups.append([])
                cost = 0.0
            groups[-1].append(conv)
            cost += 1 / rate
        return groups
