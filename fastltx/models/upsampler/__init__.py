"""Latent upsamplers (spatial x2, rational x1.5, temporal x2), loaded from their own checkpoint files.

An upsampler file carries a flat ``config`` in its header and unprefixed tensor names. The
upsampler works on the VAE's own latent scale: ``upsample_latent`` un-normalises a model-facing
latent with the video VAE's per-channel statistics, upsamples and normalises again.
"""

import os

import torch

from fastltx.checkpoint.loading import load_component
from fastltx.checkpoint.safetensors_file import read_header
from fastltx.models.upsampler.config import RATIONAL_SCALES, UpsamplerConfig
from fastltx.models.upsampler.model import LatentUpsampler
from fastltx.models.video_vae.ops import LatentStatistics


def checkpoint_key(file_key: str) -> str:
    return file_key


def load_latent_upsampler(path: str | os.PathLike, device: torch.device | str = "cpu",
                          dtype: torch.dtype | None = torch.bfloat16) -> LatentUpsampler:
    """Load a latent upsampler file strictly."""
    header = read_header(path)
    cfg = UpsamplerConfig.from_checkpoint_config(header.config(), header.path)
    return load_component(lambda: LatentUpsampler(cfg), header, checkpoint_key, "latent upsampler", device, dtype)


def upsample_latent(latent: torch.Tensor, upsampler: LatentUpsampler, statistics: LatentStatistics) -> torch.Tensor:
    """Upsample a normalised latent: un-normalise with the VAE's statistics, upsample, normalise."""
    upsampler.check_latent(latent)
    return statistics.normalize(upsampler(statistics.un_normalize(latent)))


__all__ = ["LatentUpsampler", "RATIONAL_SCALES", "UpsamplerConfig", "load_latent_upsampler", "upsample_latent"]
