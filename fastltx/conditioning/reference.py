"""IC-LoRA reference videos: appended tokens, their attention mask, and the LoRA's downscale factor.

An IC-LoRA is trained on a reference video's tokens next to the generated ones. Its file may say,
in the metadata key ``reference_downscale_factor``, that the reference was smaller than the target by
an integer factor: the reference is then encoded at the target size / factor and its spatial
positions are multiplied by the factor, so both cover the same pixel coordinates.
"""

import torch
import torch.nn.functional as F

from fastltx.conditioning.items import append_tokens, keyframe_positions
from fastltx.conditioning.latents import VideoGrid
from fastltx.sampling.state import TokenState

DOWNSCALE_KEY = "reference_downscale_factor"


def downscale_factor(metadata: dict[str, str], path: str) -> int:
    """The LoRA's reference downscale factor: 1 when its metadata does not give one (the reference's
    default), a ValueError naming the file when the value is not a positive integer."""
    value = metadata.get(DOWNSCALE_KEY)
    if value is None:
        return 1
    try:
        factor = int(value)
    except ValueError:
        factor = 0
    if factor < 1:
        raise ValueError(f"{path}: metadata {DOWNSCALE_KEY}={value!r} is not a positive integer")
    return factor


def append_reference(state: TokenState, grid: VideoGrid, latent: torch.Tensor, strength: float = 1.0,
                     downscale: int = 1, cross_attention: torch.Tensor | float | None = None) -> TokenState:
    """Append reference-video tokens (B, C, F, h, w): positions of a video starting at frame 0 (causal
    first frame), spatial axes times ``downscale``; denoise mask 1 - strength; ``cross_attention``
    (scalar or (B, M)) sets how strongly they and the generated tokens attend to each other."""
    positions = keyframe_positions(latent, 0, grid.fps).clone()
    if downscale != 1:
        positions[:, 1:] *= downscale
    return append_tokens(state, grid, latent, positions, strength, cross_attention)


def latent_attention_mask(mask: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """A pixel-space mask (B, 1, F, H, W) in [0, 1] -> per-token strengths (B, frames*height*width):
    area-averaged to the latent grid per frame, then the first frame alone and the rest averaged in
    groups of (F - 1) / (frames - 1) frames, as the causal video VAE groups them."""
    b, _, f = mask.shape[:3]
    spatial = F.interpolate(mask.transpose(1, 2).reshape(b * f, 1, *mask.shape[3:]), size=(height, width),
                            mode="area").reshape(b, f, height, width)
    latent = spatial[:, :1]
    if f > 1 and frames > 1:
        if (f - 1) % (frames - 1):
            raise ValueError(f"a mask of {f} frames does not map onto {frames} latent frames "
                             "((frames - 1) must divide (mask frames - 1))")
        group = (f - 1) // (frames - 1)
        rest = spatial[:, 1:].reshape(b, frames - 1, group, height, width).mean(dim=2)
        latent = torch.cat([latent, rest], dim=1)
    return latent.reshape(b, -1)
