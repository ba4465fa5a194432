"""Normalisations shared by every component.

All of them run in the activation dtype (the reference calls ``torch.nn.functional.rms_norm`` /
``layer_norm`` on bf16 activations), so bf16 results round exactly as the reference's do.
"""

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMS-normalise over the last dimension, optionally scaled by ``weight``."""
    return F.rms_norm(x, (x.shape[-1],), weight=weight, eps=eps)


def layer_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Non-affine LayerNorm over the last dimension."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


class RMSNorm(nn.Module):
    """RMSNorm with a learned weight (state-dict key ``weight``)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def pixel_norm(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over ``dim`` (the VAEs' PixelNorm; eps 1e-8 video, 1e-6 audio)."""
    return x / torch.sqrt(torch.mean(x * x, dim=dim, keepdim=True) + eps)
