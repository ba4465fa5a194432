"""Random latent upsampler files in the official layout (flat header config, unprefixed names).

Kinds: the released ones, at full ("full") or tiny size (32 wide, one resnet per stage).
"""

import os
from pathlib import Path

import torch

from fastltx.models.upsampler.config import UpsamplerConfig
from fastltx.models.upsampler.model import LatentUpsampler

KINDS = {
    "spatial_x2": dict(spatial_upsample=True),
    "spatial_x1.5": dict(spatial_upsample=True, rational_resampler=True, spatial_scale=1.5),
    "temporal_x2": dict(spatial_upsample=False, temporal_upsample=True),
}
SIZES = {"tiny": dict(mid_channels=32, num_blocks_per_stage=1), "full": {}}


def upsampler_config(kind: str = "spatial_x2", size: str = "tiny", **overrides) -> UpsamplerConfig:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {tuple(KINDS)}, got {kind!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {tuple(SIZES)}, got {size!r}")
    return UpsamplerConfig(**{**KINDS[kind], **SIZES[size], **overrides})


def write_upsampler(path: str | os.PathLike, cfg: UpsamplerConfig | None = None, seed: int = 0) -> Path:
    """Write a random upsampler with ``cfg`` (default: tiny spatial x2); the blur kernel keeps its true values."""
    from fastltx.checkpoint.factory import random_state, write_checkpoint
    cfg = cfg or upsampler_config()
    with torch.device("meta"):
        model = LatentUpsampler(cfg)
    tensors = random_state(model, seed)
    for name, buffer in LatentUpsampler(cfg).named_buffers() if cfg.rational else ():
        tensors[name] = buffer.to(torch.bfloat16)
    return write_checkpoint(path, tensors, cfg.to_checkpoint_config())
