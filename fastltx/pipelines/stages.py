"""The stages every pipeline is composed of: text, image conditioning, denoising, upsampling, decoding.

Noise comes from one generator per call, drawn in the reference's order: stage-1 video, stage-1
audio, stage-2 video, stage-2 audio, then the video decoder's noise (timestep-conditioned decoders).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fastltx.conditioning.images import load_conditioning_image
from fastltx.conditioning.items import append_keyframes, replace_frame
from fastltx.conditioning.latents import (VideoGrid, audio_latent_frames, audio_state, drop_appended, unpatchify_audio,
                                          unpatchify_video, video_state)
from fastltx.models.text_encoder import TextEncoding
from fastltx.models.upsampler import upsample_latent
from fastltx.models.video_vae import decode_video
from fastltx.pipelines.components import Components
from fastltx.pipelines.request import ImageInput
from fastltx.sampling.state import TokenState, add_noise

# A denoising loop as in fastltx.sampling.loops: (sigmas, video, audio, denoise) -> (video, audio)
Loop = Callable[..., tuple[TokenState, TokenState]]


def encode_prompts(components: Components, prompts: Sequence[str]) -> TextEncoding:
    """All prompts of a call through the text path as one batch."""
    return components.text_encoder.encode(list(prompts))


@dataclass(frozen=True)
class EncodedImage:
    image: ImageInput
    latent: torch.Tensor  # (1, C, 1, h, w)


def encode_images(components: Components, images: Sequence[ImageInput], height: int, width: int) -> list[EncodedImage]:
    """Each image prepared as the reference does (H.264 round trip, cover-resize, crop) and encoded."""
    out = []
    for image in images:
        pixels = load_conditioning_image(image.path, height, width, components.dtype, components.device, image.crf)
        out.append(EncodedImage(image, components.video_encoder(pixels)))
    return out


def condition(state: TokenState, grid: VideoGrid, images: Sequence[EncodedImage]) -> TokenState:
    """Frame 0 replaces the first latent frame; later frames are appended as keyframe tokens."""
    for e in images:
        if e.image.frame == 0:
            state = replace_frame(state, grid, e.latent, e.image.strength, 0)
        else:
            state = append_keyframes(state, grid, e.latent, e.image.frame, e.image.strength)
    return state


def denoise(components: Components, grid: VideoGrid, num_frames: int, sigmas: torch.Tensor, loop: Loop,
            generator: torch.Generator, images: Sequence[EncodedImage] = (), noise_scale: float | torch.Tensor = 1.0,
            initial_video: torch.Tensor | None = None, initial_audio: torch.Tensor | None = None):
    """Build the video (with its conditioning) and audio states, noise them, run ``loop``, and
    return the latents (B, C, F, H, W) and (B, C, T, M) with the conditioning tokens dropped."""
    dtype, device = components.dtype, components.device
    channels, bins = components.audio_latent
    v = condition(video_state(grid, components.video_latent_channels, dtype, device, initial=initial_video), grid,
                  images)
    v = add_noise(v, generator, noise_scale)
    a = add_noise(audio_state(audio_latent_frames(num_frames, grid.fps), channels, bins, dtype, device,
                              initial=initial_audio), generator, noise_scale)
    v, a = loop(sigmas.to(device), v, a)
    return unpatchify_video(drop_appended(v, grid.tokens).latent, grid), unpatchify_audio(a.latent, channels)


def upsample(components: Components, video_latent: torch.Tensor) -> torch.Tensor:
    """x2 spatial latent upsampling in the VAE's un-normalised space."""
    return upsample_latent(video_latent[:1], components.upsampler, components.video_encoder.per_channel_statistics)


def decode(components: Components, video_latent: torch.Tensor, audio_latent: torch.Tensor,
           generator: torch.Generator, tiling="auto"):
    """uint8 frames (F, H, W, 3), float32 waveform (2, S) and its sample rate."""
    frames = torch.cat(list(decode_video(components.video_decoder, video_latent, generator, tiling)))
    mel = components.audio_decoder(audio_latent)
    waveform = components.vocoder(mel).squeeze(0).float()
    return frames, waveform, components.vocoder.output_sampling_rate
