"""The token state a denoising loop carries for one modality, noising and the clean-token blend."""

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class TokenState:
    """Patchified tokens of one modality during denoising.

    latent (B, T, C) current sample; clean (B, T, C) the conditioning values; denoise_mask
    (B, T, 1) float32, 1 = generate, 0 = keep clean (strength s gives 1 - s); positions as the
    transformer takes them; attention_mask optional (B, T, T) strengths in [0, 1].
    """

    latent: torch.Tensor
    clean: torch.Tensor
    denoise_mask: torch.Tensor
    positions: torch.Tensor
    attention_mask: torch.Tensor | None = None

    def with_latent(self, latent: torch.Tensor) -> "TokenState":
        return replace(self, latent=latent)

    def timesteps(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Per-token noise level sigma * mask (0 for clean tokens)."""
        return self.denoise_mask * sigma


def add_noise(state: TokenState, generator: torch.Generator, noise_scale: float = 1.0) -> TokenState:
    """Blend Gaussian noise into the tokens the mask lets through: x = n*m*s + x*(1 - m*s).

    The noise is drawn in the latent's own dtype and device with the caller's generator (bf16
    draws differ from float32 draws cast to bf16), in the patchified (B, T, C) layout.
    """
    x = state.latent
    noise = torch.randn(*x.shape, device=x.device, dtype=x.dtype, generator=generator)
    m = state.denoise_mask * noise_scale
    return state.with_latent((noise * m + x * (1 - m)).to(x.dtype))


def keep_clean(denoised: torch.Tensor, state: TokenState) -> torch.Tensor:
    """x0 of generated tokens, clean values elsewhere (blended in float32, cast back)."""
    m = state.denoise_mask
    return (denoised * m + state.clean.float() * (1 - m)).to(denoised.dtype)
