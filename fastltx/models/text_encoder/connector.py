"""The text connectors: a small 1-D transformer between the text features and the diffusion model.

1. Register replacement: each prompt's valid tokens move, in order, to the front of the sequence;
   the remaining positions take learnable registers (position i gets register i mod R), and
   attention is then over every position. The reference does this for one prompt at a time; here
   every sample of a batch is compacted by its own mask, which gives the same result per prompt.
2. 1-D RoPE on positions 0..T-1 divided by the header's max position, with the transformer's
   layout and frequency-grid precision.
3. Pre-norm blocks: x += attn(rms_norm(x)); x += ff(rms_norm(x)); then a weightless RMSNorm.

Keys follow the official checkpoints: ``transformer_1d_blocks.N.attn1.*``, ``...ff.net.*``,
``learnable_registers``.
"""

import torch
from torch import nn

from fastltx.layers.attention import Attention
from fastltx.layers.mlp import FeedForward
from fastltx.layers.norm import rms_norm
from fastltx.layers.rope import RopeLayout, rope_tables
from fastltx.models.text_encoder.config import CONNECTOR_THETA, NORM_EPS, ConnectorConfig


def compact_with_registers(x: torch.Tensor, valid: torch.Tensor, registers: torch.Tensor) -> torch.Tensor:
    """Move each sample's valid tokens (in order) to the front; fill the rest with tiled registers."""
    b, t, d = x.shape
    r = registers.shape[0]
    if t % r:
        raise ValueError(f"the text sequence length ({t}) must be a multiple of the connector's {r} registers")
    order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)  # valid positions first, in order
    front = x.gather(1, order[:, :, None].expand(b, t, d))
    count = valid.sum(dim=1, keepdim=True)
    keep = torch.arange(t, device=x.device)[None, :] < count
    return torch.where(keep[:, :, None], front, registers.to(x.dtype).repeat(t // r, 1))


class ConnectorBlock(nn.Module):
    def __init__(self, cfg: ConnectorConfig):
        super().__init__()
        self.attn1 = Attention(cfg.dim, cfg.heads, cfg.head_dim, eps=NORM_EPS, gated=cfg.gated)
        self.ff = FeedForward(cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        x = self.attn1(rms_norm(x, eps=NORM_EPS), rope=rope) + x
        return self.ff(rms_norm(x, eps=NORM_EPS)) + x


class Connector(nn.Module):
    def __init__(self, cfg: ConnectorConfig, rope_layout: RopeLayout, rope_float64: bool):
        super().__init__()
        self.cfg, self.rope_layout, self.rope_float64 = cfg, rope_layout, rope_float64
        self.transformer_1d_blocks = nn.ModuleList(ConnectorBlock(cfg) for _ in range(cfg.num_layers))
        self.learnable_registers = nn.Parameter(torch.empty(cfg.num_registers, cfg.dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, dim) features, mask (B, T) tokenizer mask -> (B, T, dim); every position is valid after."""
        cfg = self.cfg
        x = compact_with_registers(x, mask.bool(), self.learnable_registers)
        b, t, _ = x.shape
        positions = torch.arange(t, dtype=torch.float32, device=x.device).expand(b, 1, t)
        rope = rope_tables(positions, cfg.dim, cfg.heads, cfg.max_pos, CONNECTOR_THETA, self.rope_layout,
                           self.rope_float64, x.dtype)
        for block in self.transformer_1d_blocks:
            x = block(x, rope)
        return rms_norm(x, eps=NORM_EPS)
