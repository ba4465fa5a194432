"""A mel-to-waveform generator: HiFi-GAN (LTX-2) or BigVGAN-v2 style with AMP blocks (LTX-2.3).

Input (B, 2, T, 64) stereo log mel -> the two channels' mels stacked along channels (left 64,
then right 64) -> ``conv_pre`` (k7) -> per stage: [leaky ReLU 0.1 for HiFi-GAN] -> transposed
conv (x rate) -> mean of the stage's residual blocks, each applied to the same input ->
final activation (leaky ReLU with PyTorch's default slope 0.01, or anti-aliased SnakeBeta) ->
``conv_post`` (k7, 2 channels) -> tanh, or clamp to [-1, 1], or nothing (the BWE generator).
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastltx.models.vocoder.antialias import Activation1d
from fastltx.models.vocoder.config import MEL_CHANNELS, GeneratorConfig

LRELU_SLOPE = 0.1


class ResBlock1(nn.Module):
    """HiFi-GAN block: for each dilation, x += conv2(lrelu(conv1_d(lrelu(x)))) ('same' padding)."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding="same")
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding="same") for _ in dilations)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``out``: where the last residual sum is written (the generator's stage buffer)."""
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            h = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = torch.add(h, x, out=out) if out is not None and i == len(self.convs1) - 1 else h + x
        return x


class AMPBlock1(nn.Module):
    """BigVGAN-v2 block: for each dilation, x += conv2(act2(conv1_d(act1(x)))) with anti-aliased SnakeBeta."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2)
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2)
                                    for _ in dilations)
        self.acts1 = nn.ModuleList(Activation1d(channels) for _ in dilations)
        self.acts2 = nn.ModuleList(Activation1d(channels) for _ in dilations)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``out``: where the last residual sum is written (the generator's stage buffer)."""
        for i, (c1, c2, a1, a2) in enumerate(zip(self.convs1, self.convs2, self.acts1, self.acts2)):
            h = c2(a2(c1(a1(x))))
            x = torch.add(x, h, out=out) if out is not None and i == len(self.convs1) - 1 else x + h
        return x


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(MEL_CHANNELS, ch, 7, padding=3)
        self.ups = nn.ModuleList(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, r, padding=(k - r) // 2)
                                 for i, (r, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)))
        block = AMPBlock1 if cfg.amp else ResBlock1
        self.resblocks = nn.ModuleList(
            block(ch // 2 ** (i + 1), k, d)
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
        final = ch // 2 ** len(cfg.upsample_rates)
        self.act_post = Activation1d(final) if cfg.amp else nn.LeakyReLU()
        self.conv_post = nn.Conv1d(final, 2, 7, padding=3, bias=cfg.use_bias_at_final)

    @property
    def output_sampling_rate(self) -> int:
        return self.cfg.output_sampling_rate

    @property
    def hop(self) -> int:
        """Output samples per mel frame."""
        n = 1
        for r in self.cfg.upsample_rates:
            n *= r
        return n

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 2, T, 64) log mel -> (B, 2, T * hop) waveform."""
        b, s, t, f = mel.shape
        if s != 2:
            raise ValueError(f"the vocoder takes stereo mels (B, 2, T, {f}), got {tuple(mel.shape)}")
        x = self.conv_pre(mel.transpose(2, 3).reshape(b, s * f, t))
        n = len(self.cfg.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            if not self.cfg.amp:
                x = F.leaky_relu(x, LRELU_SLOPE)
            x = up(x)
            # The blocks write straight into one stacked buffer, reduced by the same mean as the
            # reference's stack-then-mean (same rounding, one copy of n tensors less).
            stage = x.new_empty((n, *x.shape))
            for j in range(n):
                self.resblocks[i * n + j](x, out=stage[j])
            x = stage.mean(dim=0)
        x = self.conv_post(self.act_post(x))
        if self.cfg.apply_final_activation:
            x = torch.tanh(x) if self.cfg.use_tanh_at_final else torch.clamp(x, -1, 1)
        return x
