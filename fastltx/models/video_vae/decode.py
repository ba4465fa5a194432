"""Decoding to frames and encoding from pixels: one pass, streamed, or tiled as the reference tiles.

``decode_video`` yields uint8 frame chunks (f, H, W, 3) like the reference's ``decode_video``; with
``tiling="auto"`` (the default) it picks the fastest way that fits the free GPU memory
(``memory.plan_decode``), which is exact unless memory is far too small even for streaming.
``tiled_decode`` / ``tiled_encode`` reproduce the reference's tiled results (blend order, dtype of
the accumulation, generator order over tiles).
"""

from collections.abc import Callable, Iterator

import torch

from fastltx.models.video_vae.decoder import VideoDecoder
from fastltx.models.video_vae.encoder import VideoEncoder
from fastltx.models.video_vae.memory import DecodePlan, Streaming, available_memory, plan_decode
from fastltx.models.video_vae.ops import to_uint8_frames
from fastltx.models.video_vae.tiling import Tiling, decode_tiles, encode_tiles

_MIN_WEIGHT = 1e-8


def tiled_decode(decoder: VideoDecoder, latent: torch.Tensor, tiling: Tiling, timestep: torch.Tensor | None = None,
                 generator: torch.Generator | None = None,
                 decode_tile: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> Iterator[torch.Tensor]:
    """Decode tile by tile with the reference's blending; yields (B, 3, f, H, W) chunks in time order.

    Tiles sharing a temporal slice are blended into one buffer (in the latent's dtype, as the
    reference accumulates); consecutive temporal buffers are blended over their overlap and each
    chunk is yielded once no later tile can touch it. ``decode_tile(index, tile_latent)`` replaces
    the decoder call per tile (e.g. to fetch a tile another process decoded), in tile order.
    """
    decoder.check_latent(latent)
    cfg = decoder.cfg
    b, _, f, h, w = latent.shape
    tiles = decode_tiles(f, h, w, tiling, cfg.temporal_factor, cfg.spatial_factor)
    height, width = h * cfg.spatial_factor, w * cfg.spatial_factor
    groups: list[list] = []
    for tile in tiles:
        if groups and groups[-1][0].target[0] == tile.target[0]:
            groups[-1].append(tile)
        else:
            groups.append([tile])
    prev = prev_weights = prev_slice = None
    index = 0
    for group in groups:
        span = group[0].target[0]
        n = span.stop - span.start
        buffer = torch.zeros((b, cfg.out_channels, n, height, width), device=latent.device, dtype=latent.dtype)
        weights = torch.zeros((1, 1, n, height, width), device=latent.device, dtype=latent.dtype)
        for tile in group:
            piece = latent[(slice(None), slice(None)) + tile.source]
            decoded = decoder(piece, timestep, generator) if decode_tile is None else decode_tile(index, piece)
            index += 1
            mask = tile.blend_mask().to(device=latent.device, dtype=latent.dtype)
            offset = tile.target[0].start - span.start
            length = min(tile.target[0].stop - tile.target[0].start, decoded.shape[2], n - offset)
            region = (slice(None), slice(None), slice(offset, offset + length), tile.target[1], tile.target[2])
            mask = mask[:, :, :length] if mask.shape[2] > 1 else mask
            buffer[region] += decoded[:, :, :length] * mask
            weights[region] += mask
            del decoded
        if prev is not None:
            if prev_slice.stop > span.start:  # blend the overlap into both buffers
                overlap = prev_slice.stop - span.start
                into = slice(span.start - prev_slice.start, None)
                prev[:, :, into] += buffer[:, :, :overlap]
                prev_weights[:, :, into] += weights[:, :, :overlap]
                buffer[:, :, :overlap] = prev[:, :, into]
                weights[:, :, :overlap] = prev_weights[:, :, into]
            done = span.start - prev_slice.start
            yield prev[:, :, :done] / prev_weights[:, :, :done].clamp(min=_MIN_WEIGHT)
        prev, prev_weights, prev_slice = buffer, weights, span
    yield prev / prev_weights.clamp(min=_MIN_WEIGHT)


def tiled_encode(encoder: VideoEncoder, video: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """Encode tile by tile, keeping each tile's inner latents (the reference's tiled encode).

    The video may live on another device (e.g. the CPU); tiles move to the encoder's device and dtype.
    """
    encoder.check_input(video)
    cfg = encoder.cfg
    param = next(encoder.parameters())
    b, _, f, h, w = video.shape
    tiles = encode_tiles(f, h, w, tiling, cfg.temporal_factor, cfg.spatial_factor)
    t, s = cfg.temporal_factor, cfg.spatial_factor
    shape = (b, cfg.latent_channels, (f - 1) // t + 1, h // s, w // s)
    latent = torch.zeros(shape, device=param.device, dtype=param.dtype)
    weights = torch.zeros((1, 1) + shape[2:], device=param.device, dtype=param.dtype)
    for tile in tiles:
        piece = video[(slice(None), slice(None)) + tile.source].to(device=param.device, dtype=param.dtype)
        mask = tile.blend_mask().to(device=param.device, dtype=param.dtype)
        region = (slice(None), slice(None)) + tile.target
        latent[region] += encoder(piece) * mask
        weights[region] += mask
    return latent / weights.clamp(min=_MIN_WEIGHT)


def resolve_plan(decoder: VideoDecoder, latent: torch.Tensor, tiling: "DecodePlan | str",
                 memory_budget: int | None = None) -> DecodePlan:
    """The plan ``decode_video`` follows: ``"auto"`` asks ``plan_decode`` with the budget (default:
    the free memory of the latent's device; one pass off the GPU)."""
    if tiling != "auto":
        if tiling is not None and not isinstance(tiling, (Tiling, Streaming)):
            raise ValueError(f"tiling must be 'auto', None, a Tiling or a Streaming, got {tiling!r}")
        return tiling
    budget = memory_budget if memory_budget is not None else available_memory(latent.device)
    if budget is None:
        return None
    return plan_decode(decoder.cfg, tuple(latent.shape), latent.dtype, budget, decoder.streamable, decoder.fused)


def decode_video(decoder: VideoDecoder, latent: torch.Tensor, generator: torch.Generator | None = None,
                 tiling: "DecodePlan | str" = "auto", memory_budget: int | None = None,
                 timestep: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Decode one latent (1, C, F, H, W) to uint8 frames, yielded in consecutive chunks (f, H, W, 3).

    ``tiling``: "auto" (fit ``memory_budget`` bytes, default the free GPU memory), None (one pass),
    ``Streaming(chunk_frames)`` (exact, bounded memory) or a ``Tiling`` (the reference's tiles).
    A timestep-conditioned decoder draws its noise from ``generator``.
    """
    decoder.check_latent(latent)
    if latent.shape[0] != 1:
        raise ValueError(f"decode_video decodes one video at a time, got a batch of {latent.shape[0]}")
    plan = resolve_plan(decoder, latent, tiling, memory_budget)
    if plan is None:
        yield to_uint8_frames(decoder(latent, timestep, generator))
    elif isinstance(plan, Streaming):
        for chunk in decoder.decode_chunks(latent, plan.chunk_frames, timestep, generator):
            yield to_uint8_frames(chunk)
    else:
        for chunk in tiled_decode(decoder, latent, plan, timestep, generator):
            yield to_uint8_frames(chunk)


def encode_video(encoder: VideoEncoder, video: torch.Tensor, tiling: Tiling | None = None) -> torch.Tensor:
    """Pixels (B, 3, 8k+1, H, W) in [-1, 1] -> normalised latent, in one pass or tiled."""
    if tiling is None:
        param = next(encoder.parameters())
        return encoder(video.to(device=param.device, dtype=param.dtype))
    return tiled_encode(encoder, video, tiling)
