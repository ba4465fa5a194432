"""Pixel patchify / unpatchify, the per-channel latent statistics and the uint8 frame conversion."""

import torch
from torch import nn


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, F, H*p, W*p) -> (B, C*p*p, F, H, W) with channel order (c, w offset, h offset).

    The width offset is the more significant one (reference notes, detail 16).
    """
    if patch == 1:
        return x
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f, h // patch, patch, w // patch, patch).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * patch * patch, f, h // patch, w // patch)


def unpatchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """The inverse of ``patchify``: (B, C*p*p, F, H, W) -> (B, C, F, H*p, W*p)."""
    if patch == 1:
        return x
    b, c, f, h, w = x.shape
    c //= patch * patch
    x = x.reshape(b, c, patch, patch, f, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, c, f, h * patch, w * patch)


class LatentStatistics(nn.Module):
    """Per-channel mean and standard deviation of the latents (buffers ``mean-of-means``,
    ``std-of-means``): the model-facing latent is ``(x - mean) / std`` of the VAE's own latent."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("std-of-means", torch.empty(channels))
        self.register_buffer("mean-of-means", torch.empty(channels))

    def _stat(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.get_buffer(name).view(1, -1, 1, 1, 1).to(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._stat("mean-of-means", x)) / self._stat("std-of-means", x)

    def un_normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._stat("std-of-means", x) + self._stat("mean-of-means", x)


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """Decoded video (1, 3, F, H, W) in [-1, 1] -> uint8 frames (F, H, W, 3), as the reference does it.

    The value is scaled in the video's own dtype and **truncated** (not rounded) to an integer.
    """
    if video.ndim != 5 or video.shape[0] != 1:
        raise ValueError(f"expected one decoded video of shape (1, C, F, H, W), got {tuple(video.shape)}")
    frames = (((video + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return frames[0].permute(1, 2, 3, 0)
