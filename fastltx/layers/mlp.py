"""GELU(tanh) feed-forward: Linear(d -> mult*d) -> GELU(tanh) -> Linear(mult*d -> d_out).

Parameter names follow the official checkpoints: ``net.0.proj`` and ``net.2``. With both linears in
fp8 (``Fp8Linear``), the GELU and the second linear's quantisation run as one op (fp8_gelu.py),
which calls the two linears' products directly, not their modules: hooks on those modules (the
streamed layers' part hooks) do not fire, only the hooks of the FeedForward and of the layers around it.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastltx.layers.fp8_gelu import fp8_feed_forward
from fastltx.layers.linear import Fp8Linear


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
        first, last = self.net[0].proj, self.net[2]
        if type(first) is Fp8Linear and type(last) is Fp8Linear:  # not Fp8WeightLinear: bf16 matmuls
            return fp8_feed_forward(x, first, last)
        return self.net(x)
