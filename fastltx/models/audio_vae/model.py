"""The audio VAE: mel spectrogram (B, 2, T, 64) <-> normalised latent (B, 8, (T - 1)/4 + 1, 16).

Encoder: conv_in -> levels of ResnetBlocks (+ attention where configured) with stride-2
downsamplers between them -> mid block -> PixelNorm -> SiLU -> conv_out (2 z channels) -> the
first z channels (the means) -> per-channel normalisation over the flattened (channel, mel) features.
Decoder: the inverse normalisation -> conv_in -> mid -> levels with nearest x2 upsamplers that drop
their first frame -> PixelNorm -> SiLU -> conv_out, cropped (or zero padded) to exactly
4 T_latent - 3 frames and the configured mel bins.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastltx.models.audio_vae.blocks import (CausalConv2d, Downsample, Level, MidBlock, PerChannelStatistics,
                                             Upsample, norm)
from fastltx.models.audio_vae.config import LATENT_DOWNSAMPLE, AudioVAEConfig


def _level_channels(cin: int, cout: int, n: int) -> list[tuple[int, int]]:
    return [(cin if j == 0 else cout, cout) for j in range(n)]


class AudioEncoder(nn.Module):
    def __init__(self, cfg: AudioVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.per_channel_statistics = PerChannelStatistics(cfg.ch)
        self.conv_in = CausalConv2d(cfg.in_channels, cfg.ch, 3)
        mult_in = (1, *cfg.ch_mult)
        levels = []
        for i, m in enumerate(cfg.ch_mult):
            cout = cfg.ch * m
            down = Downsample(cout) if i < cfg.levels - 1 else None
            levels.append(Level(_level_channels(cfg.ch * mult_in[i], cout, cfg.num_res_blocks),
                                cfg.encoder_attention and cfg.attention_at(i), down, "downsample"))
        self.down = nn.ModuleList(levels)
        top = cfg.ch * cfg.ch_mult[-1]
        self.mid = MidBlock(top, cfg.encoder_attention and cfg.mid_block_add_attention)
        self.conv_out = CausalConv2d(top, 2 * cfg.z_channels, 3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, T, mel_bins) log mel -> normalised latent (B, z, (T - 1)//4 + 1, mel_bins/4)."""
        h = self.conv_in(mel)
        for level in self.down:
            h = level(h)
        h = self.conv_out(F.silu(norm(self.mid(h))))
        means = h[:, : self.cfg.z_channels]  # the first half: means (the second, log-variances, is unused)
        return self.per_channel_statistics.normalize(means)


class AudioDecoder(nn.Module):
    def __init__(self, cfg: AudioVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.per_channel_statistics = PerChannelStatistics(cfg.ch)
        top = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = CausalConv2d(cfg.z_channels, top, 3)
        self.mid = MidBlock(top, cfg.mid_block_add_attention)
        levels: list[Level | None] = [None] * cfg.levels
        cin = top
        for i in reversed(range(cfg.levels)):
            cout = cfg.ch * cfg.ch_mult[i]
            levels[i] = Level(_level_channels(cin, cout, cfg.num_res_blocks + 1), cfg.attention_at(i),
                              Upsample(cout) if i > 0 else None, "upsample")
            cin = cout
        self.up = nn.ModuleList(levels)
        self.conv_out = CausalConv2d(cfg.ch * cfg.ch_mult[0], cfg.out_ch, 3)

    def output_frames(self, latent_frames: int) -> int:
        return max(latent_frames * LATENT_DOWNSAMPLE - (LATENT_DOWNSAMPLE - 1), 1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent (B, z, T, F) -> log mel (B, out_ch, 4T - 3, mel_bins)."""
        frames, bins = self.output_frames(latent.shape[2]), self.cfg.mel_bins or latent.shape[3]
        h = self.mid(self.conv_in(self.per_channel_statistics.un_normalize(latent)))
        for level in reversed(self.up):
            h = level(h)
        h = self.conv_out(F.silu(norm(h)))
        h = h[:, : self.cfg.out_ch, :frames, :bins]
        if h.shape[2] < frames or h.shape[3] < bins:  # only with fewer than three levels
            h = F.pad(h, (0, bins - h.shape[3], 0, frames - h.shape[2]))
        return h
