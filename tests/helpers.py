"""Shared test helpers: token positions, random inputs and error measures."""

import dataclasses

import torch

from fastltx.models.transformer import ModalityInput
from fastltx.models.transformer.positions import audio_positions, video_positions  # noqa: F401


def max_rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|, in float64."""
    ours, ref = ours.double(), ref.double()
    return ((ours - ref).abs().max() / ref.abs().max()).item()


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


def modality_on(m: ModalityInput | None, device) -> ModalityInput | None:
    """``m`` with every tensor field (and the timestep levels) moved to ``device`` (None stays None)."""
    if m is None:
        return None
    moved = {f.name: getattr(m, f.name).to(device) for f in dataclasses.fields(m)
             if isinstance(getattr(m, f.name), torch.Tensor)}
    if m.timestep_levels is not None:
        moved["timestep_levels"] = tuple(t.to(device) for t in m.timestep_levels)
    return dataclasses.replace(m, **moved)
