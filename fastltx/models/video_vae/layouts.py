"""The released video VAE layouts and their tiny counterparts, and the factory part that writes them.

"v1" is the LTX-2 (19B) layout: ``*_res`` downsamplers to 2048 channels, a timestep-conditioned
decoder of residual depth-to-space upsamplers, no ``spatial_padding_mode`` key (so the encoder pads
with zeros and the decoder reflects). "v2" is LTX-2.3's: the encoder stops at 1024 channels, the
decoder uses separate space / time / all upsamplers without residuals, no timestep conditioning,
zero padding throughout. Sources: reference notes 1.2 and published header dumps. "tiny" keeps each
layout's compression (8x time, 32x space), block types and 128 latent channels: an encoder that
stays 128 wide with one resnet before and after its four downsamplers (2.8 M parameters), and the
decoder's block sequence with one resnet per stack, 32 channels wide at its input.
"""

import torch

from fastltx.models.video_vae.config import Block, DecoderConfig, EncoderConfig, VideoVAEConfig
from fastltx.models.video_vae.decoder import VideoDecoder
from fastltx.models.video_vae.encoder import VideoEncoder

VERSIONS, SIZES = ("v1", "v2"), ("tiny", "19b")


def _res(n: int) -> Block:
    return Block("res_x", num_layers=n)


def _encoder_blocks(version: str, tiny: bool) -> tuple[Block, ...]:
    depths = (4, 6, 6, 2, 2) if version == "v1" else (4, 6, 4, 2, 2)
    last = 2 if version == "v1" else 1
    downs = [("compress_space_res", 2), ("compress_time_res", 2), ("compress_all_res", 2), ("compress_all_res", last)]
    if tiny:  # 128 wide throughout: one resnet at each end, the downsamplers in between
        return (_res(1),) + tuple(Block(kind, multiplier=1) for kind, _ in downs) + (_res(1),)
    blocks = [_res(depths[0])]
    for (kind, mult), depth in zip(downs, depths[1:], strict=True):
        blocks += [Block(kind, multiplier=mult), _res(depth)]
    return tuple(blocks)


def _decoder_blocks(version: str, tiny: bool) -> tuple[Block, ...]:
    if version == "v1":
        up = Block("compress_all", multiplier=2, residual=True)
        return (_res(1 if tiny else 5), up, _res(1 if tiny else 5), up, _res(1 if tiny else 5), up,
                _res(1 if tiny else 5))
    depths = (4, 6, 4, 2, 2)
    ups = [Block("compress_space", multiplier=2), Block("compress_time", multiplier=2),
           Block("compress_all", multiplier=1), Block("compress_all", multiplier=2)]
    blocks = [_res(1 if tiny else depths[0])]
    for up, depth in zip(ups, depths[1:], strict=True):
        blocks += [up, _res(1 if tiny else depth)]
    return tuple(blocks)


def vae_config(version: str = "v1", size: str = "tiny") -> VideoVAEConfig:
    """The video VAE of LTX-2 ("v1") or LTX-2.3 ("v2"), at full ("19b") or tiny size."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    tiny, v1 = size == "tiny", version == "v1"
    encoder = EncoderConfig(blocks=_encoder_blocks(version, tiny), spatial_padding_mode="zeros")
    decoder = DecoderConfig(blocks=_decoder_blocks(version, tiny), base_channels=4 if tiny else 128,
                            timestep_conditioning=v1, spatial_padding_mode="reflect" if v1 else "zeros")
    return VideoVAEConfig(encoder, decoder)


def adjust_tensor(key: str, t: torch.Tensor) -> torch.Tensor:
    """Random tensors made plausible: positive latent standard deviations, a released-like timestep
    multiplier (a stored scalar; the factory's N(0, 0.01) draw would switch the conditioning off)."""
    if key.endswith("std-of-means"):
        return (0.5 + t.float().abs() * 5).to(t.dtype)
    if key.endswith("timestep_scale_multiplier"):
        return torch.full_like(t, 916.0)
    return t


class _Without(torch.nn.Module):
    """A module's state dict without one sub-module (the statistics live under their own prefix)."""

    def __init__(self, module: torch.nn.Module, drop: str):
        super().__init__()
        self.inner, self.drop = module, drop

    def state_dict(self, *args, **kwargs):
        return {k: v for k, v in self.inner.state_dict().items() if not k.startswith(self.drop)}


def vae_modules(cfg: VideoVAEConfig) -> dict[str, torch.nn.Module]:
    """Key prefix -> module (on meta) holding that prefix's tensors in an official single file."""
    from fastltx.models.video_vae import DECODER_PREFIX, ENCODER_PREFIX, STATISTICS_PREFIX
    with torch.device("meta"):
        encoder, decoder = VideoEncoder(cfg.encoder), VideoDecoder(cfg.decoder)
    stats = "per_channel_statistics."
    return {ENCODER_PREFIX: _Without(encoder, stats), DECODER_PREFIX: _Without(decoder, stats),
            STATISTICS_PREFIX: encoder.per_channel_statistics}


def vae_part(version: str, size: str):
    """The video VAE's share of a single-file checkpoint (``fastltx.checkpoint.factory.Part``)."""
    from fastltx.checkpoint.factory import Part  # the factory imports this module; import it lazily
    cfg = vae_config(version, size)
    return Part({"vae": cfg.to_checkpoint_section()}, vae_modules(cfg), adjust_tensor)


def write_video_vae(path, cfg: VideoVAEConfig, seed: int = 0):
    """A random checkpoint holding only a video VAE of any layout (the factory writes the released ones)."""
    from fastltx.checkpoint.factory import random_state, write_checkpoint
    tensors = {}
    for i, (prefix, module) in enumerate(vae_modules(cfg).items()):
        for key, t in random_state(module, seed * 1_000_003 + i).items():
            tensors[prefix + key] = adjust_tensor(prefix + key, t)
    return write_checkpoint(path, tensors, {"vae": cfg.to_checkpoint_section()})
