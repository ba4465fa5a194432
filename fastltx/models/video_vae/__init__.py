"""The video VAE: config, encoder, decoder, tiling and streaming, and loading from a checkpoint.

Official single files keep the encoder under ``vae.encoder.``, the decoder under ``vae.decoder.``
and the latent statistics both share under ``vae.per_channel_statistics.`` (extra statistics some
files carry there are ignored, as the reference ignores them).
"""

import os

import torch

from fastltx.checkpoint.loading import load_component
from fastltx.checkpoint.safetensors_file import read_header
from fastltx.layers.conv import to_channels_last
from fastltx.models.video_vae.config import Block, DecoderConfig, EncoderConfig, VideoVAEConfig, latent_channels
from fastltx.models.video_vae.decode import decode_video, encode_video
from fastltx.models.video_vae.decoder import VideoDecoder
from fastltx.models.video_vae.encoder import VideoEncoder
from fastltx.models.video_vae.ops import LatentStatistics, to_uint8_frames
from fastltx.models.video_vae.tiling import SpatialTiling, TemporalTiling, Tiling

ENCODER_PREFIX = "vae.encoder."
DECODER_PREFIX = "vae.decoder."
STATISTICS_PREFIX = "vae.per_channel_statistics."
_STATISTICS = "per_channel_statistics."


def _key_map(prefix: str):
    def key(file_key: str) -> str | None:
        if file_key.startswith(prefix):
            return file_key[len(prefix):]
        if file_key.startswith(STATISTICS_PREFIX):
            return _STATISTICS + file_key[len(STATISTICS_PREFIX):]
        return None
    return key


encoder_key = _key_map(ENCODER_PREFIX)
decoder_key = _key_map(DECODER_PREFIX)


def _statistics_key(file_key: str) -> str | None:
    return file_key[len(STATISTICS_PREFIX):] if file_key.startswith(STATISTICS_PREFIX) else None


def _extra_statistics(key: str) -> bool:
    return key.startswith(_STATISTICS)


def _cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def load_video_encoder(path: str | os.PathLike, device: torch.device | str = "cpu",
                       dtype: torch.dtype | None = torch.bfloat16, channels_last: bool | None = None) -> VideoEncoder:
    """Load the video VAE encoder of an official checkpoint strictly.

    ``channels_last`` (default: on CUDA) stores convolution weights in cuDNN's fast layout.
    """
    return _load(EncoderConfig, VideoEncoder, encoder_key, "video VAE encoder", path, device, dtype, channels_last)


def load_video_decoder(path: str | os.PathLike, device: torch.device | str = "cpu",
                       dtype: torch.dtype | None = torch.bfloat16, channels_last: bool | None = None) -> VideoDecoder:
    """Load the video VAE decoder of an official checkpoint strictly (see ``load_video_encoder``)."""
    return _load(DecoderConfig, VideoDecoder, decoder_key, "video VAE decoder", path, device, dtype, channels_last)


def _load(config_class, model_class, key_map, name: str, path, device, dtype, channels_last: bool | None):
    """Strict loading of one half of the VAE; channels-last convolution weights by default on CUDA."""
    header = read_header(path)
    cfg = config_class.from_checkpoint_config(header.config(), header.path)
    model = load_component(lambda: model_class(cfg), header, key_map, name, device, dtype, ignored=_extra_statistics)
    return to_channels_last(model) if (_cuda(device) if channels_last is None else channels_last) else model


def load_latent_statistics(path: str | os.PathLike, device: torch.device | str = "cpu",
                           dtype: torch.dtype | None = torch.bfloat16) -> LatentStatistics:
    """Only the per-channel latent statistics (what the latent upsampler needs), without the VAE."""
    header = read_header(path)
    channels = latent_channels(header.config(), header.path)
    return load_component(lambda: LatentStatistics(channels), header, _statistics_key, "video VAE statistics",
                          device, dtype, ignored=lambda key: True)


__all__ = ["Block", "DecoderConfig", "EncoderConfig", "LatentStatistics", "SpatialTiling", "TemporalTiling", "Tiling",
           "VideoDecoder", "VideoEncoder", "VideoVAEConfig", "decode_video", "decoder_key", "encode_video",
           "encoder_key", "load_latent_statistics", "load_video_decoder", "load_video_encoder", "to_uint8_frames"]
