"""Choosing how to decode from the memory at hand, so that nobody has to pick tile sizes.

Three ways, best first: one pass (exact, fastest); streamed over temporal chunks of the latent
(``VideoDecoder.decode_chunks``: the same result as one pass, memory bounded by the chunk); the
reference's tiling (approximate at tile seams; only when even one-latent-frame chunks do not fit,
i.e. for frames far larger than the released resolutions). The estimates count activation bytes
through the decoder's stages (``ACTIVATIONS_LIVE`` activation-sized buffers at the widest one, plus
what streaming carries between chunks) and are meant to err high; ``bench/video_vae.py`` prints
them next to measured peaks. The count depends on the path (measured on an H100, 121 frames,
2026-11-26): the eager path holds about 9 (input, norm, temporal and reflect padding copies,
cuDNN's channels-last copies of its input and output, output; 26.4 GB at 1024x1536), the fused
path about 5 (input, padded input, two convolution outputs, workspace; 14.6 GB).
"""

from dataclasses import dataclass

import torch

from fastltx.models.video_vae.config import DECODER_BLOCKS, DecoderConfig
from fastltx.models.video_vae.tiling import SpatialTiling, TemporalTiling, Tiling, decode_tiles

ACTIVATIONS_LIVE = {False: 9, True: 5}  # activation-sized buffers alive at the widest stage: eager, fused path
WORKSPACE = 512 * 2**20  # convolution workspace and allocator slack
SPATIAL_TILES = (1024, 768, 512, 384, 256, 192, 128)  # pixels, tried largest first when tiling is the only way


@dataclass(frozen=True)
class Streaming:
    """Decode streamed over ``chunk_frames`` latent frames at a time (exact: equals one pass)."""

    chunk_frames: int = 1


DecodePlan = Streaming | Tiling | None  # None: one pass


@dataclass(frozen=True)
class _Stage:
    channels: int
    frames_per_latent: float  # frames at this stage per latent frame (1, 2, 4, 8 ...)
    pixels: int  # height * width at this stage
    convs: int  # temporal convolutions run at this stage (each carries two frames when streaming)


def _stages(cfg: DecoderConfig, height: int, width: int) -> list[_Stage]:
    """The decoder's stages, input to output, for a latent of height x width."""
    channels, t, h, w = cfg.base_channels * 8, 1.0, height, width
    stages = [_Stage(cfg.latent_channels, t, h * w, 1)]
    convs = 0
    for block in reversed(cfg.blocks):
        stride = DECODER_BLOCKS[block.kind]
        convs += 2 * block.num_layers if block.kind == "res_x" else (2 if block.kind == "res_x_y" else 1)
        if stride is not None or block.kind == "res_x_y":
            stages.append(_Stage(channels, t, h * w, convs))
            convs = 0
            channels //= block.multiplier
            if stride is not None:
                t, h, w = t * stride[0], h * stride[1], w * stride[2]
    stages.append(_Stage(channels, t, h * w, convs + 1))
    out = cfg.out_channels * cfg.patch_size ** 2
    stages.append(_Stage(out, t, h * w, 0))
    return stages


def estimate_decode_bytes(cfg: DecoderConfig, latent_shape: tuple[int, ...], dtype: torch.dtype,
                          chunk_frames: int | None = None, fused: bool = False) -> int:
    """Estimated peak bytes above the weights to decode ``latent_shape`` (B, C, F, H, W) in one pass
    (``chunk_frames=None``) or streamed ``chunk_frames`` latent frames at a time, on the eager or the
    fused path (``VideoDecoder.fused``)."""
    b, _, f, h, w = latent_shape
    size = torch.empty((), dtype=dtype).element_size()
    streamed = chunk_frames is not None
    n = min(f, chunk_frames) if streamed else f
    stages = _stages(cfg, h, w)
    # frames a stage holds at once: the chunk's share, plus the two frames a streamed convolution waits on
    widest = max(s.channels * s.pixels * (s.frames_per_latent * n + 2 * streamed) for s in stages)
    carried = sum(3 * max(s.convs, 1) * s.channels * s.pixels for s in stages) if streamed else 0
    video = cfg.out_channels * (1 + (n - 1) * cfg.temporal_factor) * h * w * cfg.spatial_factor ** 2
    return int(b * ((widest * ACTIVATIONS_LIVE[fused] + carried) * size + video * (size + 1))) + WORKSPACE


def estimate_tiled_bytes(cfg: DecoderConfig, latent_shape: tuple[int, ...], dtype: torch.dtype, tiling: Tiling,
                         fused: bool = False) -> int:
    """Estimated peak bytes of the reference-style tiled decode: the largest tile in one pass, plus two
    temporal groups of blended output and their weights."""
    b, c, f, h, w = latent_shape
    tiles = decode_tiles(f, h, w, tiling, cfg.temporal_factor, cfg.spatial_factor)
    largest = max(tiles, key=lambda t: (t.source[0].stop - t.source[0].start) * (t.source[1].stop - t.source[1].start)
                  * (t.source[2].stop - t.source[2].start))
    shape = (b, c) + tuple(s.stop - s.start for s in largest.source)
    group = max(t.target[0].stop - t.target[0].start for t in tiles)
    size = torch.empty((), dtype=dtype).element_size()
    pixels = h * w * cfg.spatial_factor ** 2
    groups = 2 * group * pixels * (b * cfg.out_channels + 1) * size
    return estimate_decode_bytes(cfg, shape, dtype, fused=fused) + groups


def plan_decode(cfg: DecoderConfig, latent_shape: tuple[int, ...], dtype: torch.dtype, budget: int,
                streamable: bool = True, fused: bool = False) -> DecodePlan:
    """The fastest way to decode within ``budget`` bytes (see the module docstring)."""
    if estimate_decode_bytes(cfg, latent_shape, dtype, fused=fused) <= budget:
        return None
    frames = latent_shape[2]
    if streamable:
        fitting = [c for c in range(1, frames + 1)
                   if estimate_decode_bytes(cfg, latent_shape, dtype, c, fused) <= budget]
        if fitting:
            return Streaming(max(fitting))
    temporal = TemporalTiling(64, 24)
    for tile in SPATIAL_TILES:
        tiling = Tiling(SpatialTiling(tile, 64 if tile >= 256 else 32), temporal)
        if estimate_tiled_bytes(cfg, latent_shape, dtype, tiling, fused) <= budget:
            return tiling
    return Tiling(SpatialTiling(SPATIAL_TILES[-1], 32), TemporalTiling(16, 8))


def available_memory(device: torch.device | str, fraction: float = 0.9) -> int | None:
    """Bytes a decode may use on ``device``: a fraction of what is free (including PyTorch's own free
    cache); None off the GPU (decode in one pass)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int((free + cached) * fraction)
