"""The token state a denoising loop carries for one modality, noising and the clean-token blend."""

import weakref
from dataclasses import dataclass, replace

import torch

from fastltx.models.transformer.inputs import distinct_levels


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

    def timestep_levels(self, sigma: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``timesteps(sigma)`` factored as (values (K,), index (B, T) or (B, 1)), the form of
        ``ModalityInput.timestep_levels``: the mask's distinct values times sigma. The mask's levels
        are found once per mask (the host waits for the GPU then, not at every step); the same
        sigma object gives the same values object (passes batched together share them). None for
        a sigma of several values.

        The mask and the sigma tensor must not change in place once a step has used them (no
        code does: conditioning builds new masks): the cache goes by their identity, and an
        inference-mode tensor (the pipelines') keeps no version counter to tell a change."""
        if isinstance(sigma, torch.Tensor) and sigma.numel() != 1:
            return None
        return _MASK_LEVELS.levels(self.denoise_mask, sigma)


class _MaskLevels:
    """Per mask tensor (by identity, while it lives; for tensors that keep a version counter, also
    while it is not modified in place): its distinct values and each token's index into them, and
    the values times the last sigma seen."""

    def __init__(self):
        self.entries: dict[int, list] = {}

    def levels(self, mask: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        key = id(mask)
        entry = self.entries.get(key)
        version = None if mask.is_inference() else mask._version
        if entry is None or entry[0]() is not mask or entry[1] != version:
            if entry is None or entry[0]() is not mask:  # a new mask: its entry goes with it
                weakref.finalize(mask, self.entries.pop, key, None)
            values, index = distinct_levels(mask.reshape(mask.shape[0], -1))
            entry = self.entries[key] = [weakref.ref(mask), version, values, index, None, None]
        if entry[4] is not sigma:
            scalar = sigma.reshape(()) if isinstance(sigma, torch.Tensor) else sigma
            entry[4], entry[5] = sigma, entry[2] * scalar
        return entry[5], entry[3]


_MASK_LEVELS = _MaskLevels()


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
