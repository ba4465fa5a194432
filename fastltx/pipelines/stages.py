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
from fastltx.models.audio_vae import waveform_to_mel
from fastltx.models.text_encoder import TextEncoding
from fastltx.models.upsampler import upsample_latent
from fastltx.models.video_vae import decode_video
from fastltx.pipelines.components import Components
from fastltx.pipelines.request import ImageInput
from fastltx.sampling.state import TokenState, add_noise

# A denoising loop as in fastltx.sampling.loops: (sigmas, video, audio, denoise) -> (video, audio)
Loop = Callable[..., tuple[TokenState, TokenState]]


def encode_prompts(components: Components, prompts: Sequence[str]) -> TextEncoding:
    """All prompts of a call through the text path as one batch; with several processes, encoded
    on rank 0 and sent to the others (``World.from_main``)."""
    encode = lambda: components.text_encoder.encode(list(prompts))  # noqa: E731
    return encode() if components.world is None else components.world.from_main(encode)


@dataclass(frozen=True)
class EncodedImage:
    """An encoded conditioning image: at frame 0 it replaces the first latent frame, elsewhere (or
    always, with ``keyframe``) it is appended as keyframe tokens at its frame."""

    image: ImageInput
    latent: torch.Tensor  # (1, C, 1, h, w)
    keyframe: bool = False

    def __call__(self, state: TokenState, grid: VideoGrid) -> TokenState:
        if self.image.frame == 0 and not self.keyframe:
            return replace_frame(state, grid, self.latent, self.image.strength, 0)
        return append_keyframes(state, grid, self.latent, self.image.frame, self.image.strength)


def encode_images(components: Components, images: Sequence[ImageInput], height: int, width: int,
                  keyframes: bool = False) -> list[EncodedImage]:
    """Each image prepared as the reference does (H.264 round trip, cover-resize, crop) and encoded;
    ``keyframes``: all of them appended as keyframe tokens (keyframe interpolation)."""
    out = []
    for image in images:
        pixels = load_conditioning_image(image.path, height, width, components.dtype, components.device, image.crf)
        out.append(EncodedImage(image, components.video_encoder(pixels), keyframes))
    return out


# A conditioning item: (video state, grid) -> video state (EncodedImage, reference videos, time spans).
Condition = Callable[[TokenState, VideoGrid], TokenState]
# An audio conditioning item: audio state -> audio state (keep_all, time spans).
AudioCondition = Callable[[TokenState], TokenState]


def denoise(components: Components, grid: VideoGrid, num_frames: int, sigmas: torch.Tensor, loop: Loop,
            generator: torch.Generator, conditions: Sequence[Condition] = (), noise_scale: float | torch.Tensor = 1.0,
            initial_video: torch.Tensor | None = None, initial_audio: torch.Tensor | None = None,
            audio_conditions: Sequence[AudioCondition] = ()):
    """Build the video and audio states (from the initial latents, or zeros), apply the conditioning
    items in order, noise both, run ``loop``, and return the latents (B, C, F, H, W) and (B, C, T, M)
    with the appended tokens dropped."""
    dtype, device = components.dtype, components.device
    channels, bins = components.audio_latent
    v = video_state(grid, components.video_latent_channels, dtype, device, initial=initial_video)
    for item in conditions:
        v = item(v, grid)
    a = audio_state(audio_latent_frames(num_frames, grid.fps), channels, bins, dtype, device, initial=initial_audio)
    for item in audio_conditions:
        a = item(a)
    v, a = add_noise(v, generator, noise_scale), add_noise(a, generator, noise_scale)
    v, a = loop(sigmas.to(device), v, a)
    return unpatchify_video(drop_appended(v, grid.tokens).latent, grid), unpatchify_audio(a.latent, channels)


def upsample(components: Components, video_latent: torch.Tensor) -> torch.Tensor:
    """x2 spatial latent upsampling in the VAE's un-normalised space."""
    return upsample_latent(video_latent[:1], components.upsampler, components.latent_statistics)


def encode_audio(components: Components, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """A waveform (channels, samples) at any rate -> the audio VAE's latent (1, C, T, M): log mel in
    float32, then the encoder in the model dtype."""
    encoder = components.audio_encoder
    mel = waveform_to_mel(waveform.to(components.device), sample_rate, encoder.cfg)
    return encoder(mel.to(components.dtype))


def decode_frames(components: Components, video_latent: torch.Tensor, generator: torch.Generator,
                  tiling="auto") -> torch.Tensor | None:
    """uint8 frames (F, H, W, 3); with several processes, on rank 0 only (None elsewhere), their
    tiles decoded by all of them."""
    if components.world is not None:
        from fastltx.models.video_vae.parallel import decode_video_split
        chunks = list(decode_video_split(components.world, components.video_decoder, video_latent, generator, tiling))
        return torch.cat(chunks) if components.world.main else None
    decoder = components.video_decoder
    return torch.cat(list(decode_video(decoder, video_latent, generator, tiling, components.memory.decode_budget())))


def decode(components: Components, video_latent: torch.Tensor, audio_latent: torch.Tensor,
           generator: torch.Generator, tiling="auto"):
    """uint8 frames (F, H, W, 3), float32 waveform (2, S) and its sample rate."""
    frames = decode_frames(components, video_latent, generator, tiling)
    if frames is None:
        return None, None, None
    mel = components.audio_decoder(audio_latent)
    waveform = components.vocoder(mel).squeeze(0).float()
    return frames, waveform, components.vocoder.output_sampling_rate
