"""Timestep and caption embeddings: sinusoidal embedding, AdaLN-single, caption projection."""

import math

import torch
import torch.nn.functional as F
from torch import nn

SINUSOID_DIM = 256


def timestep_sinusoid(t: torch.Tensor, dim: int = SINUSOID_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """[cos, sin] sinusoidal embedding of a 1-D tensor of (fractional) timesteps, in float32.

    Frequencies are exp(-ln(max_period) * i / (dim/2)) for i in [0, dim/2) (no frequency shift).
    """
    half = dim // 2
    # Operation order matters: angles reach ~1000 rad, so one ulp in the frequency moves cos/sin
    # by ~1e-4. Scale the index by -ln(max_period) first, then divide by half (as the reference).
    exponent = (-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)) / half
    angles = t.float()[:, None] * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Linear(256 -> d) -> SiLU -> Linear(d -> d) on the sinusoid (keys ``linear_1``, ``linear_2``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(SINUSOID_DIM, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # The sinusoid is computed in float32 and cast to the activation dtype before the MLP.
        return self.linear_2(F.silu(self.linear_1(timestep_sinusoid(t).to(dtype))))


class _TimestepEmbedding(nn.Module):
    """Holds the embedder under the checkpoint's ``emb.timestep_embedder`` key path."""

    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)


class AdaLNSingle(nn.Module):
    """AdaLN-single: timestep -> (``rows`` modulation vectors of width d, embedded timestep).

    Returns ``(linear(silu(e)), e)`` where e is the embedded timestep; the first has shape
    (N, rows*d), the second (N, d).
    """

    def __init__(self, dim: int, rows: int):
        super().__init__()
        self.rows = rows
        self.emb = _TimestepEmbedding(dim)
        self.linear = nn.Linear(dim, rows * dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        embedded = self.emb.timestep_embedder(t, dtype)
        return self.linear(F.silu(embedded)), embedded


class CaptionProjection(nn.Module):
    """Linear -> GELU(tanh) -> Linear projection of text features (keys ``linear_1``, ``linear_2``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int | None = None):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden)
        self.linear_2 = nn.Linear(hidden, out_dim or hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))
