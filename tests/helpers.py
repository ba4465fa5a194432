"""Shared test helpers: token positions, random inputs and error measures."""

import torch

from fastltx.models.transformer import ModalityInput


def max_rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|, in float64."""
    ours, ref = ours.double(), ref.double()
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def video_positions(batch: int, frames: int, height: int, width: int, fps: float, dtype: torch.dtype) -> torch.Tensor:
    """(B, 3, T, 2) [start, end) bounds of latent tokens in pixels (time in seconds, causal first frame)."""
    f, h, w = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    starts = torch.stack([f, h, w]).reshape(3, -1).float()
    bounds = torch.stack([starts, starts + 1], dim=-1) * torch.tensor([8.0, 32.0, 32.0]).view(3, 1, 1)
    bounds[0] = (bounds[0] + 1 - 8).clamp(min=0) / fps
    return bounds.unsqueeze(0).expand(batch, -1, -1, -1).to(dtype)


def audio_positions(batch: int, tokens: int) -> torch.Tensor:
    """(B, 1, T, 2) [start, end) bounds in seconds of audio latent frames (4 mel hops of 10 ms)."""
    i = torch.arange(tokens + 1, dtype=torch.float32)
    edges = (4 * i + 1 - 4).clamp(min=0) * 160 / 16000
    bounds = torch.stack([edges[:-1], edges[1:]], dim=-1)
    return bounds.view(1, 1, tokens, 2).expand(batch, -1, -1, -1).contiguous()


def random_modality(gen: torch.Generator, sigma: torch.Tensor, tokens: int, channels: int, positions: torch.Tensor,
                    context_len: int, context_dim: int, dtype: torch.dtype, clean_tokens: int = 0,
                    **extra) -> ModalityInput:
    """Random latent and text; per-token timesteps sigma * mask with the first ``clean_tokens`` at 0."""
    batch = sigma.shape[0]
    latent = torch.randn(batch, tokens, channels, generator=gen).to(dtype)
    mask = torch.ones(batch, tokens, 1)
    mask[:, :clean_tokens] = 0
    context = torch.randn(batch, context_len, context_dim, generator=gen).to(dtype)
    return ModalityInput(latent=latent, sigma=sigma, timesteps=mask * sigma.view(-1, 1, 1), positions=positions,
                         context=context, **extra)
