"""The video VAE encoder: pixels (B, 3, 8k+1, H, W) in [-1, 1] -> normalised latent means.

patchify (space-to-depth by ``patch_size``) -> ``conv_in`` -> ``down_blocks`` -> PixelNorm -> SiLU ->
``conv_out`` (means plus log-variance channels) -> the means, per-channel normalised. Every
convolution is causal in time (the first frame is replicated in front).
"""

import torch
from torch import nn

from fastltx.layers.conv import CausalConv3d
from fastltx.layers.norm_act import NormAct
from fastltx.models.video_vae.blocks import ResnetBlock3D, ResStack, SpaceToDepthDownsample
from fastltx.models.video_vae.config import ENCODER_BLOCKS, LOG_VARIANCE_CHANNELS, Block, EncoderConfig
from fastltx.models.video_vae.ops import LatentStatistics, patchify


def _encoder_block(block: Block, width: int, padding: str) -> tuple[nn.Module, int]:
    stride = ENCODER_BLOCKS[block.kind]
    if block.kind == "res_x":
        return ResStack(width, block.num_layers, padding), width
    if block.kind == "res_x_y":
        return ResnetBlock3D(width, width * block.multiplier, padding), width * block.multiplier
    if block.kind.endswith("_res"):
        out = width * block.multiplier
        return SpaceToDepthDownsample(width, out, stride, padding), out
    out = width * block.multiplier if block.kind == "compress_all_x_y" else width
    return CausalConv3d(width, out, 3, stride=stride, spatial_padding_mode=padding), out


class VideoEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        c, pad = cfg.latent_channels, cfg.spatial_padding_mode
        self.per_channel_statistics = LatentStatistics(c)
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size ** 2, c, 3, spatial_padding_mode=pad)
        blocks, width = [], c
        for block in cfg.blocks:
            module, width = _encoder_block(block, width, pad)
            blocks.append(module)
        self.down_blocks = nn.ModuleList(blocks)
        self.conv_out = CausalConv3d(width, LOG_VARIANCE_CHANNELS[cfg.latent_log_var](c), 3, spatial_padding_mode=pad)

    def check_input(self, video: torch.Tensor) -> None:
        """A clear error, before any work, for video the encoder cannot take."""
        cfg = self.cfg
        if video.ndim != 5:
            raise ValueError(f"expected video of shape (B, {cfg.in_channels}, F, H, W), got {tuple(video.shape)}")
        _, c, f, h, w = video.shape
        t, s = cfg.temporal_factor, cfg.spatial_factor
        if c != cfg.in_channels:
            raise ValueError(f"expected {cfg.in_channels} video channels, got {c} (shape {tuple(video.shape)})")
        if (f - 1) % t != 0:
            raise ValueError(f"the encoder takes {t}k+1 frames (1, {t + 1}, {2 * t + 1}, ...), got {f}")
        if h % s or w % s:
            raise ValueError(f"video height and width must be multiples of {s}, got {h}x{w}")

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> (B, C, (F-1)/8 + 1, H/32, W/32) normalised latent means."""
        self.check_input(video)
        x = self.conv_in(patchify(video, self.cfg.patch_size), causal=True)
        for block in self.down_blocks:
            x = block(x, causal=True)
        x = self.conv_out(x, causal=True, act=NormAct())  # PixelNorm -> SiLU -> conv
        return self.per_channel_statistics.normalize(x[:, :self.cfg.latent_channels])
