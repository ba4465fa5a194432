"""What every pipeline shares: components, input checks, the generator, timing, stage 2, the result."""

import time
from collections.abc import Sequence
from contextlib import contextmanager
from functools import partial

import torch

from fastltx.conditioning.latents import VideoGrid
from fastltx.media.audio import Audio
from fastltx.pipelines.components import Components
from fastltx.pipelines.request import ImageInput, InputError, check_request
from fastltx.pipelines.result import GenerationResult
from fastltx.pipelines.stages import AudioCondition, decode, decode_frames, denoise, encode_images, upsample
from fastltx.sampling.loops import euler_loop
from fastltx.sampling.schedules import STAGE2_SIGMAS


class Pipeline:
    name = "pipeline"
    two_stage = False  # sizes must then be multiples of 64 (stage 1 runs at half size)
    guidance_passes = 1  # transformer passes batched per step (for the memory plan)

    def __init__(self, components: Components):
        self.components = components
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        """Time a stage; running out of device memory in it is an ``OutOfMemory`` naming it."""
        if self.components.device.type == "cuda":
            torch.cuda.synchronize(self.components.device)
        start = time.perf_counter()
        self.components.memory.begin_stage(name)
        try:
            with torch.profiler.record_function(f"stage {name}"):  # (a profile's stage boundaries)
                yield
                if self.components.device.type == "cuda":
                    torch.cuda.synchronize(self.components.device)
        except torch.OutOfMemoryError as e:
            raise self.components.memory.out_of_memory(name, e) from e
        finally:
            self.components.memory.end_stage(name)
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def start(self, seed: int, height: int, width: int, num_frames: int, fps: float,
              images: Sequence[ImageInput], steps: int | None = None) -> torch.Generator:
        """Check the request (before any model loads) and return the call's generator."""
        images = tuple(images)

        def check():
            if not all(isinstance(i, ImageInput) for i in images):
                raise InputError("images must be ImageInput items (path, frame, strength)")
            check_request(height, width, num_frames, fps, images, 64 if self.two_stage else 32, steps)
        world = self.components.world
        if world is None:
            check()
        else:  # every process fails alike on bad input
            world.agree(check)
        self.timings = {}
        self.components.memory.plan_call(height, width, num_frames, fps, self.two_stage, self.guidance_passes,
                                         len(images))
        return torch.Generator(device=self.components.device).manual_seed(seed)

    def refine(self, video_latent: torch.Tensor, audio_latent: torch.Tensor, height: int, width: int,
               num_frames: int, fps: float, denoiser, generator: torch.Generator, images: Sequence[ImageInput],
               progress: bool, audio_conditions: Sequence[AudioCondition] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2 of the two-stage pipelines: x2 latent upsampling, then the 3 distilled Euler steps at
        full size from the upsampled video and ``audio_latent``, re-noised to the first sigma."""
        c = self.components
        grid = VideoGrid.for_pixels(num_frames, height, width, fps)
        with self.stage("upsample"):
            video_latent = upsample(c, video_latent)
        with self.stage("stage 2"):
            sigmas = torch.tensor(STAGE2_SIGMAS)
            loop = partial(euler_loop, denoise=denoiser, progress=progress, desc="stage 2")
            conditions = encode_images(c, images, height, width)
            return denoise(c, grid, num_frames, sigmas, loop, generator, conditions, noise_scale=sigmas[0],
                           initial_video=video_latent, initial_audio=audio_latent, audio_conditions=audio_conditions)

    def finish(self, video_latent, audio_latent, generator, fps: float, tiling, audio: Audio | None = None
               ) -> GenerationResult:
        """Decode; ``audio`` (a waveform and its rate) is returned as given instead of decoding ``audio_latent``."""
        with self.stage("decode"):
            if audio is None:
                frames, waveform, rate = decode(self.components, video_latent, audio_latent, generator, tiling)
            else:
                frames, (waveform, rate) = decode_frames(self.components, video_latent, generator, tiling), audio
        if frames is None:  # not rank 0 of a multi-process world: rank 0 alone returns (and writes) the result
            return None
        return GenerationResult(frames.cpu(), waveform.cpu(), rate, fps, dict(self.timings))
