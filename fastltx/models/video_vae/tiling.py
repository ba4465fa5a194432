"""Tile geometry of the reference's tiled decode and encode: settings, intervals, blend masks, tiles.

Decoding tiles the latent: spatial tiles are sized to the frame's aspect ratio and blended with
linear (trapezoidal) ramps; temporal tiles after the first start one latent frame earlier and ramp
over one more (the decoder's first output frame of a tile covers a single pixel frame). Encoding
tiles the pixels with at least 64 px / 16 frames of overlap and keeps each tile's inner latents
only (0/1 masks that drop one latent per inner edge).
"""

from dataclasses import dataclass

import torch

# LTX-2's video compression: the tile settings are given in pixels and frames and must be
# multiples of these.
FRAMES_PER_LATENT, PIXELS_PER_LATENT = 8, 32
MIN_ENCODE_OVERLAP_PIXELS, MIN_ENCODE_OVERLAP_FRAMES = 64, 16


@dataclass(frozen=True)
class SpatialTiling:
    """Square tiles of ``tile`` pixels overlapping by ``overlap`` pixels (multiples of 32, tile >= 64)."""

    tile: int
    overlap: int = 0

    def __post_init__(self):
        _check("spatial", "pixels", self.tile, self.overlap, PIXELS_PER_LATENT, 2 * PIXELS_PER_LATENT)


@dataclass(frozen=True)
class TemporalTiling:
    """Tiles of ``tile`` frames overlapping by ``overlap`` frames (multiples of 8, tile >= 16)."""

    tile: int
    overlap: int = 0

    def __post_init__(self):
        _check("temporal", "frames", self.tile, self.overlap, FRAMES_PER_LATENT, 2 * FRAMES_PER_LATENT)


def _check(kind: str, unit: str, tile: int, overlap: int, multiple: int, minimum: int) -> None:
    if tile < minimum or tile % multiple:
        raise ValueError(f"{kind} tile size must be a multiple of {multiple} {unit} and at least {minimum}, got {tile}")
    if overlap < 0 or overlap % multiple:
        raise ValueError(f"{kind} tile overlap must be a non-negative multiple of {multiple} {unit}, got {overlap}")
    if overlap >= tile:
        raise ValueError(f"{kind} tile size ({tile} {unit}) must be larger than the overlap ({overlap} {unit})")


@dataclass(frozen=True)
class Tiling:
    """Tiled decoding/encoding as the reference does it (``Tiling.default()``: 512/64 px, 64/24 frames)."""

    spatial: SpatialTiling | None = None
    temporal: TemporalTiling | None = None

    @classmethod
    def default(cls) -> "Tiling":
        return cls(SpatialTiling(512, 64), TemporalTiling(64, 24))


@dataclass(frozen=True)
class Interval:
    start: int
    end: int
    left_ramp: int = 0
    right_ramp: int = 0


def split_overlapping(length: int, size: int, overlap: int) -> list[Interval]:
    """Cover [0, length) with tiles of ``size`` stepping by ``size - overlap``; the last one is cut at the end."""
    if length <= size:
        return [Interval(0, length)]
    step = size - overlap
    count = (length + size - 2 * overlap - 1) // step
    return [Interval(i * step, length if i == count - 1 else i * step + size,
                     overlap if i else 0, overlap if i < count - 1 else 0) for i in range(count)]


def split_latent_frames(length: int, size: int, overlap: int) -> list[Interval]:
    """Decode: as ``split_overlapping``, but tiles after the first start one frame earlier and ramp one longer."""
    tiles = split_overlapping(length, size, overlap)
    if len(tiles) == 1:
        return tiles
    return tiles[:1] + [Interval(t.start - 1, t.end, t.left_ramp + 1, t.right_ramp) for t in tiles[1:]]


def split_pixel_frames(length: int, size: int, overlap: int) -> list[Interval]:
    """Encode: as ``split_overlapping``, but tiles before the last end one frame later (8k+1 frames), no right ramp."""
    tiles = split_overlapping(length, size, overlap)
    if len(tiles) == 1:
        return tiles
    last = len(tiles) - 1
    return [Interval(t.start, t.end + (i < last), t.left_ramp, 0) for i, t in enumerate(tiles)]


def trapezoid_mask(length: int, left: int, right: int, left_from_zero: bool = False) -> torch.Tensor:
    """Ones with linear ramps: ``left`` values rising towards 1 (from 0 itself when ``left_from_zero``),
    ``right`` values falling towards 0 (neither end value included); overlapping ramps multiply."""
    if length <= 0:
        raise ValueError("mask length must be positive")
    left, right = max(0, min(left, length)), max(0, min(right, length))
    mask = torch.ones(length)
    if left:
        rise = torch.linspace(0.0, 1.0, left + 1 if left_from_zero else left + 2)[:-1]
        mask[:left] *= rise if left_from_zero else rise[1:]
    if right:
        mask[-right:] *= torch.linspace(1.0, 0.0, steps=right + 2)[1:-1]
    return mask.clamp_(0, 1)


def rectangle_mask(length: int, left: int, right: int) -> torch.Tensor:
    """Ones, with the first ``left`` and last ``right`` values zero."""
    if length <= 0:
        raise ValueError("mask length must be positive")
    mask = torch.ones(length)
    if left > 0:
        mask[:left] = 0
    if right > 0:
        mask[-right:] = 0
    return mask


@dataclass(frozen=True)
class Tile:
    """One tile: where to read it (time, height, width of the input), where its output goes, and its
    per-axis blend masks in output units (None: weight 1)."""

    source: tuple[slice, slice, slice]
    target: tuple[slice, slice, slice]
    masks: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]

    def blend_mask(self) -> torch.Tensor:
        """The separable mask (1, 1, t, h, w), multiplied out time first, then height, then width."""
        mask = torch.ones(1).view(1, 1, 1, 1, 1)
        for axis, m in enumerate(self.masks):
            if m is not None:
                shape = [1, 1, 1, 1, 1]
                shape[2 + axis] = m.shape[0]
                mask = mask * m.view(shape)
        return mask


def _tiles(axes: list[tuple[list[Interval], list[slice], list[torch.Tensor | None]]]) -> list[Tile]:
    """All combinations, time-major then height then width (the reference's order, which fixes the
    order a shared generator is drawn from)."""
    (ti, to, tm), (hi, ho, hm), (wi, wo, wm) = axes
    return [Tile((slice(t.start, t.end), slice(h.start, h.end), slice(w.start, w.end)), (to[a], ho[b], wo[c]),
                 (tm[a], hm[b], wm[c]))
            for a, t in enumerate(ti) for b, h in enumerate(hi) for c, w in enumerate(wi)]


def decode_tiles(frames: int, height: int, width: int, tiling: Tiling, time_scale: int = FRAMES_PER_LATENT,
                 space_scale: int = PIXELS_PER_LATENT) -> list[Tile]:
    """Tiles of a latent (frames, height, width) for decoding; targets in output frames and pixels."""
    axes = []
    if tiling.temporal is not None:
        size, overlap = tiling.temporal.tile // time_scale, tiling.temporal.overlap // time_scale
        intervals = split_latent_frames(frames, size, overlap)
        targets, masks = [], []
        for t in intervals:
            start, stop = t.start * time_scale, 1 + (t.end - 1) * time_scale
            left = 0 if t.left_ramp == 0 else 1 + (t.left_ramp - 1) * time_scale
            targets.append(slice(start, stop))
            masks.append(trapezoid_mask(stop - start, left, t.right_ramp * time_scale, True))
        axes.append((intervals, targets, masks))
    else:
        axes.append(([Interval(0, frames)], [slice(0, 1 + (frames - 1) * time_scale)], [None]))
    long_side = max(height, width)
    for length in (height, width):
        if tiling.spatial is None:
            axes.append(([Interval(0, length)], [slice(0, length * space_scale)], [None]))
            continue
        size, overlap = tiling.spatial.tile // space_scale, tiling.spatial.overlap // space_scale
        size = max(max(2, overlap + 1), round(size * length / long_side))  # tiles follow the aspect ratio
        intervals = split_overlapping(length, size, overlap)
        axes.append((intervals, [slice(t.start * space_scale, t.end * space_scale) for t in intervals],
                     [trapezoid_mask((t.end - t.start) * space_scale, t.left_ramp * space_scale,
                                     t.right_ramp * space_scale) for t in intervals]))
    return _tiles(axes)


def encode_tiles(frames: int, height: int, width: int, tiling: Tiling, time_scale: int = FRAMES_PER_LATENT,
                 space_scale: int = PIXELS_PER_LATENT) -> list[Tile]:
    """Tiles of a video (frames, height, width) for encoding; targets in latent units.

    Overlaps below 64 px / 16 frames are raised to those minimums (the reference's rule); a tile
    that is then not larger than its overlap is an error.
    """
    axes = []
    if tiling.temporal is not None:
        overlap = max(tiling.temporal.overlap, MIN_ENCODE_OVERLAP_FRAMES)
        _check_encode_tile("temporal", "frames", frames, tiling.temporal.tile, overlap)
        intervals = split_pixel_frames(frames, tiling.temporal.tile, overlap)
        targets, masks = [], []
        for t in intervals:
            start, stop = t.start // time_scale, (t.end - 1) // time_scale + 1
            targets.append(slice(start, stop))
            left = 0 if t.left_ramp == 0 else 1 + (t.left_ramp - 1) // time_scale
            masks.append(rectangle_mask(stop - start, left, 0))
        axes.append((intervals, targets, masks))
    else:
        axes.append(([Interval(0, frames)], [slice(0, (frames - 1) // time_scale + 1)], [None]))
    for length in (height, width):
        if tiling.spatial is None:
            axes.append(([Interval(0, length)], [slice(0, length // space_scale)], [None]))
            continue
        overlap = max(tiling.spatial.overlap, MIN_ENCODE_OVERLAP_PIXELS)
        _check_encode_tile("spatial", "pixels", length, tiling.spatial.tile, overlap)
        intervals = split_overlapping(length, tiling.spatial.tile, overlap)
        axes.append((intervals, [slice(t.start // space_scale, t.end // space_scale) for t in intervals],
                     [rectangle_mask(t.end // space_scale - t.start // space_scale,
                                     max(0, t.left_ramp // space_scale - 1), 0 if t.right_ramp == 0 else 1)
                      for t in intervals]))
    return _tiles(axes)


def _check_encode_tile(kind: str, unit: str, length: int, tile: int, overlap: int) -> None:
    if length > tile and tile <= overlap:
        raise ValueError(f"{kind} encode tiles of {tile} {unit} are not larger than the minimum encode overlap "
                         f"({overlap} {unit}); use larger tiles")
