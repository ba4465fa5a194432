"""Gemma hidden states -> the diffusion model's video and audio text contexts.

``TextProcessor`` holds the feature extractor (``text_embedding_projection.*`` in official files)
and the two connectors (``model.diffusion_model.{video,audio}_embeddings_connector.*``); it is
loaded strictly from the single-file checkpoint.
"""

import os
from dataclasses import dataclass

import torch
from torch import nn

from fastltx.checkpoint.loading import load_component
from fastltx.checkpoint.safetensors_file import CheckpointError, SafetensorsHeader, read_header
from fastltx.models.text_encoder.config import GemmaGeometry, TextConfig
from fastltx.models.text_encoder.connector import Connector
from fastltx.models.text_encoder.features import FeatureExtractorV1, FeatureExtractorV2

PROJECTION_PREFIX = "text_embedding_projection."
VIDEO_CONNECTOR_PREFIX = "model.diffusion_model.video_embeddings_connector."
AUDIO_CONNECTOR_PREFIX = "model.diffusion_model.audio_embeddings_connector."
_PREFIXES = ((PROJECTION_PREFIX, "feature_extractor."), (VIDEO_CONNECTOR_PREFIX, "video_connector."),
             (AUDIO_CONNECTOR_PREFIX, "audio_connector."))


@dataclass(frozen=True)
class TextEncoding:
    """The text contexts of a batch of prompts: (B, T, width) each; every position is valid."""

    video: torch.Tensor
    audio: torch.Tensor | None

    def __len__(self) -> int:
        return self.video.shape[0]

    def __getitem__(self, i: int | slice) -> "TextEncoding":
        """The contexts of one prompt (or a slice of prompts), keeping the batch dimension."""
        pick = slice(i, i + 1) if isinstance(i, int) else i
        return TextEncoding(self.video[pick], None if self.audio is None else self.audio[pick])


class TextProcessor(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        audio_dim = cfg.audio.dim if cfg.audio is not None else None
        if cfg.version == "V1":
            self.feature_extractor = FeatureExtractorV1(cfg.gemma.feature_width, cfg.video.dim)
        else:
            self.feature_extractor = FeatureExtractorV2(cfg.gemma.feature_width, cfg.gemma.hidden, cfg.video.dim,
                                                        audio_dim)
        self.video_connector = Connector(cfg.video, cfg.rope_layout, cfg.rope_float64)
        self.audio_connector = Connector(cfg.audio, cfg.rope_layout, cfg.rope_float64) if cfg.audio else None

    def features(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stacked hidden states (B, T, D, L) and the tokenizer mask -> (video, audio) features."""
        return self.feature_extractor(hidden, mask)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> TextEncoding:
        video, audio = self.features(hidden, mask)
        video = self.video_connector(video, mask)
        if self.audio_connector is not None:
            audio = self.audio_connector(audio, mask)
        return TextEncoding(video, audio)


def checkpoint_key(file_key: str) -> str | None:
    """File key -> TextProcessor state-dict key (None for other components' keys)."""
    for prefix, ours in _PREFIXES:
        if file_key.startswith(prefix):
            return ours + file_key[len(prefix):]
    return None


def read_text_config(header: SafetensorsHeader, gemma: GemmaGeometry) -> TextConfig:
    """The text path's configuration, checked against the Gemma model before any weight is read."""
    audio = any(k.startswith(AUDIO_CONNECTOR_PREFIX) for k in header.tensors)
    cfg = TextConfig.from_checkpoint_config(header.config(), header.path, gemma, audio)
    name = PROJECTION_PREFIX + ("aggregate_embed.weight" if cfg.version == "V1" else "video_aggregate_embed.weight")
    info = header.tensors.get(name)
    if info is None:
        raise CheckpointError(header.path, f"the text projection {name} is missing (is this an LTX-2 checkpoint?)")
    if len(info.shape) == 2 and info.shape[1] != gemma.feature_width:
        raise CheckpointError(
            header.path, f"the text projection {name} takes {info.shape[1]} features, but the Gemma model gives "
                         f"{gemma.feature_width} (hidden size {gemma.hidden} x {gemma.states} hidden states): "
                         "this checkpoint was made for another text encoder")
    return cfg


def load_text_processor(path: str | os.PathLike, gemma: GemmaGeometry, device: torch.device | str = "cpu",
                        dtype: torch.dtype | None = torch.bfloat16) -> TextProcessor:
    """Load the feature extractor and connectors of an official checkpoint strictly."""
    header = read_header(path)
    cfg = read_text_config(header, gemma)
    return load_component(lambda: TextProcessor(cfg), header, checkpoint_key, "text processor", device, dtype)
