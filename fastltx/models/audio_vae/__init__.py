"""The audio VAE: config, encoder and decoder, front end, and strict loading from a checkpoint.

Official keys: ``audio_vae.encoder.*``, ``audio_vae.decoder.*`` and the shared
``audio_vae.per_channel_statistics.*`` (extra statistics some files carry are ignored).
"""

import os

import torch

from fastltx.checkpoint.loading import load_component
from fastltx.checkpoint.safetensors_file import read_header
from fastltx.models.audio_vae.config import AudioVAEConfig
from fastltx.models.audio_vae.mel import waveform_to_mel
from fastltx.models.audio_vae.model import AudioDecoder, AudioEncoder

PREFIX = "audio_vae."
STATS = "per_channel_statistics."


def checkpoint_key(part: str):
    """File key -> model key for ``part`` ("encoder" or "decoder"); None for other components' keys."""
    own = f"{PREFIX}{part}."

    def key_map(file_key: str) -> str | None:
        if file_key.startswith(own):
            return file_key[len(own):]
        if file_key.startswith(PREFIX + STATS):
            return file_key[len(PREFIX):]
        return None
    return key_map


def _load(cls, part: str, path, device, dtype):
    header = read_header(path)
    cfg = AudioVAEConfig.from_checkpoint_config(header.config(), header.path)
    return load_component(lambda: cls(cfg), header, checkpoint_key(part), f"audio VAE {part}", device, dtype,
                          ignored=lambda key: key.startswith(STATS))


def load_audio_encoder(path: str | os.PathLike, device: torch.device | str = "cpu",
                       dtype: torch.dtype | None = torch.bfloat16) -> AudioEncoder:
    return _load(AudioEncoder, "encoder", path, device, dtype)


def load_audio_decoder(path: str | os.PathLike, device: torch.device | str = "cpu",
                       dtype: torch.dtype | None = torch.bfloat16) -> AudioDecoder:
    return _load(AudioDecoder, "decoder", path, device, dtype)


__all__ = ["AudioDecoder", "AudioEncoder", "AudioVAEConfig", "checkpoint_key", "load_audio_decoder",
           "load_audio_encoder", "waveform_to_mel"]
