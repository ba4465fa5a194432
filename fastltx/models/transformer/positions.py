"""Token positions the transformer expects: [start, end) bounds per latent token.

Video: latent (f, h, w) covers pixels [32h, 32h+32) x [32w, 32w+32) and, with the causal first
frame, pixel frames [max(0, 8f-7), max(0, 8f+1)), expressed in seconds (divided by fps).
Audio: latent frame i covers mel hops [max(0, 4i-3), max(0, 4i+1)) of 10 ms, in seconds.
Tokens are ordered f-major, then h, then w, as the patchifier flattens them.
"""

import torch

VIDEO_SCALE = (8, 32, 32)  # time, height, width compression of the video VAE
AUDIO_LATENT_HOPS, MEL_HOP, MEL_RATE = 4, 160, 16000


def video_positions(frames: int, height: int, width: int, fps: float, batch: int = 1,
                    dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """(B, 3, F*H*W, 2) bounds for a latent grid of F x H x W tokens (computed in float32, then cast)."""
    f, h, w = torch.meshgrid(*(torch.arange(n, device=device) for n in (frames, height, width)), indexing="ij")
    starts = torch.stack([f, h, w]).reshape(3, -1)
    scale = torch.tensor(VIDEO_SCALE, device=device).view(3, 1, 1)
    bounds = (torch.stack([starts, starts + 1], dim=-1) * scale).float()
    bounds[0] = (bounds[0] + 1 - VIDEO_SCALE[0]).clamp(min=0) / fps
    return bounds.unsqueeze(0).expand(batch, -1, -1, -1).to(dtype)


def audio_positions(tokens: int, batch: int = 1, device=None) -> torch.Tensor:
    """(B, 1, T, 2) float32 bounds in seconds for T audio latent frames."""
    mel = (torch.arange(tokens + 1, device=device, dtype=torch.float32) * AUDIO_LATENT_HOPS + 1
           - AUDIO_LATENT_HOPS).clamp(min=0)
    edges = mel * MEL_HOP / MEL_RATE  # multiply, then divide: the reference's rounding
    return torch.stack([edges[:-1], edges[1:]], dim=-1).view(1, 1, tokens, 2).expand(batch, -1, -1, -1).contiguous()
