"""Latent <-> token layout and the initial token states of a generation.

Video latents (B, C, F, H, W) become tokens (B, F*H*W, C) (f-major, then h, then w); audio latents
(B, C, T, M) become (B, T, C*M) (channel-major within a token). Pixel and latent sizes relate by
the video VAE's compression: 8x in time (the first frame alone), 32x in space; audio has 25 latent
frames per second.
"""

from dataclasses import dataclass

import torch

from fastltx.models.transformer.positions import audio_positions, video_positions
from fastltx.sampling.state import TokenState

AUDIO_LATENT_RATE = 25  # latent frames per second (16 kHz, hop 160, 4x downsampling)


@dataclass(frozen=True)
class VideoGrid:
    """A video's latent grid for given pixel dimensions."""

    frames: int
    height: int
    width: int
    fps: float

    @classmethod
    def for_pixels(cls, num_frames: int, height: int, width: int, fps: float) -> "VideoGrid":
        return cls((num_frames - 1) // 8 + 1, height // 32, width // 32, fps)

    @property
    def tokens(self) -> int:
        return self.frames * self.height * self.width


def audio_latent_frames(num_frames: int, fps: float) -> int:
    """Audio latent frames for a clip of ``num_frames`` at ``fps``: round(duration * 25)."""
    return round(num_frames / fps * AUDIO_LATENT_RATE)


def patchify_video(latent: torch.Tensor) -> torch.Tensor:
    return latent.flatten(2).transpose(1, 2)


def unpatchify_video(tokens: torch.Tensor, grid: VideoGrid) -> torch.Tensor:
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, grid.frames, grid.height, grid.width)


def patchify_audio(latent: torch.Tensor) -> torch.Tensor:
    b, c, t, m = latent.shape
    return latent.permute(0, 2, 1, 3).reshape(b, t, c * m)


def unpatchify_audio(tokens: torch.Tensor, channels: int) -> torch.Tensor:
    b, t, cm = tokens.shape
    return tokens.reshape(b, t, channels, cm // channels).permute(0, 2, 1, 3)


def video_state(grid: VideoGrid, channels: int, dtype: torch.dtype, device, batch: int = 1,
                initial: torch.Tensor | None = None) -> TokenState:
    """Tokens of ``initial`` (B, C, F, H, W) or zeros, all to be generated (mask 1). Positions are cast
    to the model dtype, as the reference's latent tools do."""
    latent = initial if initial is not None else torch.zeros(batch, channels, grid.frames, grid.height, grid.width,
                                                             device=device, dtype=dtype)
    tokens = patchify_video(latent.to(device, dtype))
    return TokenState(latent=tokens, clean=tokens.clone(),
                      denoise_mask=torch.ones(tokens.shape[0], tokens.shape[1], 1, device=device),
                      positions=video_positions(grid.frames, grid.height, grid.width, grid.fps, tokens.shape[0],
                                                dtype, device))


def audio_state(frames: int, channels: int, mel_bins: int, dtype: torch.dtype, device, batch: int = 1,
                initial: torch.Tensor | None = None) -> TokenState:
    latent = initial if initial is not None else torch.zeros(batch, channels, frames, mel_bins, device=device,
                                                             dtype=dtype)
    tokens = patchify_audio(latent.to(device, dtype))
    return TokenState(latent=tokens, clean=tokens.clone(),
                      denoise_mask=torch.ones(tokens.shape[0], tokens.shape[1], 1, device=device),
                      positions=audio_positions(tokens.shape[1], tokens.shape[0], device))


def drop_appended(state: TokenState, tokens: int) -> TokenState:
    """Keep the first ``tokens`` tokens (the generated grid), dropping appended conditioning tokens."""
    return TokenState(latent=state.latent[:, :tokens], clean=state.clean[:, :tokens],
                      denoise_mask=torch.ones_like(state.denoise_mask)[:, :tokens],
                      positions=state.positions[:, :, :tokens], attention_mask=None)
