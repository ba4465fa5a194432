"""Denoise masks by time: regenerate the tokens of a time span, keep the rest (retake), or keep all.

A token is regenerated (mask 1) when its time bounds [t0, t1) overlap [start, end) seconds, that is
t1 > start and t0 < end; every other token is kept (mask 0). Video bounds are the pixel frames a
latent frame covers (the causal first frame covers frame 0 alone) over fps; audio bounds are the
token positions, already in seconds.
"""

import torch

from fastltx.conditioning.latents import VideoGrid
from fastltx.models.transformer.positions import VIDEO_SCALE
from fastltx.sampling.state import TokenState


def _with_mask(state: TokenState, regenerate: torch.Tensor) -> TokenState:
    mask = regenerate.to(state.denoise_mask.dtype).view(1, -1, 1).expand_as(state.denoise_mask).clone()
    return TokenState(state.latent, state.clean, mask, state.positions, state.attention_mask)


def _overlaps(bounds: torch.Tensor, start: float, end: float) -> torch.Tensor:
    return (bounds[..., 1] > start) & (bounds[..., 0] < end)


def video_span(state: TokenState, grid: VideoGrid, start: float, end: float) -> TokenState:
    """Regenerate the video tokens overlapping [start, end) seconds, keep the others."""
    frames = torch.arange(grid.frames, device=state.denoise_mask.device)
    bounds = (torch.stack([frames, frames + 1], dim=-1) * VIDEO_SCALE[0] + 1 - VIDEO_SCALE[0]).clamp(min=0) / grid.fps
    per_frame = _overlaps(bounds, start, end)
    return _with_mask(state, per_frame.repeat_interleave(grid.height * grid.width))


def audio_span(state: TokenState, start: float, end: float) -> TokenState:
    """Regenerate the audio tokens overlapping [start, end) seconds, keep the others."""
    return _with_mask(state, _overlaps(state.positions[0, 0], start, end))


def keep_all(state: TokenState, grid: VideoGrid | None = None) -> TokenState:
    """Every token kept as it is (a frozen stream: audio-to-video keeps its input audio); ``grid`` is
    accepted so that it serves as a video conditioning item too."""
    return TokenState(state.latent, state.clean, torch.zeros_like(state.denoise_mask), state.positions,
                      state.attention_mask)
