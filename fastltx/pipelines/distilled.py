"""Distilled: 8 Euler steps at half size, x2 latent upsampling, 3 refinement steps; no guidance."""

from collections.abc import Sequence
from functools import partial

import torch

from fastltx.conditioning.latents import VideoGrid
from fastltx.pipelines.base import Pipeline
from fastltx.pipelines.request import ImageInput
from fastltx.pipelines.result import GenerationResult
from fastltx.pipelines.stages import denoise, encode_images, encode_prompts, upsample
from fastltx.sampling.denoisers import SimpleDenoiser
from fastltx.sampling.loops import euler_loop
from fastltx.sampling.schedules import DISTILLED_SIGMAS, STAGE2_SIGMAS


class DistilledPipeline(Pipeline):
    name = "distilled"
    two_stage = True

    @torch.inference_mode()
    def __call__(self, prompt: str, seed: int = 10, height: int = 1024, width: int = 1536, num_frames: int = 121,
                 fps: float = 24.0, images: Sequence[ImageInput] = (), tiling="auto",
                 progress: bool = True) -> GenerationResult:
        generator = self.start(seed, height, width, num_frames, fps, images)
        c = self.components
        with self.stage("text"):
            text = encode_prompts(c, [prompt])
        loop = partial(euler_loop, denoise=SimpleDenoiser(c.transformer(), text.video, text.audio), progress=progress)
        half = VideoGrid.for_pixels(num_frames, height // 2, width // 2, fps)
        full = VideoGrid.for_pixels(num_frames, height, width, fps)
        with self.stage("stage 1"):
            cond = encode_images(c, images, height // 2, width // 2)
            video, audio = denoise(c, half, num_frames, torch.tensor(DISTILLED_SIGMAS), partial(loop, desc="stage 1"),
                                   generator, cond)
        with self.stage("upsample"):
            video = upsample(c, video)
        with self.stage("stage 2"):
            cond = encode_images(c, images, height, width)
            sigmas = torch.tensor(STAGE2_SIGMAS)
            video, audio = denoise(c, full, num_frames, sigmas, partial(loop, desc="stage 2"), generator, cond,
                                   noise_scale=sigmas[0], initial_video=video, initial_audio=audio)
        return self.finish(video, audio, generator, fps, tiling)

