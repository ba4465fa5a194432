"""Conditioning items applied to a video token state.

* ``replace_frame``: encoded frames overwrite the tokens of latent frame ``latent_index`` (an image at
  frame 0); their denoise mask becomes 1 - strength.
* ``append_keyframes``: encoded frames are appended as extra tokens placed at pixel frame
  ``frame_index`` (float32 positions, which promote the whole position tensor), denoise mask
  1 - strength; any self-attention mask grows with them (new tokens attend to the generated ones
  with ``cross`` strength, to themselves fully, to other appended groups not at all).
"""

import torch

from fastltx.conditioning.latents import VideoGrid, patchify_video
from fastltx.models.transformer.positions import VIDEO_SCALE
from fastltx.sampling.state import TokenState


class ConditioningError(ValueError):
    pass


def replace_frame(state: TokenState, grid: VideoGrid, latent: torch.Tensor, strength: float,
                  latent_index: int = 0) -> TokenState:
    b, c, f, h, w = latent.shape
    if (h, w) != (grid.height, grid.width) or b != state.latent.shape[0] or c != state.latent.shape[2]:
        raise ConditioningError(f"conditioning latent {tuple(latent.shape)} does not fit the video's latent grid "
                                f"({state.latent.shape[0]}, {state.latent.shape[2]}, *, {grid.height}, {grid.width})")
    if latent_index + f > grid.frames:
        raise ConditioningError(f"conditioning at latent frame {latent_index} with {f} frame(s) runs past the "
                                f"video's {grid.frames} latent frames")
    tokens = patchify_video(latent.to(state.latent.dtype))
    start = latent_index * h * w
    stop = start + tokens.shape[1]
    x, clean, mask = state.latent.clone(), state.clean.clone(), state.denoise_mask.clone()
    x[:, start:stop], clean[:, start:stop] = tokens, tokens
    mask[:, start:stop] = 1.0 - strength
    return TokenState(x, clean, mask, state.positions, state.attention_mask)


def keyframe_positions(latent: torch.Tensor, frame_index: int, fps: float) -> torch.Tensor:
    """(B, 3, T, 2) float32 bounds of appended frames placed at pixel frame ``frame_index``
    (the causal first-frame rule applies only at frame 0)."""
    b, _, f, h, w = latent.shape
    ff, hh, ww = torch.meshgrid(*(torch.arange(n, device=latent.device) for n in (f, h, w)), indexing="ij")
    starts = torch.stack([ff, hh, ww]).reshape(3, -1)
    bounds = torch.stack([starts, starts + 1], dim=-1) * torch.tensor(VIDEO_SCALE, device=latent.device).view(3, 1, 1)
    if frame_index == 0:
        bounds[0] = (bounds[0] + 1 - VIDEO_SCALE[0]).clamp(min=0)
    bounds[0] += frame_index
    bounds = bounds.to(torch.float32)
    bounds[0] /= fps
    return bounds.unsqueeze(0).expand(b, -1, -1, -1)


def grow_attention_mask(existing: torch.Tensor | None, generated: int, total: int, new: int,
                        cross: torch.Tensor | float | None, batch: int, device, dtype) -> torch.Tensor | None:
    """The (B, N+M, N+M) self-attention strengths after appending M tokens to N (the first
    ``generated`` being generated tokens). None stays None when no strength is asked for."""
    if cross is None and existing is None:
        return None
    cross = torch.ones(batch, new, device=device, dtype=dtype) if cross is None else (
        torch.as_tensor(cross, device=device, dtype=dtype).expand(batch, new) if torch.as_tensor(cross).ndim < 2
        else cross.to(device, dtype))
    mask = torch.zeros(batch, total + new, total + new, device=device, dtype=dtype)
    mask[:, :total, :total] = 1.0 if existing is None else existing
    mask[:, total:, total:] = 1.0
    mask[:, :generated, total:] = cross.unsqueeze(1)
    mask[:, total:, :generated] = cross.unsqueeze(2)
    return mask


def append_tokens(state: TokenState, grid: VideoGrid, latent: torch.Tensor, positions: torch.Tensor, strength: float,
                  cross_attention: torch.Tensor | float | None = None) -> TokenState:
    """Append the tokens of ``latent`` (B, C, F, H, W) at ``positions`` with denoise mask 1 - strength."""
    tokens = patchify_video(latent)
    b, m = tokens.shape[:2]
    mask = torch.full((b, m, 1), 1.0 - strength, device=latent.device, dtype=latent.dtype)
    attention = grow_attention_mask(state.attention_mask, grid.tokens, state.latent.shape[1], m, cross_attention, b,
                                    latent.device, latent.dtype)
    return TokenState(latent=torch.cat([state.latent, tokens], dim=1), clean=torch.cat([state.clean, tokens], dim=1),
                      denoise_mask=torch.cat([state.denoise_mask, mask], dim=1),
                      positions=torch.cat([state.positions, positions], dim=2), attention_mask=attention)


def append_keyframes(state: TokenState, grid: VideoGrid, latent: torch.Tensor, frame_index: int, strength: float,
                     cross_attention: torch.Tensor | float | None = None) -> TokenState:
    return append_tokens(state, grid, latent, keyframe_positions(latent, frame_index, grid.fps), strength,
                         cross_attention)
