"""What every pipeline shares: components, input checks, the generator, timing, the result."""

import time
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from fastltx.pipelines.components import Components
from fastltx.pipelines.request import ImageInput, InputError, check_request
from fastltx.pipelines.result import GenerationResult
from fastltx.pipelines.stages import decode


class Pipeline:
    name = "pipeline"
    two_stage = False  # sizes must then be multiples of 64 (stage 1 runs at half size)

    def __init__(self, components: Components):
        self.components = components
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        if self.components.device.type == "cuda":
            torch.cuda.synchronize(self.components.device)
        start = time.perf_counter()
        yield
        if self.components.device.type == "cuda":
            torch.cuda.synchronize(self.components.device)
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def start(self, seed: int, height: int, width: int, num_frames: int, fps: float,
              images: Sequence[ImageInput], steps: int | None = None) -> torch.Generator:
        """Check the request (before any model loads) and return the call's generator."""
        images = tuple(images)
        if not all(isinstance(i, ImageInput) for i in images):
            raise InputError("images must be ImageInput items (path, frame, strength)")
        check_request(height, width, num_frames, fps, images, 64 if self.two_stage else 32, steps)
        self.timings = {}
        return torch.Generator(device=self.components.device).manual_seed(seed)

    def finish(self, video_latent, audio_latent, generator, fps: float, tiling) -> GenerationResult:
        with self.stage("decode"):
            frames, audio, rate = decode(self.components, video_latent, audio_latent, generator, tiling)
        return GenerationResult(frames.cpu(), audio.cpu(), rate, fps, dict(self.timings))
