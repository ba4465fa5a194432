"""Vocoders: LTX-2's HiFi-GAN (24 kHz stereo) and LTX-2.3's BWE vocoder (48 kHz stereo).

Official keys start with ``vocoder.``; exactly one leading ``vocoder.`` is stripped, so LTX-2.3's
nested ``vocoder.vocoder.*``, ``vocoder.bwe_generator.*`` and ``vocoder.mel_stft.*`` keep their
inner names.
"""

import os

import torch
from torch import nn

from fastltx.checkpoint.loading import load_component
from fastltx.checkpoint.safetensors_file import read_header
from fastltx.models.vocoder.bwe import VocoderWithBWE
from fastltx.models.vocoder.config import BWEConfig, GeneratorConfig, VocoderConfig
from fastltx.models.vocoder.generator import Generator

PREFIX = "vocoder."


def checkpoint_key(file_key: str) -> str | None:
    return file_key[len(PREFIX):] if file_key.startswith(PREFIX) else None


def build_vocoder(cfg: VocoderConfig) -> nn.Module:
    """The generator alone (LTX-2) or the generator with bandwidth extension (LTX-2.3)."""
    return VocoderWithBWE(cfg) if cfg.bwe is not None else Generator(cfg.generator)


def load_vocoder(path: str | os.PathLike, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = torch.bfloat16) -> nn.Module:
    """Load the vocoder of an official checkpoint strictly; ``.output_sampling_rate`` gives its rate."""
    header = read_header(path)
    cfg = VocoderConfig.from_checkpoint_config(header.config(), header.path)
    model = load_component(lambda: build_vocoder(cfg), header, checkpoint_key, "vocoder", device, dtype)
    return model.to(device)  # the computed (non-stored) resampler filter follows the weights


__all__ = ["BWEConfig", "Generator", "GeneratorConfig", "VocoderConfig", "VocoderWithBWE", "build_vocoder",
           "checkpoint_key", "load_vocoder"]
