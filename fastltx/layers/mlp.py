"""GELU(tanh) feed-forward: Linear(d -> mult*d) -> GELU(tanh) -> Linear(mult*d -> d_out).

Parameter names follow the official checkpoints: ``net.0.proj`` and ``net.2``.
"""

import torch
import torch.nn.functional as F
from torch import nn


class _GeluProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, dim: int, dim_out: int | None = None, mult: int = 4):
        super().__init__()
        hidden = dim * mult
        # Index 1 is an (empty) placeholder so that the output layer keeps the key ``net.2``.
        self.net = nn.Sequential(_GeluProj(dim, hidden), nn.Identity(), nn.Linear(hidden, dim_out or dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
