"""IC-LoRA video-to-video: the distilled pipeline with reference-video tokens and the IC-LoRA in stage 1.

Stage 1 (8 distilled steps at half size) runs with the IC-LoRAs fused and each reference video's
tokens appended (encoded at the stage-1 size divided by the LoRA's ``reference_downscale_factor``,
their positions scaled back up), optionally with an attention strength (scalar or pixel mask)
between them and the generated tokens. Stage 2 (x2 upsampling, 3 steps) runs without the IC-LoRAs
and without reference tokens. ``skip_stage_2`` decodes the stage-1 result at half size.
"""

import dataclasses
import os
from collections.abc import Sequence
from functools import partial

import torch

from fastltx.checkpoint.safetensors_file import read_header
from fastltx.conditioning.images import load_conditioning_video
from fastltx.conditioning.latents import VideoGrid
from fastltx.conditioning.reference import append_reference, downscale_factor, latent_attention_mask
from fastltx.pipelines.base import Pipeline
from fastltx.pipelines.components import Components
from fastltx.pipelines.request import ImageInput, InputError, VideoInput, check_video_input
from fastltx.pipelines.result import GenerationResult
from fastltx.pipelines.stages import denoise, encode_images, encode_prompts
from fastltx.sampling.denoisers import SimpleDenoiser
from fastltx.sampling.loops import euler_loop
from fastltx.sampling.schedules import DISTILLED_SIGMAS

VideoSpec = VideoInput | tuple[str, float] | str | os.PathLike


def reference_downscale(loras: Sequence[tuple[str, float]]) -> int:
    """The one downscale factor the LoRAs' metadata agree on (1 where a file gives none)."""
    factor = 1
    for path, _ in loras:
        try:
            f = downscale_factor(read_header(path).metadata, path)
        except ValueError as e:
            raise InputError(str(e)) from None
        if f != 1 and factor not in (1, f):
            raise InputError(f"{path}: reference_downscale_factor {f} conflicts with {factor} from another LoRA")
        factor = f if f != 1 else factor
    return factor


def _as_list(video) -> list:
    one = isinstance(video, (str, os.PathLike, VideoInput)) or (
        isinstance(video, tuple) and len(video) == 2 and isinstance(video[1], (int, float)))
    return [video] if one else list(video)


def load_mask_video(path: str, height: int, width: int, num_frames: int, dtype: torch.dtype, device) -> torch.Tensor:
    """A grey-scale mask video -> (1, 1, F, height, width) in [0, 1] (channel mean of the pixels)."""
    pixels = load_conditioning_video(path, height, width, num_frames, dtype, device)
    return ((pixels.mean(dim=1, keepdim=True) + 1.0) / 2.0).clamp(0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class ReferenceVideo:
    """A conditioning item: an encoded reference video appended to the generated tokens."""

    latent: torch.Tensor
    strength: float
    downscale: int
    cross_attention: torch.Tensor | float | None

    def __call__(self, state, grid):
        return append_reference(state, grid, self.latent, self.strength, self.downscale, self.cross_attention)


class ICLoraPipeline(Pipeline):
    name = "ic-lora"
    two_stage = True

    def __init__(self, components: Components):
        files = components.files
        if files.stage2_loras:
            raise InputError("the ic-lora pipeline takes no distilled LoRA (it runs a distilled checkpoint)")
        if not files.loras:
            raise InputError("the ic-lora pipeline needs an IC-LoRA (loras=[(path, strength)])")
        if components.fp8:
            raise InputError("fp8 cannot be combined with the ic-lora pipeline yet (its LoRAs are switched off for "
                             "stage 2 on the bf16 weights)")
        if components.loaded:
            raise ValueError("the ic-lora pipeline takes components before any model is loaded")
        self.downscale = reference_downscale(files.loras)
        # The IC-LoRAs (and any other LoRA) apply to stage 1 only: switched in place, off in stage 2.
        components.files = dataclasses.replace(files, loras=(), stage2_loras=files.loras)
        super().__init__(components)

    @torch.inference_mode()
    def __call__(self, prompt: str, video: VideoSpec | Sequence[VideoSpec], seed: int = 10, height: int = 1024,
                 width: int = 1536, num_frames: int = 121, fps: float = 24.0, images: Sequence[ImageInput] = (),
                 attention_strength: float = 1.0, attention_mask: torch.Tensor | str | None = None,
                 skip_stage_2: bool = False, tiling="auto", progress: bool = True) -> GenerationResult:
        """``video``: one reference video or several, each a VideoInput, a (path, strength) pair or
        "PATH[:STRENGTH]", with at least ``num_frames`` frames at ``fps`` (the first ``num_frames`` are
        used). ``attention_strength`` in [0, 1] scales the attention between reference and generated
        tokens; ``attention_mask`` (a (1, 1, F, H, W) pixel mask in [0, 1], or a grey-scale mask
        video's path) makes it per region."""
        videos = [VideoInput.parse(v) for v in _as_list(video)]
        self._check(videos, height, width, num_frames, fps, attention_strength, attention_mask)
        generator = self.start(seed, height, width, num_frames, fps, images)
        c = self.components
        with self.stage("text"):
            text = encode_prompts(c, [prompt])
        half = VideoGrid.for_pixels(num_frames, height // 2, width // 2, fps)
        with self.stage("stage 1"):
            conditions = encode_images(c, images, height // 2, width // 2)
            conditions += self._references(videos, height // 2, width // 2, num_frames, attention_strength,
                                           attention_mask)
            denoiser = SimpleDenoiser(c.transformer(c.stage2_strengths), text.video, text.audio)
            loop = partial(euler_loop, denoise=denoiser, progress=progress, desc="stage 1")
            video, audio = denoise(c, half, num_frames, torch.tensor(DISTILLED_SIGMAS), loop, generator, conditions)
        if not skip_stage_2:
            video, audio = self.refine(video, audio, height, width, num_frames, fps,
                                       SimpleDenoiser(c.transformer(None), text.video, text.audio), generator, images,
                                       progress)
        return self.finish(video, audio, generator, fps, tiling)

    def _check(self, videos: list[VideoInput], height: int, width: int, num_frames: int, fps: float,
               attention_strength: float, attention_mask) -> None:
        if not videos:
            raise InputError("the ic-lora pipeline needs at least one reference video (video=PATH or "
                             "[(path, strength), ...])")
        multiple = 64 * self.downscale
        if height % multiple or width % multiple:
            raise InputError(f"with the IC-LoRA's reference_downscale_factor {self.downscale}, height and width must "
                             f"be multiples of {multiple}, got {height}x{width}")
        if not 0.0 <= attention_strength <= 1.0:
            raise InputError(f"attention_strength must be in [0, 1], got {attention_strength}")
        for v in videos:
            if not 0.0 <= v.strength <= 1.0:
                raise InputError(f"{v.path}: strength must be in [0, 1], got {v.strength}")
            check_video_input(v.path, num_frames, fps)
        if isinstance(attention_mask, str):
            check_video_input(attention_mask, num_frames, fps, "attention mask video")
        elif attention_mask is not None:
            m = attention_mask
            if m.ndim != 5 or m.shape[1] != 1 or m.shape[0] != 1:
                raise InputError(f"attention_mask must be a (1, 1, F, H, W) pixel mask, got {tuple(m.shape)}")
            if float(m.min()) < 0.0 or float(m.max()) > 1.0:
                raise InputError("attention_mask values must be in [0, 1]")
            latent_frames = VideoGrid.for_pixels(num_frames, height, width, fps).frames
            if latent_frames > 1 and (m.shape[2] - 1) % (latent_frames - 1):
                raise InputError(f"an attention_mask of {m.shape[2]} frames does not map onto the {latent_frames} "
                                 f"latent frames of {num_frames} frames (give it {num_frames} frames)")

    def _references(self, videos: list[VideoInput], height: int, width: int, num_frames: int,
                    attention_strength: float, attention_mask) -> list[ReferenceVideo]:
        """The reference videos encoded at the stage-1 size (``height`` x ``width``) / the downscale factor."""
        c, d = self.components, self.downscale
        if isinstance(attention_mask, str):
            attention_mask = load_mask_video(attention_mask, height, width, num_frames, c.dtype, c.device)
        out = []
        for v in videos:
            pixels = load_conditioning_video(v.path, height // d, width // d, num_frames, c.dtype, c.device)
            latent = c.video_encoder(pixels)
            if attention_mask is not None:
                cross = latent_attention_mask(attention_mask.to(c.device), *latent.shape[2:]) * attention_strength
            else:
                cross = attention_strength if attention_strength < 1.0 else None
            out.append(ReferenceVideo(latent, v.strength, d, cross))
        return out
