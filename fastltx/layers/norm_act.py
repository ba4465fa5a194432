"""The activation a video convolution's input goes through: PixelNorm -> [x * (1 + scale) + shift] -> SiLU.

``CausalConv3d(x, act=NormAct(...))`` applies it to ``x`` first. On the CPU (and wherever the fused
kernels do not apply) that is these eager operations, in the reference's order and dtype; on CUDA
with channels-last weights one kernel (``fastltx.layers.fused_video``) normalises, modulates,
activates and pads in a single pass over the activation.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastltx.layers.norm import pixel_norm

PIXEL_NORM_EPS = 1e-8


@dataclass(frozen=True)
class NormAct:
    """PixelNorm over channels, then (when given) the AdaLN modulation, then SiLU.

    ``scale`` / ``shift``: (B, C, 1, 1, 1) in the activation dtype (``modulation``'s output), or None.
    ``bias``: (C,), a bias the producer of the input left to add first (``CausalConv3d.forward_unbiased``).
    """

    scale: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    eps: float = PIXEL_NORM_EPS
    bias: torch.Tensor | None = None

    def with_bias(self, bias: torch.Tensor | None) -> "NormAct":
        return self if bias is None else NormAct(self.scale, self.shift, self.eps, bias)

    def __post_init__(self):
        if (self.scale is None) != (self.shift is None):
            raise ValueError("NormAct takes both scale and shift, or neither")

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        """The reference's operations: a new tensor (``x`` is left alone), rounded after each step."""
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1, 1)
        h = pixel_norm(x, eps=self.eps)
        if self.scale is not None:
            h.mul_(1 + self.scale).add_(self.shift)
        return F.silu(h, inplace=True)
