"""Tiled video decoding split across the processes of a World; the frames come out on rank 0 only.

Tile i is decoded by rank i % world size and sent to rank 0, which blends the tiles in the usual
order. A timestep-conditioned decoder draws each tile's noise from the shared generator before the
tile runs, so every rank draws the noise of every tile, in tile order, decoding only its own: the
frames are those one process would make. Plans other than tiling (one pass, streaming) and decoders
that also draw noise inside their layers decode on rank 0 alone.
"""

from collections.abc import Iterator

import torch
import torch.distributed as dist

from fastltx.models.video_vae.decode import decode_video, resolve_plan, tiled_decode
from fastltx.models.video_vae.decoder import VideoDecoder
from fastltx.models.video_vae.ops import to_uint8_frames
from fastltx.models.video_vae.tiling import Tiling, decode_tiles
from fastltx.runtime.distributed import World


def decode_video_split(world: World | None, decoder: VideoDecoder, latent: torch.Tensor,
                       generator: torch.Generator | None = None, tiling="auto",
                       memory_budget: int | None = None) -> Iterator[torch.Tensor]:
    """``decode_video`` over a world: rank 0 yields the uint8 frame chunks, the other ranks nothing.
    Every rank must call it (with the same latent and generator state); rank 0 chooses the plan."""
    if world is None or world.size == 1:
        yield from decode_video(decoder, latent, generator, tiling, memory_budget)
        return
    world.agree(lambda: decoder.check_latent(latent))
    plan = world.broadcast(resolve_plan(decoder, latent, tiling, memory_budget))
    noise_inside = any(getattr(m, "inject_noise", False) for m in decoder.modules())
    if not isinstance(plan, Tiling) or noise_inside:
        if world.main:
            yield from decode_video(decoder, latent, generator, plan)
        return
    main = dist.get_global_rank(world.group, 0)

    def owner(index: int) -> int:
        return index % world.size

    if world.main:
        def decode_tile(index: int, piece: torch.Tensor) -> torch.Tensor:
            if owner(index) == 0:
                return decoder(piece, None, generator)
            decoder.prepare(piece, None, generator)  # the tile's noise, to keep the generator in step
            return _receive(dist.get_global_rank(world.group, owner(index)), world, latent)

        for chunk in tiled_decode(decoder, latent, plan, None, generator, decode_tile):
            yield to_uint8_frames(chunk)
        return
    cfg = decoder.cfg
    _, _, f, h, w = latent.shape
    pending = []
    for index, tile in enumerate(decode_tiles(f, h, w, plan, cfg.temporal_factor, cfg.spatial_factor)):
        piece = latent[(slice(None), slice(None)) + tile.source]
        if owner(index) != world.rank:
            decoder.prepare(piece, None, generator)
            continue
        decoded = decoder(piece, None, generator).to(latent.dtype).contiguous()
        shape = torch.tensor(decoded.shape, dtype=torch.int64, device=latent.device)
        pending += [(dist.isend(t, main, group=world.group), t) for t in (shape, decoded)]
    for work, _ in pending:
        work.wait()


def _receive(source: int, world: World, latent: torch.Tensor) -> torch.Tensor:
    shape = torch.empty(5, dtype=torch.int64, device=latent.device)
    dist.recv(shape, source, group=world.group)
    decoded = torch.empty(shape.tolist(), dtype=latent.dtype, device=latent.device)
    dist.recv(decoded, source, group=world.group)
    return decoded
