"""Fractional-position rotary embeddings (RoPE) as LTX-2 uses them.

Positions are per-token [start, end) bounds on ``n_axes`` axes (time, height, width for video;
time for audio and the text connectors). Each axis is divided by its ``max_pos`` so that it lies in
[0, 1], mapped to [-1, 1] and multiplied by a frequency grid ``(pi/2) * theta^linspace(0, 1, n)``
with ``n = dim // (2 * n_axes)``. Angles are laid out frequency-major, axis-minor.

Two layouts exist:
* ``SPLIT``: per head, the first half of the head dimension rotates against the second half.
  The angle vector (``dim/2`` long) is front-padded with identity rotations.
* ``INTERLEAVED``: pairs (2i, 2i+1) rotate together over the whole inner dimension; the angle
  vector is repeated twice and front-padded with ``dim % (2 * n_axes)`` identity entries.
"""

import functools
import math
from enum import Enum
from typing import NamedTuple

import numpy as np
import torch


class RopeLayout(str, Enum):
    SPLIT = "split"
    INTERLEAVED = "interleaved"


class Rope(NamedTuple):
    """cos/sin tables ready to apply. SPLIT: (B, T, heads, head_dim/2); INTERLEAVED: (B, T, dim)."""

    cos: torch.Tensor
    sin: torch.Tensor
    layout: RopeLayout


@functools.lru_cache(maxsize=16)
def frequency_grid(theta: float, n_axes: int, dim: int, float64: bool) -> torch.Tensor:
    """The float32 frequency grid; ``float64`` computes it in numpy float64 before the cast."""
    n = dim // (2 * n_axes)
    if float64:
        grid = np.power(theta, np.linspace(np.log(1) / np.log(theta), np.log(theta) / np.log(theta), n,
                                           dtype=np.float64))
        return torch.tensor(grid * math.pi / 2, dtype=torch.float32)
    grid = theta ** torch.linspace(math.log(1, theta), math.log(theta, theta), n, dtype=torch.float32)
    return grid * math.pi / 2


@functools.lru_cache(maxsize=16)
def _grid_on(theta: float, n_axes: int, dim: int, float64: bool, device: torch.device) -> torch.Tensor:
    """``frequency_grid`` kept on ``device``: copying it there at every call would be a host-to-device
    copy from pageable memory, which waits for the GPU (the host could not run ahead of the steps)."""
    return frequency_grid(theta, n_axes, dim, float64).to(device)


def rope_angles(positions: torch.Tensor, dim: int, max_pos: tuple[float, ...], theta: float,
                float64: bool) -> torch.Tensor:
    """Angles (B, T, n_axes * n) for positions (B, n_axes, T, 2) bounds or (B, n_axes, T) points.

    Bounds are reduced to their midpoint. The arithmetic on positions happens in their own dtype
    (bf16 positions stay bf16 until they meet the float32 grid), as in the reference.
    """
    if positions.ndim == 4:
        positions = (positions[..., 0] + positions[..., 1]) / 2.0
    n_axes = positions.shape[1]
    if n_axes != len(max_pos):
        raise ValueError(f"positions have {n_axes} axes but max_pos has {len(max_pos)} entries")
    frac = torch.stack([positions[:, i] / max_pos[i] for i in range(n_axes)], dim=-1)  # (B, T, n_axes)
    grid = _grid_on(float(theta), n_axes, dim, float64, positions.device)
    angles = grid * (frac.unsqueeze(-1) * 2 - 1)  # (B, T, n_axes, n)
    return angles.transpose(-1, -2).flatten(2)


def rope_tables(positions: torch.Tensor, dim: int, heads: int, max_pos: tuple[float, ...], theta: float,
                layout: RopeLayout, float64: bool, dtype: torch.dtype) -> Rope:
    """cos/sin tables for an attention of inner width ``dim`` split into ``heads`` heads."""
    angles = rope_angles(positions, dim, max_pos, theta, float64)
    cos, sin = angles.cos(), angles.sin()
    if layout == RopeLayout.INTERLEAVED:
        cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
        pad = dim % (2 * positions.shape[1])
    else:
        pad = dim // 2 - angles.shape[-1]
    if pad:
        cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)
        sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
    if layout == RopeLayout.SPLIT:
        b, t, _ = cos.shape
        cos, sin = cos.reshape(b, t, heads, -1), sin.reshape(b, t, heads, -1)
    return Rope(cos.to(dtype), sin.to(dtype), RopeLayout(layout))


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate x (B, T, dim) by the tables. The op order matches the reference's, so bf16 rounds alike."""
    if rope.layout == RopeLayout.INTERLEAVED:
        pairs = x.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return x * rope.cos + rotated * rope.sin
    b, t, heads, half = rope.cos.shape
    halves = x.reshape(b, t, heads, 2, half)
    cos, sin = rope.cos.unsqueeze(-2), rope.sin.unsqueeze(-2)
    scaled = halves * cos
    first = torch.addcmul(scaled[..., 0, :], -sin[..., 0, :], halves[..., 1, :])
    second = torch.addcmul(scaled[..., 1, :], sin[..., 0, :], halves[..., 0, :])
    return torch.stack((first, second), dim=-2).reshape(x.shape)
